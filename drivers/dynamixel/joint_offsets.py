"""Per-joint calibration of a Dynamixel arm, stored as one JSON file per robot.

A joint angle ``q`` (rad) maps to ``ticks = 2048 + offset + direction * q * 4096 / (2 pi)``, so with
offset 0 the joint's zero is the servo's centre tick. The gripper maps its normalised opening
(0 closed ... 1 open) linearly onto ``closed`` ... ``open`` ticks. File format::

    {"robot_id": "koch-follower-1",
     "joints": [{"name": "shoulder_pan", "motor_id": 1, "offset": 0, "direction": 1,
                 "lower": -1.5, "upper": 1.5, "max_velocity": 3.0}, ...],
     "gripper": {"motor_id": 6, "closed": 2048, "open": 2900}}

**LeRobot's calibration files** (``<robot id>.json`` under LeRobot's ``calibration/robots/<robot>/``, written
by LeRobot since mid-2025: one object per motor name with ``id``, ``drive_mode``, ``homing_offset``,
``range_min``, ``range_max``, all integer ticks) are read by :func:`load_calibration` as well. LeRobot writes
``homing_offset`` and the range into the servos' own registers (Homing_Offset, Min/Max_Position_Limit), so the
positions the servos report already carry the offset, and a reversed joint is reversed by the servo's
Drive_Mode register, never in software. Such a file therefore maps to: direction +1; the joint's zero at the
middle of its range (LeRobot's "degrees" mode: ``(ticks - (range_min + range_max) / 2) * 360 / 4095``; here
4096 ticks per turn and the middle rounded to a tick, which differ by under 0.03 % and half a tick); limits
exactly at ``range_min`` and ``range_max``. What the file does not say has to be given: the joints' velocity
limit and which end of the gripper's range is open. The older LeRobot format (parallel lists with
``calib_mode`` / ``start_pos``) is refused by name: its offsets follow another convention.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from drivers.arm import ArmConfigError
from drivers.dynamixel.protocol import MAX_ID
from drivers.dynamixel.tables import CENTER_TICK, TICKS_PER_REV
from drivers.lerobot_calibration import GRIPPER_ENDS, CalibrationFileError, is_lerobot, read_json, read_motors
from drivers.physical_ranges import MAX_JOINT_VELOCITY, SAFETY_LIMIT_MIN

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
        if not (math.isfinite(self.max_velocity) and SAFETY_LIMIT_MIN <= self.max_velocity <= MAX_JOINT_VELOCITY):
            raise ArmCalibrationError(f"{where}: max_velocity must be {SAFETY_LIMIT_MIN:g} ... "
                                      f"{MAX_JOINT_VELOCITY:.4g} rad/s (4π), got {self.max_velocity}")
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
        return cls.from_dict(_read(path), source=str(path))

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


def from_lerobot(data: dict[str, Any], *, robot_id: str, max_velocity: float, gripper_open: str,
                 gripper: str = "gripper", source: str = "calibration") -> ArmCalibration:
    """An :class:`ArmCalibration` from a LeRobot calibration file's contents (module docstring): the joints in
    the file's order, the motor named ``gripper`` as the gripper, open at its ``gripper_open`` end."""
    if gripper_open not in GRIPPER_ENDS:
        raise ArmCalibrationError(f"{source}: gripper_open must be one of {list(GRIPPER_ENDS)} (which end of the "
                                  f"gripper's range is open), got {gripper_open!r}")
    if not (isinstance(max_velocity, (int, float)) and not isinstance(max_velocity, bool)
            and math.isfinite(max_velocity) and SAFETY_LIMIT_MIN <= max_velocity <= MAX_JOINT_VELOCITY):
        raise ArmCalibrationError(f"{source}: a LeRobot calibration has no velocity limits; max_velocity must be "
                                  f"{SAFETY_LIMIT_MIN:g} ... {MAX_JOINT_VELOCITY:.4g} rad/s (4π), "
                                  f"got {max_velocity!r}")
    if gripper not in data:
        raise ArmCalibrationError(f"{source}: no motor named {gripper!r} (the gripper); motors: {sorted(data)}")
    try:
        values = {m.name: m for m in read_motors(data, source)}
    except CalibrationFileError as exc:
        raise ArmCalibrationError(str(exc)) from None
    joints = []
    for name, entry in values.items():
        if name == gripper:
            continue
        low, high = entry.range_min, entry.range_max
        offset = round((low + high) / 2) - CENTER_TICK
        joints.append(JointCalibration(name, entry.id, lower=(low - CENTER_TICK - offset) / TICKS_PER_RAD,
                                       upper=(high - CENTER_TICK - offset) / TICKS_PER_RAD,
                                       max_velocity=float(max_velocity), offset=offset, direction=1))
    g = values[gripper]
    closed, opened = (g.range_min, g.range_max) if gripper_open == "range_max" else (g.range_max, g.range_min)
    return ArmCalibration(robot_id, tuple(joints), GripperCalibration(g.id, closed=closed, open=opened))


def load_calibration(path: Union[str, Path], *, max_velocity: Optional[float] = None,
                     gripper_open: Optional[str] = None) -> ArmCalibration:
    """Read a calibration file in this project's format or LeRobot's (told apart by their keys).

    ``max_velocity`` (rad/s, every joint) and ``gripper_open`` (``"range_max"`` or ``"range_min"``) are what a
    LeRobot file does not say; they are required for one and refused for ours (which carries both)."""
    data = _read(path)
    if {"calib_mode", "start_pos", "motor_names"} & set(data):
        raise ArmCalibrationError(f"{path}: LeRobot's pre-2025 calibration format (calib_mode / start_pos lists) is "
                                  "not supported: recalibrate with a current LeRobot, or write this project's format")
    if is_lerobot(data):
        missing = [name for name, value in (("max_velocity", max_velocity), ("gripper_open", gripper_open))
                   if value is None]
        if missing:
            raise ArmCalibrationError(f"{path}: a LeRobot calibration needs {' and '.join(missing)} as well (the file "
                                      "has no velocity limits and does not say which end of the gripper is open)")
        return from_lerobot(data, robot_id=Path(path).stem, max_velocity=max_velocity,  # type: ignore[arg-type]
                            gripper_open=gripper_open, source=str(path))  # type: ignore[arg-type]
    given = [name for name, value in (("max_velocity", max_velocity), ("gripper_open", gripper_open))
             if value is not None]
    if given:
        raise ArmCalibrationError(f"{path}: {' and '.join(given)} apply to LeRobot calibration files only; this "
                                  "file carries its own limits and gripper ends")
    return ArmCalibration.from_dict(data, source=str(path))


def _read(path: Union[str, Path]) -> dict[str, Any]:
    """A calibration file's JSON object."""
    try:
        return read_json(path)
    except CalibrationFileError as exc:
        raise ArmCalibrationError(str(exc)) from None
