"""The daemon end to end on the emulated AgileX Piper: the emulator in its own process behind a pty speaking
slcan, the daemon's control-loop process on python-can's slcan interface (``[arm] driver = "piper"``).
End-effector chunks of the tiny bundle streamed at the control rate; held on link loss and reconnected;
``xvla-edge ctl estop`` reaching the emulated arm within two control periods; and ``xvla-edge config check``
naming every Piper key it refuses."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from drivers.piper import emulator
from xvla_edge.cli import main
from xvla_edge.daemon.config import RobotConfig, load_config
from xvla_edge.daemon.robot_toml import emulated_robot
from xvla_edge.daemon.service import Daemon

from tests.support.daemon_driving import accepted, drive
from tests.support.piper_bus import NEEDS_CAN
from tests.support.robot_configs import MINIMAL, check

RATE_HZ = 100
PERIOD = 1.0 / RATE_HZ
WORKSPACE = {"lower": [0.1, -0.3, 0.1], "upper": [0.4, 0.3, 0.4]}  # around the emulator's start (0.2, 0, 0.25)


@pytest.fixture
def piper():
    """The emulated Piper in its own process (100 Hz feedback: python-can's slcan reads byte by byte)."""
    process = emulator.start(emulator.PiperConfig(rate_hz=100, low_speed_every=5))
    yield process
    process.stop()


@pytest.fixture
def piper_daemon(tmp_path, tiny_bundle, piper):
    sock_dir = Path(tempfile.mkdtemp(prefix="xvla-ctl-"))
    sock = sock_dir / "ctl.sock"
    data = emulated_robot(tiny_bundle, piper.port, tmp_path / "recordings", cameras={"width": 96, "height": 64},
                          control={"rate_hz": RATE_HZ, "realtime_priority": 0}, operator={"socket": str(sock)},
                          safety={"workspaces": [WORKSPACE]})
    data["arm"] = {"driver": "piper", "interface": "slcan", "channel": piper.port, "space": "ee", "timeout_ms": 300}
    d = Daemon(RobotConfig.from_dict(data, tmp_path / "robot.toml"))
    d.start()  # the control loop opens the adapter (python-can's slcan waits 2 s) and enables the arm
    d.sock = sock
    yield d
    d.close()
    sock_dir.rmdir()


def targets_after(piper, t: float) -> list:
    """When the emulated arm received target frames (end pose / joints) after ``t`` (monotonic clock)."""
    return [c for c in piper.call("snapshot")["command_times"] if c > t]


pytestmark = NEEDS_CAN


@pytest.mark.subprocess
def test_end_effector_chunks_stream_at_the_control_rate(piper_daemon, piper):
    assert drive(piper_daemon, 30.0, until=lambda d: accepted(d) >= 3 and d.stats.mode == "tracking")
    t0 = time.monotonic()
    drive(piper_daemon, 1.0)
    times = np.array(targets_after(piper, t0))[::3]  # three end-pose frames per target
    intervals = np.diff(times)
    print(f"\npiper e2e: {len(times)} targets in {times[-1] - times[0]:.2f} s, median interval "
          f"{np.median(intervals) * 1e3:.2f} ms (period {PERIOD * 1e3:.0f} ms)")
    assert len(times) > 0.6 * RATE_HZ and np.median(intervals) == pytest.approx(PERIOD, rel=0.3)
    snap = piper.call("snapshot")
    assert snap["ctrl_mode"] == "CAN_CTRL" and snap["move_mode"] == "MOVE_P" and snap["enabled"]
    lower, upper = np.array(WORKSPACE["lower"]), np.array(WORKSPACE["upper"])
    position = np.array(snap["pose_target"][:3])
    assert np.all(position >= lower - 1e-6) and np.all(position <= upper + 1e-6)
    assert piper_daemon.stats.events.get("refused", 0) == 0 and snap["refused"] == snap["garbage"] == 0


@pytest.mark.subprocess
def test_link_loss_holds_the_arm_and_the_link_comes_back(piper_daemon, piper):
    assert drive(piper_daemon, 30.0, until=lambda d: d.stats.mode == "tracking")
    piper.call("silence")
    silenced = time.monotonic()
    assert drive(piper_daemon, 5.0, until=lambda d: d.stats.mode == "link_lost")
    time.sleep(0.3)
    first = piper.call("snapshot")
    deadline = time.monotonic() + 5.0  # the arm runs out its last target (at most 3 rad/s), then stays there
    while np.abs(np.subtract(piper.call("snapshot")["pose"], first["pose_target"])).max() > 1e-6:
        assert time.monotonic() < deadline, "the arm did not settle on its last target"
        time.sleep(0.05)
    time.sleep(0.3)
    last = piper.call("snapshot")
    assert targets_after(piper, silenced + 0.3 + 2 * PERIOD) == []  # the loss is found within timeout_ms
    assert last["pose_target"] == first["pose_target"] and last["enabled"]  # holds its last target, power on
    assert last["pose"] == pytest.approx(last["pose_target"], abs=1e-6)
    piper.call("speak")
    assert drive(piper_daemon, 20.0, until=lambda d: d.stats.mode in ("idle", "holding", "tracking")
                 and d.stats.events.get("link_lost", 0) >= 1)


@pytest.mark.subprocess
def test_ctl_estop_reaches_the_emulated_arm_within_two_control_periods(piper_daemon, piper, capsys):
    assert drive(piper_daemon, 30.0, until=lambda d: d.stats.mode == "tracking")
    sent = time.monotonic()
    assert main(["ctl", "estop", "--socket", str(piper_daemon.sock)]) == 0
    returned = time.monotonic()
    time.sleep(0.5)
    after = targets_after(piper, sent)
    snap = piper.call("snapshot")
    assert "ok: estop" in capsys.readouterr().out
    with capsys.disabled():
        print(f"\npiper e-stop: ctl took {(returned - sent) * 1e3:.1f} ms; the arm's last target came "
              f"{(after[-1] - sent) * 1e3:.1f} ms after it was sent (period {PERIOD * 1e3:.0f} ms)")
    assert after and after[-1] - returned <= 2 * PERIOD  # the hold, then nothing more
    assert snap["pose"] == pytest.approx(snap["pose_target"], abs=2e-3) and snap["enabled"]  # holding, power on
    assert drive(piper_daemon, 5.0, until=lambda d: d.status()["operator"] == "estopped")


@pytest.mark.parametrize("line, expected", [
    ('interface = "pcan"', '[arm].interface = "pcan": expected "socketcan" (a USB-CAN adapter'),
    ('channel = ""', '[arm].channel = "": expected the CAN interface ("can0")'),
    ('space = "joint"\nchannel = "can0 up"',
     "[arm].channel = \"can0 up\": PiperArm.channel: 'can0 up' is not a network interface name"),
    ("timeout_ms = 5",
     "[arm].timeout_ms = 5: expected milliseconds 20 ... 1000: feedback older than this is a lost link"),
    ("speed_percent = 0", "[arm].speed_percent = 0: expected the arm's own speed scale, percent 1 ... 100"),
    ("gripper_open_mm = 500.0",
     "[arm].gripper_open_mm = 500.0: expected mm 1 ... 150: the stroke of a fully open gripper"),
    ("gripper_effort = 9", "[arm].gripper_effort = 9: expected N·m 0.1 ... 5"),
    ('port = "/dev/ttyUSB0"', '[arm].port: not used here: only for driver "xvla-serial" or "dynamixel"'),
    ('space = "ee"', "[safety].workspaces: empty, but the Piper reports no workspace: end-effector control needs"),
])
def test_config_check_names_each_piper_key_it_refuses(write, capsys, line, expected):
    path = write(MINIMAL.replace('driver = "sim"', f'driver = "piper"\n{line}'))
    assert check(path) != 0
    assert f"{path}: {expected}" in capsys.readouterr().err


def test_config_check_takes_a_good_piper_config_and_the_docs_example(write, tmp_path, capsys):
    path = write(MINIMAL.replace('driver = "sim"', 'driver = "piper"\nspace = "joint"\ntimeout_ms = 150'))
    assert check(path) == 0, capsys.readouterr()
    arm = load_config(path).arm_factory()()
    assert (arm.channel, arm.interface, arm.space, arm.link_timeout_s) == ("can0", "socketcan", "joint", 0.15)
    doc = (Path(__file__).resolve().parents[3] / "docs" / "arms" / "piper.md").read_text()
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "bundle").mkdir(exist_ok=True)
    assert check(write(example)) == 0, capsys.readouterr()
