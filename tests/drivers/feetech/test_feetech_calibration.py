"""An SO-101 calibration as ``lerobot-calibrate`` writes it, read as it is; joint ↔ tick equal to LeRobot's formulas.

The reference is LeRobot's ``MotorsBus._normalize`` / ``_unnormalize`` (``src/lerobot/motors/motors_bus.py``),
re-stated below from its definition for the two modes the SO-101 follower uses (``DEGREES`` for the body with
``use_degrees``, ``RANGE_0_100`` for the gripper), plus worked values computed by hand from those lines.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.feetech.calibration import FeetechCalibration, FeetechCalibrationError, load_calibration

from tests.support.so101 import CALIBRATION, write_calibration

MAX_RES = 4095  # LeRobot: model_resolution_table["sts3215"] - 1


def lerobot_degrees(ticks: int, lo: int, hi: int) -> float:
    mid = (lo + hi) / 2
    return (ticks - mid) * 360 / MAX_RES


def lerobot_from_degrees(deg: float, lo: int, hi: int) -> int:
    mid = (lo + hi) / 2
    return int((deg * MAX_RES / 360) + mid)


def lerobot_range_0_100(ticks: int, lo: int, hi: int, drive_mode: int) -> float:
    norm = ((min(hi, max(lo, ticks)) - lo) / (hi - lo)) * 100
    return 100 - norm if drive_mode else norm


def lerobot_from_range_0_100(value: float, lo: int, hi: int, drive_mode: int) -> int:
    value = 100 - value if drive_mode else value
    bounded = min(100.0, max(0.0, value))
    return int((bounded / 100) * (hi - lo) + lo)


def so101(**kwargs) -> FeetechCalibration:
    return FeetechCalibration.from_lerobot(CALIBRATION, robot_id="so101", max_velocity=kwargs.pop("max_velocity", 3.0),
                                           gripper_open=kwargs.pop("gripper_open", "range_max"), **kwargs)


def test_the_file_is_read_as_it_is(tmp_path):
    cal = load_calibration(write_calibration(tmp_path), max_velocity=[2.0, 2.5, 3.0, 3.5, 4.0],
                           gripper_open="range_max")
    assert cal.robot_id == "so101_follower" and cal.motor_ids == [1, 2, 3, 4, 5, 6]
    assert [j.name for j in cal.joints] == ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll"]
    assert [j.max_velocity for j in cal.joints] == [2.0, 2.5, 3.0, 3.5, 4.0]
    assert {m.name: vars(m) | {} for m in cal.motors} == {n: {"name": n, **v} for n, v in CALIBRATION.items()}
    pan = cal.joints[0]
    assert (pan.lower, pan.upper) == (math.radians(lerobot_degrees(758, 758, 3292)),
                                      math.radians(lerobot_degrees(3292, 758, 3292)))
    assert cal.joint_limits()[4].max_velocity == 4.0


def test_worked_values():
    """By hand from LeRobot's lines, range 758 ... 3292 (mid 2025): 2025 is 0°; 3292 is 1267·360/4095 =
    111.3846...°; 45° is int(45·4095/360 + 2025) = int(2536.875) = 2536. The gripper 2031 ... 3395: 2713 is
    (2713 − 2031)/1364·100 = 50 (open 0.5); opening 0.25 is int(0.25·1364 + 2031) = 2372."""
    cal = so101()
    pan, grip = cal.joints[0], cal.gripper
    assert pan.to_rad(2025) == 0.0
    assert math.degrees(pan.to_rad(3292)) == pytest.approx(111.38461538, abs=1e-6)
    assert pan.to_ticks(math.radians(45)) == 2536
    assert grip.to_opening(2713) == pytest.approx(0.5) and grip.to_ticks(0.25) == 2372
    assert so101(gripper_open="range_min").gripper.to_opening(2713) == pytest.approx(0.5)
    assert so101(gripper_open="range_min").gripper.to_ticks(0.25) == int(0.75 * 1364 + 2031)


@settings(max_examples=2000, deadline=None)
@given(motor=st.sampled_from(list(CALIBRATION)), ticks=st.integers(0, 4095), fraction=st.floats(0, 1),
       drive_mode=st.sampled_from([0, 1]), gripper_open=st.sampled_from(["range_max", "range_min"]))
def test_every_conversion_equals_lerobots(motor, ticks, fraction, drive_mode, gripper_open):
    data = {n: dict(v, drive_mode=drive_mode) for n, v in CALIBRATION.items()}
    cal = FeetechCalibration.from_lerobot(data, robot_id="x", max_velocity=3.0, gripper_open=gripper_open)
    lo, hi = data[motor]["range_min"], data[motor]["range_max"]
    if motor == "gripper":
        value = lerobot_range_0_100(ticks, lo, hi, drive_mode)
        assert cal.gripper.to_opening(ticks) == pytest.approx(value / 100 if gripper_open == "range_max"
                                                              else 1 - value / 100, abs=1e-12)
        want = 100 * fraction if gripper_open == "range_max" else 100 * (1 - fraction)
        assert cal.gripper.to_ticks(fraction) == lerobot_from_range_0_100(want, lo, hi, drive_mode)
        return
    joint = next(j for j in cal.joints if j.name == motor)
    assert joint.to_rad(ticks) == pytest.approx(math.radians(lerobot_degrees(ticks, lo, hi)), abs=1e-12)
    rad = joint.lower + fraction * (joint.upper - joint.lower)
    # LeRobot's truncation, kept inside the range (only the rounding at its very ends could leave it)
    assert joint.to_ticks(rad) == min(hi, max(lo, lerobot_from_degrees(math.degrees(rad), lo, hi)))


def test_a_joint_goal_round_trips_within_a_tick():
    for joint in so101().joints:
        for ticks in range(joint.motor.range_min, joint.motor.range_max + 1, 7):
            assert abs(joint.to_ticks(joint.to_rad(ticks)) - ticks) <= 1


@pytest.mark.parametrize("change, message", [
    (lambda d: d["elbow_flex"].pop("homing_offset"), r"elbow_flex: a LeRobot calibration entry has exactly the keys"),
    (lambda d: d["elbow_flex"].update(range_min=True), r"elbow_flex.range_min must be an integer \(ticks\)"),
    (lambda d: d["wrist_flex"].update(range_min=3000, range_max=3000), r"wrist_flex: need range_min < range_max"),
    (lambda d: d["wrist_roll"].update(range_max=4096), r"wrist_roll \(motor 5\): need 0 <= range_min < range_max"),
    (lambda d: d["gripper"].update(drive_mode=2), r"gripper \(motor 6\): drive_mode must be 0 or 1, got 2"),
    (lambda d: d["shoulder_pan"].update(homing_offset=2048), r"homing_offset must be within ±2047"),
    (lambda d: d["shoulder_lift"].update(id=1), r"motor ids used twice: \[1\]"),
    (lambda d: d["shoulder_lift"].update(id=253), r"id must be 0 ... 252"),
    (lambda d: d.update(claw=d.pop("gripper")), r"no motor named 'gripper'"),
])
def test_a_bad_file_is_refused_by_name(tmp_path, change, message):
    data = json.loads(json.dumps(CALIBRATION))
    change(data)
    with pytest.raises(FeetechCalibrationError, match=message):
        load_calibration(write_calibration(tmp_path, data), max_velocity=3.0, gripper_open="range_max")


@pytest.mark.parametrize("kwargs, message", [
    ({"max_velocity": [3.0, 3.0]}, r"expected one value, or one per joint \(5: shoulder_pan"),
    ({"max_velocity": float("nan")}, r"max_velocity of 'shoulder_pan' must be 0.001 ... 12.57 rad/s"),
    ({"max_velocity": [3.0, 3.0, 3.0, 3.0, 100.0]}, r"max_velocity of 'wrist_roll' must be"),
    ({"gripper_open": "open"}, r"gripper_open must be one of \['range_max', 'range_min'\]"),
])
def test_what_the_file_does_not_say_is_checked_by_name(tmp_path, kwargs, message):
    args = {"max_velocity": 3.0, "gripper_open": "range_max", **kwargs}
    with pytest.raises(FeetechCalibrationError, match=message):
        load_calibration(write_calibration(tmp_path), **args)


def test_unreadable_files_and_goals_out_of_range_are_named(tmp_path):
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(FeetechCalibrationError, match="bad.json: expected a JSON object, got list"):
        load_calibration(tmp_path / "bad.json", max_velocity=3.0, gripper_open="range_max")
    with pytest.raises(FeetechCalibrationError, match="cannot read calibration"):
        load_calibration(tmp_path / "none.json", max_velocity=3.0, gripper_open="range_max")
    joint = so101().joints[1]
    for bad in (joint.upper + 1e-6, float("nan"), float("inf")):
        with pytest.raises(FeetechCalibrationError, match="'shoulder_lift' \\(motor 2\\).*outside its range"):
            joint.to_ticks(bad)
    with pytest.raises(FeetechCalibrationError, match="opening 1.5 is outside"):
        so101().gripper.to_ticks(1.5)
