"""LeRobot's calibration files, read as they are, for the servo-bus arms (Dynamixel and Feetech).

``lerobot-calibrate`` writes one JSON file per robot (``calibration/robots/<robot>/<id>.json``, LeRobot since
mid-2025): an object per motor name, in the robot's motor order, each with the integer keys ``id``,
``drive_mode``, ``homing_offset``, ``range_min`` and ``range_max`` (encoder ticks). :func:`read_motors` checks
such a file's contents and returns the entries; what they mean for joint angles is the family's business
(:mod:`drivers.dynamixel.joint_offsets`, :mod:`drivers.feetech.calibration`). :func:`read_json` reads any
calibration file's JSON object, naming the file in every refusal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from drivers.arm import ArmConfigError

LEROBOT_KEYS = ("id", "drive_mode", "homing_offset", "range_min", "range_max")
#: The values of ``gripper_open``: the end of the gripper's range that is open.
GRIPPER_ENDS = ("range_max", "range_min")


class CalibrationFileError(ArmConfigError):
    """A calibration file that cannot be used; the message names the file, the motor and the key."""


@dataclass(frozen=True)
class MotorEntry:
    """One motor of a LeRobot calibration file (ticks)."""

    name: str
    id: int
    drive_mode: int
    homing_offset: int
    range_min: int
    range_max: int


def is_lerobot(data: Any) -> bool:
    """Whether ``data`` looks like a LeRobot calibration file: motor name → an object with a ``range_min``
    (:func:`read_motors` then checks every entry's keys)."""
    return isinstance(data, dict) and bool(data) and all(isinstance(v, dict) and "range_min" in v
                                                          for v in data.values())


def read_motors(data: dict[str, Any], source: str) -> tuple[MotorEntry, ...]:
    """The motors of a LeRobot calibration file's contents, in the file's order; raises
    :class:`CalibrationFileError` naming ``source``, the motor and the key of the first problem."""
    if not is_lerobot(data):
        raise CalibrationFileError(f"{source}: not a LeRobot calibration file (an object per motor name, each with "
                                   f"the keys {list(LEROBOT_KEYS)})")
    motors = []
    for name, entry in data.items():
        if set(entry) != set(LEROBOT_KEYS):
            raise CalibrationFileError(f"{source}: {name}: a LeRobot calibration entry has exactly the keys "
                                       f"{list(LEROBOT_KEYS)}; missing {sorted(set(LEROBOT_KEYS) - set(entry))}, "
                                       f"unknown {sorted(set(entry) - set(LEROBOT_KEYS))}")
        for key in LEROBOT_KEYS:
            if isinstance(entry[key], bool) or not isinstance(entry[key], int):
                raise CalibrationFileError(f"{source}: {name}.{key} must be an integer (ticks), got {entry[key]!r}")
        if not entry["range_min"] < entry["range_max"]:
            raise CalibrationFileError(f"{source}: {name}: need range_min < range_max, got "
                                       f"[{entry['range_min']}, {entry['range_max']}]")
        motors.append(MotorEntry(name, **entry))
    return tuple(motors)


def read_json(path: Union[str, Path]) -> dict[str, Any]:
    """A calibration file's JSON object; raises :class:`CalibrationFileError` naming the file."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise CalibrationFileError(f"cannot read calibration {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CalibrationFileError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
