"""Per-joint calibration of a Dynamixel arm, stored as one JSON file per robot.

A joint angle ``q`` (rad) maps to ``ticks = 2048 + offset + direction * q * 4096 / (2 pi)``, so with
offset 0 the joint's zero is the servo's centre tick. The gripper maps its normalised opening
(0 closed ... 1 open) linearly onto ``closed`` ... ``open`` ticks. File format::

    {"robot_id": "koch-follower-1",
     "joints": [{"name": "shoulder_pan", "motor_id": 1, "offset": 0, "direction": 1,
                 "lower": -1.5, "upper": 1.5, "max_velocity": 3.0}, ...],
     "gripper": {"motor_id": 6, "closed": 2048, "open": 2900}}
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from drivers.arm import ArmConfigError
from drivers.dynamixel.protocol import MAX_ID
from drivers.dynamixel.tables import CENTER_TICK, TICKS_PER_REV

TICKS_PER_RAD = TICKS_PER_REV / (2 * math.pi)
_TICK_RANGE = (0, TICKS_PER_REV - 1)  # Position Control Mode (3) range of Goal_Position


class ArmCalibrationError(ArmConfigError):
    """A calibration file or value that cannot be used; the message names the joint and the limits."""


def _check_id(where: str, motor_id: int) -> None:
    if not 0 <= motor_id <= MAX_ID:
        raise ArmCalibrationError(f"{where}: motor_id must be 0..{MAX_ID}, got {motor_id}")


@dataclass(frozen=True)
class JointCalibration:
    """One joint: servo id, zero offset (ticks), direction (+1/-1) and limits (rad, rad/s)."""

    name: str
    motor_id: int
    lower: float
    upper: float
    max_velocity: float
    offset: int = 0
    direction: int = 1

    def __post_init__(self) -> None:
        where = f"joint {self.name!r} (motor {self.motor_id})"
        _check_id(where, self.motor_id)
        if self.direction not in (1, -1):
            raise ArmCalibrationError(f"{where}: direction must be 1 or -1, got {self.direction}")
        if not (math.isfinite(self.lower) and math.isfinite(self.upper) and self.lower < self.upper):
            raise ArmCalibrationError(f"{where}: need finite lower < upper, got [{self.lower}, {self.upper}] rad")
        if not (math.isfinite(self.max_velocity) and self.max_velocity > 0):
            raise ArmCalibrationError(f"{where}: max_velocity must be finite and > 0, got {self.max_velocity}")
        ends = sorted(self._raw_ticks(v) for v in (self.lower, self.upper))
        if ends[0] < _TICK_RANGE[0] or ends[1] > _TICK_RANGE[1]:
            raise ArmCalibrationError(
                f"{where}: limits [{self.lower}, {self.upper}] rad map to ticks {ends}, outside the servo range "
                f"{list(_TICK_RANGE)} (check offset {self.offset})"
            )

    def _raw_ticks(self, rad: float) -> int:
        return round(CENTER_TICK + self.offset + self.direction * rad * TICKS_PER_RAD)

    def to_ticks(self, rad: float) -> int:
        """Goal ticks for ``rad``; raises :class:`ArmCalibrationError` outside ``[lower, upper]`` or if not finite."""
        if not (math.isfinite(rad) and self.lower <= rad <= self.upper):
            raise ArmCalibrationError(
                f"joint {self.name!r} (motor {self.motor_id}): {rad} rad is outside its limits "
                f"[{self.lower}, {self.upper}] rad"
            )
        return self._raw_ticks(rad)

    def to_rad(self, ticks: int) -> float:
        return self.direction * (ticks - CENTER_TICK - self.offset) / TICKS_PER_RAD


@dataclass(frozen=True)
class GripperCalibration:
    """The gripper servo: ticks at opening 0.0 (``closed``) and 1.0 (``open``)."""

    motor_id: int
    closed: int
    open: int

    def __post_init__(self) -> None:
        _check_id("gripper", self.motor_id)
        for name, ticks in (("closed", self.closed), ("open", self.open)):
            if not _TICK_RANGE[0] <= ticks <= _TICK_RANGE[1]:
                raise ArmCalibrationError(
                    f"gripper (motor {self.motor_id}): {name} = {ticks} is outside {list(_TICK_RANGE)}"
                )
        if self.closed == self.open:
            raise ArmCalibrationError(f"gripper (motor {self.motor_id}): closed and open are both {self.open} ticks")

    def to_ticks(self, opening: float) -> int:
        if not (math.isfinite(opening) and 0.0 <= opening <= 1.0):
            raise ArmCalibrationError(f"gripper (motor {self.motor_id}): opening {opening} is outside [0, 1]")
        return round(self.closed + opening * (self.open - self.closed))

    def to_opening(self, ticks: int) -> float:
        return (ticks - self.closed) / (self.open - self.closed)


@dataclass(frozen=True)
class ArmCalibration:
    """All joints of one arm (in the order the control loop uses) plus its gripper."""

    robot_id: str
    joints: tuple[JointCalibration, ...]
    gripper: GripperCalibration

    def __post_init__(self) -> None:
        if not self.joints:
            raise ArmCalibrationError(f"calibration {self.robot_id!r}: no joints")
        ids = [j.motor_id for j in self.joints] + [self.gripper.motor_id]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ArmCalibrationError(f"calibration {self.robot_id!r}: motor ids used twice: {dupes}")
        names = [j.name for j in self.joints]
        if len(set(names)) != len(names):
            raise ArmCalibrationError(f"calibration {self.robot_id!r}: joint names must be unique, got {names}")

    @property
    def motor_ids(self) -> list[int]:
        """Joint motor ids in joint order, then the gripper's."""
        return [j.motor_id for j in self.joints] + [self.gripper.motor_id]

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "calibration") -> ArmCalibration:
        keys = {"robot_id", "joints", "gripper"}
        if set(data) != keys:
            raise ArmCalibrationError(
                f"{source}: expected keys {sorted(keys)}, missing {sorted(keys - set(data))}, "
                f"unknown {sorted(set(data) - keys)}"
            )
        if not isinstance(data["joints"], list):
            raise ArmCalibrationError(f"{source}: joints must be a list, got {type(data['joints']).__name__}")
        joints = tuple(
            _build(JointCalibration, entry, f"{source}: joints[{i}]") for i, entry in enumerate(data["joints"])
        )
        return cls(str(data["robot_id"]), joints, _build(GripperCalibration, data["gripper"], f"{source}: gripper"))

    @classmethod
    def load(cls, path: Union[str, Path]) -> ArmCalibration:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError, RecursionError) as exc:
            raise ArmCalibrationError(f"cannot read calibration {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ArmCalibrationError(f"{path}: expected a JSON object, got {type(data).__name__}")
        return cls.from_dict(data, source=str(path))

    def save(self, path: Union[str, Path]) -> None:
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")


_JSON_TYPES = {"str": (str,), "int": (int,), "float": (int, float)}  # dataclass annotations as strings


def _build(kind: type, entry: Any, where: str) -> Any:
    if not isinstance(entry, dict):
        raise ArmCalibrationError(f"{where}: expected an object, got {type(entry).__name__}")
    types = {f.name: str(f.type) for f in dataclasses.fields(kind)}
    unknown = set(entry) - set(types)
    if unknown:
        raise ArmCalibrationError(f"{where}: unknown keys {sorted(unknown)} (expected {sorted(types)})")
    for key, value in entry.items():
        if isinstance(value, bool) or not isinstance(value, _JSON_TYPES[types[key]]):
            raise ArmCalibrationError(f"{where}: {key} must be a JSON {types[key]}, got {value!r}")
    try:
        return kind(**entry)
    except TypeError as exc:  # a missing key
        raise ArmCalibrationError(f"{where}: {exc}") from None
