"""``xvla-edge arm check --config robot.toml``: the configured arm's read-only probe, its report and exit status, on the
emulated SO-101 (a pty in another process, as a USB serial adapter would be)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drivers.feetech import emulator
from xvla_edge.cli import main
from xvla_edge.daemon.robot_toml import emulated_robot, toml_text

from tests.support.so101 import chain_config, write_calibration


@pytest.fixture
def emu():
    process = emulator.start(chain_config(), seed=2)
    yield process
    process.stop()


def config(tmp_path: Path, arm: dict) -> Path:
    """A robot.toml of the emulated robot with ``arm`` as its whole [arm] table."""
    data = emulated_robot(tmp_path / "bundle", "unused", tmp_path / "recordings")
    data["arm"] = arm
    path = tmp_path / "robot.toml"
    path.write_text(toml_text(data))
    return path


def feetech(tmp_path: Path, port: str) -> Path:
    return config(tmp_path, {"driver": "feetech", "port": port, "space": "joint",
                             "calibration": str(write_calibration(tmp_path)), "max_joint_velocity": 3.0,
                             "gripper_open": "range_max"})


def test_a_healthy_arm_is_listed_and_nothing_moves(tmp_path, emu, capsys):
    before = emu.call("snapshot")
    assert main(["arm", "check", "--config", str(feetech(tmp_path, emu.port))]) == 0
    out = capsys.readouterr().out
    assert emu.call("snapshot")["1"]["Torque_Enable"] == 0 and emu.call("goal_log") == []
    assert {k: v["Goal_Position"] for k, v in emu.call("snapshot").items()} == {
        k: v["Goal_Position"] for k, v in before.items()}
    assert "arm: driver feetech" in out and "shoulder_pan (id 1): model STS3215" in out and "gripper (id 6)" in out
    assert "no problems found" in out


def test_problems_exit_1_and_json_names_them(tmp_path, emu, capsys):
    emu.call("silence", motor_id=4)
    emu.call("hardware_error", motor_id=2, bits=0x20)
    assert main(["arm", "check", "--config", str(feetech(tmp_path, emu.port)), "--json"]) == 1
    found = json.loads(capsys.readouterr().out)
    assert found["problems"] == ["motor 4 (wrist_flex) does not answer", "motor 2 (shoulder_lift) reports OVERLOAD"]


def test_no_link_exits_3_and_a_driver_without_a_probe_exits_4(tmp_path, emu, capsys):
    for motor in range(1, 7):
        emu.call("silence", motor_id=motor)
    assert main(["arm", "check", "--config", str(feetech(tmp_path, emu.port))]) == 3
    assert main(["arm", "check", "--config", str(feetech(tmp_path, "/dev/no-such-adapter"))]) == 3
    assert "no link: FeetechArm probe: cannot open Feetech bus '/dev/no-such-adapter'" in capsys.readouterr().err
    sim = config(tmp_path, {"driver": "sim", "space": "ee"})
    assert main(["arm", "check", "--config", str(sim)]) == 4
    assert "no probe for this arm: SimArm has no read-only check of its link (driver 'sim')" in capsys.readouterr().err
    (tmp_path / "bad.toml").write_text("[arm]\ndriver = 'feetch'\n")
    assert main(["arm", "check", "--config", str(tmp_path / "bad.toml")]) == 2
