"""LeRobot's Dynamixel calibration files, read as LeRobot writes them, map to the ticks LeRobot's own
"degrees" convention gives (restated here from its code: the joint's zero at the middle of its range,
``(ticks - mid) * 360 / 4095`` degrees; offsets and drive mode live in the servos' registers)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from drivers.arm import Target
from drivers.dynamixel import emulator
from drivers.dynamixel.arm import DynamixelArm
from drivers.dynamixel.joint_offsets import ArmCalibrationError, load_calibration

# A Koch follower as LeRobot's calibration leaves it: shoulder_pan and wrist_roll forced to the full turn,
# the other ranges as recorded; homing offsets already written into the servos.
KOCH = {
    "shoulder_pan": {"id": 1, "drive_mode": 0, "homing_offset": -1022, "range_min": 0, "range_max": 4095},
    "shoulder_lift": {"id": 2, "drive_mode": 0, "homing_offset": 511, "range_min": 1021, "range_max": 3104},
    "elbow_flex": {"id": 3, "drive_mode": 0, "homing_offset": -2047, "range_min": 964, "range_max": 3072},
    "wrist_flex": {"id": 4, "drive_mode": 0, "homing_offset": 12, "range_min": 1199, "range_max": 2846},
    "wrist_roll": {"id": 5, "drive_mode": 0, "homing_offset": 300, "range_min": 0, "range_max": 4095},
    "gripper": {"id": 6, "drive_mode": 0, "homing_offset": -900, "range_min": 2017, "range_max": 3020},
}


def lerobot_degrees(ticks: float, low: int, high: int) -> float:
    """LeRobot's MotorNormMode.DEGREES for a Dynamixel (no drive-mode flip in software)."""
    return (ticks - (low + high) / 2) * 360 / 4095


def lerobot_goal_ticks(degrees: float, low: int, high: int) -> int:
    """LeRobot's inverse of it (``int`` truncates)."""
    return int(degrees * 4095 / 360 + (low + high) / 2)


@pytest.fixture
def koch_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_follower.json"
    path.write_text(json.dumps(KOCH, indent=4))  # as LeRobot (draccus) writes it: 4 spaces, no final newline
    return path


def test_joints_map_to_lerobots_degrees_and_limits_to_the_recorded_range(koch_file: Path) -> None:
    cal = load_calibration(koch_file, max_velocity=3.0, gripper_open="range_max")
    assert cal.robot_id == "my_follower" and cal.motor_ids == [1, 2, 3, 4, 5, 6]
    assert [j.name for j in cal.joints] == list(KOCH)[:5]  # the file's order is the joint order
    for joint in cal.joints:
        low, high = KOCH[joint.name]["range_min"], KOCH[joint.name]["range_max"]
        assert (joint.to_ticks(joint.lower), joint.to_ticks(joint.upper)) == (low, high)
        assert joint.direction == 1 and joint.max_velocity == 3.0
        for ticks in np.linspace(low, high, 9):
            ours = math.degrees(joint.to_rad(int(ticks)))
            theirs = lerobot_degrees(int(ticks), low, high)
            assert abs(ours - theirs) <= 0.0003 * abs(theirs) + 0.5 * 360 / 4096, (joint.name, ticks)
    assert (cal.gripper.closed, cal.gripper.open) == (2017, 3020)
    assert load_calibration(koch_file, max_velocity=3.0, gripper_open="range_min").gripper.open == 2017


def test_what_the_file_does_not_say_must_be_given_and_old_or_odd_files_are_named(koch_file: Path,
                                                                                   tmp_path: Path) -> None:
    with pytest.raises(ArmCalibrationError, match="needs max_velocity and gripper_open as well"):
        load_calibration(koch_file)
    with pytest.raises(ArmCalibrationError, match="gripper_open must be one of"):
        load_calibration(koch_file, max_velocity=3.0, gripper_open="open")
    for absurd in (math.inf, math.nan, 1e200, 0.0, -1.0):
        with pytest.raises(ArmCalibrationError, match="max_velocity must be"):
            load_calibration(koch_file, max_velocity=absurd, gripper_open="range_max")
    cases = {
        "old": ({"homing_offset": [0] * 6, "drive_mode": [0] * 6, "start_pos": [0] * 6, "end_pos": [0] * 6,
                 "calib_mode": ["DEGREE"] * 5 + ["LINEAR"], "motor_names": list(KOCH)}, "pre-2025 calibration format"),
        "float": ({**KOCH, "wrist_flex": {**KOCH["wrist_flex"], "range_max": 2846.5}},
                  r"wrist_flex.range_max must be an integer \(ticks\), got 2846.5"),
        "empty range": ({**KOCH, "elbow_flex": {**KOCH["elbow_flex"], "range_max": 964}},
                        r"elbow_flex: need range_min < range_max, got \[964, 964\]"),
        "extra key": ({**KOCH, "gripper": {**KOCH["gripper"], "calib_mode": "LINEAR"}},
                      r"gripper: a LeRobot calibration entry has exactly the keys .* unknown \['calib_mode'\]"),
        "no gripper": ({k: v for k, v in KOCH.items() if k != "gripper"}, "no motor named 'gripper'"),
        "id twice": ({**KOCH, "wrist_roll": {**KOCH["wrist_roll"], "id": 4}}, r"motor ids used twice: \[4\]"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        with pytest.raises(ArmCalibrationError, match=message):
            load_calibration(path, max_velocity=3.0, gripper_open="range_max")


@pytest.mark.subprocess
def test_goal_ticks_on_the_wire_are_lerobots(koch_file: Path) -> None:
    """The arm, calibrated from LeRobot's file, puts on the bus the goal LeRobot would for the same angle."""
    cal = load_calibration(koch_file, max_velocity=3.0, gripper_open="range_max")
    proc = emulator.start(emulator.ChainConfig(ids=(1, 2, 3, 4, 5, 6), return_delay=0), seed=3)
    try:
        arm = DynamixelArm(proc.port, cal, timeout_s=0.2, watchdog_ms=1000)
        arm.connect()
        q = np.array([0.4, -0.3, 0.9, 0.1, -2.0])
        arm.send_target(Target.joint(q, [0.75]))
        goals = {int(k): v["Goal_Position"] for k, v in proc.call("snapshot").items()}
        for i, name in enumerate(list(KOCH)[:5]):
            low, high = KOCH[name]["range_min"], KOCH[name]["range_max"]
            assert abs(goals[i + 1] - lerobot_goal_ticks(math.degrees(q[i]), low, high)) <= 1, name
        assert goals[6] == round(2017 + 0.75 * (3020 - 2017))
        arm.close()
    finally:
        proc.stop()
