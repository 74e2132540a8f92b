"""An SO-100/SO-101 arm's calibration as ``lerobot-calibrate`` writes it, and LeRobot's joint ↔ tick formulas.

The file (:mod:`drivers.lerobot_calibration`) is read as it is: per motor ``id``, ``drive_mode``,
``homing_offset``, ``range_min``, ``range_max``. LeRobot writes the homing offset and the range into the servos'
own registers (Homing_Offset, Min/Max_Position_Limit; a Feetech servo reports Present_Position = actual −
Homing_Offset), so the ticks on the bus already carry the offset; :class:`~drivers.feetech.arm.FeetechArm` checks
on connect that the servos hold what the file says.

The conversions are LeRobot's (``MotorsBus._normalize`` / ``_unnormalize``, SO-101 follower with
``use_degrees``), with its 4095 ticks a turn (``max_res``) and its truncation to an int, and angles in radians
here: a body joint is ``DEGREES`` — ``deg = (ticks − mid) · 360 / 4095`` with ``mid = (range_min + range_max) /
2``, back ``ticks = int(deg · 4095 / 360 + mid)`` (LeRobot ignores ``drive_mode`` in this mode); the gripper is
``RANGE_0_100`` — ``v = (clamp(ticks) − range_min) / (range_max − range_min) · 100``, ``100 − v`` when
``drive_mode`` is 1, back ``ticks = int(v / 100 · (range_max − range_min) + range_min)`` after the same
flip. (A goal is kept inside the range, which only the rounding at its very ends could leave.) The
gripper's opening (0 closed … 1 open) is ``v / 100`` when its ``range_max`` end is open, else
``1 − v / 100`` (``gripper_open``). A joint's limits are its range; what the file does not say, its
velocity limit, is given per joint (or one for all).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

from drivers.arm import ArmConfigError, JointLimit
from drivers.feetech.protocol import MAX_ID
from drivers.feetech.tables import MAX_TICK
from drivers.lerobot_calibration import GRIPPER_ENDS, CalibrationFileError, MotorEntry, read_json, read_motors
from drivers.physical_ranges import MAX_JOINT_VELOCITY, SAFETY_LIMIT_MIN

HOMING_OFFSET_MAX = (1 << 11) - 1  # sign-magnitude, sign in bit 11
SO101_MOTORS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")


class FeetechCalibrationError(ArmConfigError):
    """A calibration or a value that cannot be used; the message names the file, the motor and the limits."""


def _check_entry(source: str, m: MotorEntry) -> None:
    where = f"{source}: {m.name} (motor {m.id})"
    if not 0 <= m.id <= MAX_ID:
        raise FeetechCalibrationError(f"{where}: id must be 0 ... {MAX_ID}, got {m.id}")
    if m.drive_mode not in (0, 1):
        raise FeetechCalibrationError(f"{where}: drive_mode must be 0 or 1, got {m.drive_mode}")
    if abs(m.homing_offset) > HOMING_OFFSET_MAX:
        raise FeetechCalibrationError(f"{where}: homing_offset must be within ±{HOMING_OFFSET_MAX} (11 bits and a "
                                      f"sign), got {m.homing_offset}")
    if not 0 <= m.range_min < m.range_max <= MAX_TICK:
        raise FeetechCalibrationError(f"{where}: need 0 <= range_min < range_max <= {MAX_TICK}, got "
                                      f"[{m.range_min}, {m.range_max}]")


@dataclass(frozen=True)
class Joint:
    """A body joint: its motor's LeRobot entry and its velocity limit (rad/s)."""

    motor: MotorEntry
    max_velocity: float

    @property
    def name(self) -> str:
        return self.motor.name

    @property
    def motor_id(self) -> int:
        return self.motor.id

    @property
    def mid(self) -> float:
        return (self.motor.range_min + self.motor.range_max) / 2

    @property
    def lower(self) -> float:
        return self.to_rad(self.motor.range_min)

    @property
    def upper(self) -> float:
        return self.to_rad(self.motor.range_max)

    def limit(self) -> JointLimit:
        return JointLimit(self.lower, self.upper, self.max_velocity)

    def to_rad(self, ticks: int) -> float:
        return math.radians((ticks - self.mid) * 360 / MAX_TICK)

    def to_ticks(self, rad: float) -> int:
        """Goal ticks for ``rad``; raises :class:`FeetechCalibrationError` outside the range or if not finite."""
        if not (math.isfinite(rad) and self.lower <= rad <= self.upper):
            raise FeetechCalibrationError(f"joint {self.name!r} (motor {self.motor_id}): {rad} rad is outside its "
                                          f"range [{self.lower:.6g}, {self.upper:.6g}] rad")
        ticks = int(math.degrees(rad) * MAX_TICK / 360 + self.mid)
        return min(self.motor.range_max, max(self.motor.range_min, ticks))  # a rounding at the very ends


@dataclass(frozen=True)
class Gripper:
    """The gripper: its motor's LeRobot entry and the end of its range that is open."""

    motor: MotorEntry
    open_end: str = "range_max"

    @property
    def motor_id(self) -> int:
        return self.motor.id

    def to_opening(self, ticks: int) -> float:
        low, high = self.motor.range_min, self.motor.range_max
        value = (min(high, max(low, ticks)) - low) / (high - low) * 100
        value = 100 - value if self.motor.drive_mode else value
        return value / 100 if self.open_end == "range_max" else 1 - value / 100

    def to_ticks(self, opening: float) -> int:
        if not (math.isfinite(opening) and 0.0 <= opening <= 1.0):
            raise FeetechCalibrationError(f"gripper (motor {self.motor_id}): opening {opening} is outside [0, 1]")
        value = opening * 100 if self.open_end == "range_max" else (1 - opening) * 100
        value = min(100.0, max(0.0, 100 - value if self.motor.drive_mode else value))
        low, high = self.motor.range_min, self.motor.range_max
        return int(value / 100 * (high - low) + low)


@dataclass(frozen=True)
class FeetechCalibration:
    """An arm's joints (in the file's order) and its gripper."""

    robot_id: str
    joints: tuple[Joint, ...]
    gripper: Gripper

    @property
    def motors(self) -> tuple[MotorEntry, ...]:
        """Every motor's entry: the joints', then the gripper's."""
        return (*(j.motor for j in self.joints), self.gripper.motor)

    @property
    def motor_ids(self) -> list[int]:
        return [m.id for m in self.motors]

    def joint_limits(self) -> tuple[JointLimit, ...]:
        return tuple(j.limit() for j in self.joints)

    @classmethod
    def from_lerobot(cls, data: dict, *, robot_id: str, max_velocity: Union[float, Sequence[float]], gripper_open: str,
                     gripper: str = "gripper", source: str = "calibration") -> FeetechCalibration:
        """From a LeRobot file's contents: every motor but ``gripper`` a joint, in the file's order;
        ``max_velocity`` one rad/s limit for every joint or one per joint."""
        try:
            motors = read_motors(data, source)
        except CalibrationFileError as exc:
            raise FeetechCalibrationError(str(exc)) from None
        for m in motors:
            _check_entry(source, m)
        ids = [m.id for m in motors]
        if len(set(ids)) != len(ids):
            twice = sorted({i for i in ids if ids.count(i) > 1})
            raise FeetechCalibrationError(f"{source}: motor ids used twice: {twice}")
        names = [m.name for m in motors]
        if gripper not in names:
            raise FeetechCalibrationError(f"{source}: no motor named {gripper!r} (the gripper); motors: {names}")
        if gripper_open not in GRIPPER_ENDS:
            raise FeetechCalibrationError(f"{source}: gripper_open must be one of {list(GRIPPER_ENDS)} (which end of "
                                          f"the gripper's range is open), got {gripper_open!r}")
        body = [m for m in motors if m.name != gripper]
        if not body:
            raise FeetechCalibrationError(f"{source}: no joints besides the gripper")
        speeds = _velocities(max_velocity, [m.name for m in body], source)
        return cls(robot_id, tuple(Joint(m, v) for m, v in zip(body, speeds)),
                   Gripper(motors[names.index(gripper)], gripper_open))


def _velocities(value: Union[float, Sequence[float]], names: list[str], source: str) -> list[float]:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * len(names)
    what = f"{SAFETY_LIMIT_MIN:g} ... {MAX_JOINT_VELOCITY:.4g} rad/s (4π)"
    if len(values) != len(names):
        raise FeetechCalibrationError(f"{source}: max_velocity: expected one value, or one per joint ({len(names)}: "
                                      f"{', '.join(names)}), got {len(values)}")
    for name, v in zip(names, values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
                math.isfinite(v) and SAFETY_LIMIT_MIN <= v <= MAX_JOINT_VELOCITY):
            raise FeetechCalibrationError(f"{source}: a LeRobot calibration has no velocity limits; max_velocity of "
                                          f"{name!r} must be {what}, got {v!r}")
    return [float(v) for v in values]


def load_calibration(path: Union[str, Path], *, max_velocity: Union[float, Sequence[float]],
                     gripper_open: str) -> FeetechCalibration:
    """Read a ``lerobot-calibrate`` file; the robot id is the file's stem, as LeRobot names it."""
    try:
        data = read_json(path)
    except CalibrationFileError as exc:
        raise FeetechCalibrationError(str(exc)) from None
    return FeetechCalibration.from_lerobot(data, robot_id=Path(path).stem, max_velocity=max_velocity,
                                           gripper_open=gripper_open, source=str(path))
