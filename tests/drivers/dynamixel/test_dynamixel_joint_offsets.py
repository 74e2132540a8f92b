"""Joint calibration: radians <-> ticks, limits, and the JSON file format."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.arm import ArmConfigError
from drivers.dynamixel.joint_offsets import ArmCalibration, ArmCalibrationError, GripperCalibration, JointCalibration

ELBOW = JointCalibration("elbow", 3, lower=-1.5, upper=1.5, max_velocity=3.0, offset=100, direction=-1)
GRIPPER = GripperCalibration(7, closed=2000, open=3000)
DATA: dict[str, Any] = {
    "robot_id": "koch-follower-1",
    "joints": [
        {"name": "shoulder", "motor_id": 1, "lower": -2.0, "upper": 2.0, "max_velocity": 3.0},
        {"name": "elbow", "motor_id": 3, "lower": -1.5, "upper": 1.5, "max_velocity": 3.0,
         "offset": 100, "direction": -1},
    ],
    "gripper": {"motor_id": 7, "closed": 2000, "open": 3000},
}


def test_ticks_follow_the_formula() -> None:
    assert ELBOW.to_ticks(0.0) == 2148  # centre 2048 + offset 100
    assert ELBOW.to_ticks(math.pi / 4) == 2148 - 512  # direction -1, 4096 ticks per turn
    assert ELBOW.to_rad(2148 - 512) == pytest.approx(math.pi / 4)
    assert GRIPPER.to_ticks(0.25) == 2250 and GRIPPER.to_opening(3000) == 1.0


@given(st.floats(-1.5, 1.5))
@settings(derandomize=True, max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_roundtrip_within_one_tick(rad: float) -> None:
    assert abs(ELBOW.to_rad(ELBOW.to_ticks(rad)) - rad) <= math.pi / 4096


@pytest.mark.parametrize("rad", [1.6, -1.51, math.nan, math.inf])
def test_out_of_limits_names_joint_and_limits(rad: float) -> None:
    expected = rf"joint 'elbow' \(motor 3\): {rad} rad is outside its limits \[-1.5, 1.5\] rad"
    with pytest.raises(ArmCalibrationError, match=expected):
        ELBOW.to_ticks(rad)


def test_gripper_opening_outside_unit_interval() -> None:
    with pytest.raises(ArmCalibrationError, match=r"gripper \(motor 7\): opening 1.5 is outside \[0, 1\]"):
        GRIPPER.to_ticks(1.5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"direction": 2}, "direction must be 1 or -1, got 2"),
        ({"lower": 1.0, "upper": -1.0}, "need finite lower < upper"),
        ({"max_velocity": 0.0}, "max_velocity must be 0.001 ... 12.57 rad/s"),
        ({"max_velocity": 1e200}, "max_velocity must be 0.001 ... 12.57 rad/s"),
        ({"motor_id": 253}, "motor_id must be 0..252, got 253"),
        ({"offset": 1500}, r"map to ticks \[.*\], outside the servo range \[0, 4095\] \(check offset 1500\)"),
    ],
)
def test_joint_validation(kwargs: dict[str, Any], match: str) -> None:
    fields = {"name": "wrist", "motor_id": 5, "lower": -1.0, "upper": 1.0, "max_velocity": 2.0, **kwargs}
    with pytest.raises(ArmCalibrationError, match=match):
        JointCalibration(**fields)


def test_json_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "koch.json"
    path.write_text(json.dumps(DATA))
    cal = ArmCalibration.load(path)
    assert cal.joints[1] == ELBOW and cal.gripper == GRIPPER and cal.motor_ids == [1, 3, 7]
    cal.save(tmp_path / "copy.json")
    assert ArmCalibration.load(tmp_path / "copy.json") == cal


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.pop("gripper"), r"missing \['gripper'\]"),
        (lambda d: d.update(extra=1), r"unknown \['extra'\]"),
        (lambda d: d["joints"][0].pop("motor_id"), r"joints\[0\]: .*missing 1 required .*'motor_id'"),
        (lambda d: d["joints"][1].update(speed=1), r"joints\[1\]: unknown keys \['speed'\]"),
        (lambda d: d["gripper"].update(motor_id=3), r"motor ids used twice: \[3\]"),
        (lambda d: d.update(joints={}), "joints must be a list, got dict"),
        (lambda d: d["joints"][0].update(lower="-1"), r"joints\[0\]: lower must be a JSON float, got .-1."),
    ],
)
def test_bad_files_name_the_key(tmp_path: Path, mutate: Any, match: str) -> None:
    data = json.loads(json.dumps(DATA))
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ArmCalibrationError, match=match) as info:
        ArmCalibration.load(path)
    assert str(path) in str(info.value) or "used twice" in str(info.value)
    assert isinstance(info.value, ArmConfigError)


def test_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ArmCalibrationError, match="cannot read calibration"):
        ArmCalibration.load(tmp_path / "x.json")
    with pytest.raises(ArmCalibrationError, match="cannot read calibration"):
        ArmCalibration.load(tmp_path / "missing.json")


scalars = st.none() | st.booleans() | st.integers(-10, 5000) | st.floats() | st.text(max_size=3)
joint_entries = st.dictionaries(
    st.sampled_from(["name", "motor_id", "lower", "upper", "max_velocity", "offset", "direction", "bogus"]), scalars
)
gripper_entries = st.dictionaries(st.sampled_from(["motor_id", "closed", "open", "bogus"]), scalars)
files = st.fixed_dictionaries(
    {},
    optional={
        "robot_id": scalars,
        "joints": st.lists(joint_entries, max_size=3) | scalars,
        "gripper": gripper_entries | scalars,
        "bogus": scalars,
    },
)


@given(files)
@settings(derandomize=True, max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_parser_only_raises_calibration_errors(data: dict[str, Any]) -> None:
    try:
        ArmCalibration.from_dict(data)
    except ArmCalibrationError:
        pass
