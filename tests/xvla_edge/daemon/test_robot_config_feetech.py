"""``[arm] driver = "feetech"`` in robot.toml: a good SO-101 section builds the arm, and every key of it that is wrong
is named by ``config check`` with its value and what is allowed."""

from __future__ import annotations

import json

import pytest

from drivers.feetech.arm import FeetechArm
from xvla_edge.daemon.config import load_config

from tests.support.robot_configs import MINIMAL, check, problems
from tests.support.so101 import CALIBRATION, write_calibration

GOOD = """\
driver = "feetech"
port = "/dev/so101"
space = "joint"
calibration = "so101_follower.json"
max_joint_velocity = [2.0, 2.0, 2.5, 3.0, 3.0]
gripper_open = "range_max"
"""


def robot(tmp_path, arm: str) -> object:
    path = tmp_path / "robot.toml"
    path.write_text(MINIMAL.replace('driver = "sim"\n', arm))
    return path


def test_an_so101_section_builds_the_arm_with_its_calibration(tmp_path, capsys):
    write_calibration(tmp_path)
    cfg = load_config(robot(tmp_path, GOOD))
    arm = cfg.arm_factory()()
    assert isinstance(arm, FeetechArm) and arm.bus.port == "/dev/so101" and arm.bus.baudrate == 1_000_000
    assert [j.max_velocity for j in arm.calibration.joints] == [2.0, 2.0, 2.5, 3.0, 3.0]
    assert check(robot(tmp_path, GOOD)) == 0
    assert "feetech on /dev/so101 (joint space), calibration" in capsys.readouterr().out


@pytest.mark.parametrize("change, message", [
    (lambda g: g.replace('port = "/dev/so101"\n', ""), '[arm].port: missing: expected a serial device'),
    (lambda g: g + "baud = 921600\n", '[arm].baud = 921600: expected one of 19200, 38400, 57600, 115200, 128000, '
                                      "250000, 500000, 1000000 (the STS series' Baud_Rate settings)"),
    (lambda g: g.replace('space = "joint"', 'space = "ee"'), '[arm].space = "ee": expected one of "joint"'),
    (lambda g: g.replace('calibration = "so101_follower.json"', 'calibration = "none.json"'),
     '[arm].calibration = "none.json": expected an existing file'),
    (lambda g: g.replace('calibration = "so101_follower.json"\n', ""), "[arm].calibration: missing: expected a path"),
    (lambda g: g.replace("[2.0, 2.0, 2.5, 3.0, 3.0]", "100.0"), "[arm].max_joint_velocity = 100.0: expected rad/s "
                                                                 "0.001 ... 4π: one number for every joint"),
    (lambda g: g.replace("[2.0, 2.0, 2.5, 3.0, 3.0]", '["fast"]'), '[arm].max_joint_velocity = ["fast"]: expected'),
    (lambda g: g.replace("[2.0, 2.0, 2.5, 3.0, 3.0]", "[2.0, 2.0]"), "[arm].max_joint_velocity = [2.0, 2.0]: not "
                                                                      "usable with this calibration"),
    (lambda g: g.replace("max_joint_velocity = [2.0, 2.0, 2.5, 3.0, 3.0]\n", ""), "[arm].max_joint_velocity: missing"),
    (lambda g: g.replace('"range_max"', '"open"'), '[arm].gripper_open = "open": expected \'range_max\' or '
                                                   "'range_min': the end of the gripper's range that is open"),
    (lambda g: g.replace('gripper_open = "range_max"\n', ""), "[arm].gripper_open: missing"),
    (lambda g: g + "timeout_ms = 100\n", '[arm].timeout_ms: not used here: only for driver "xvla-serial" or '
                                         '"dynamixel"'),
])
def test_each_wrong_key_is_named(tmp_path, change, message):
    write_calibration(tmp_path)
    lines = problems(robot(tmp_path, change(GOOD)))
    assert any(message in line for line in lines), lines


def test_a_calibration_lerobot_did_not_write_is_named_by_motor_and_key(tmp_path):
    data = json.loads(json.dumps(CALIBRATION))
    data["wrist_flex"]["homing_offset"] = 5000
    write_calibration(tmp_path, data)
    lines = problems(robot(tmp_path, GOOD))
    assert any('[arm].calibration = "so101_follower.json": not usable with this calibration' in line
               and "wrist_flex (motor 4): homing_offset must be within ±2047" in line for line in lines), lines
    write_calibration(tmp_path)
    safety = GOOD + "[safety]\njoint_limits = [{lower = -1.0, upper = 1.0, max_velocity = 1.0}]\n"
    assert any("[safety].joint_limits: 1 entries, but the calibration so101_follower.json has 5 joints" in line
               for line in problems(robot(tmp_path, safety)))
