"""The daemon end to end on the emulated SO-101 (Feetech STS3215 servos on a pty): a joint bundle's chunks streamed
at the control rate, the arm held on link loss and back after it, and ``xvla-edge ctl estop`` reaching the servos
within two control periods."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from drivers.feetech import emulator
from xvla_edge.cli import main
from xvla_edge.daemon import control
from xvla_edge.daemon.config import load_config
from xvla_edge.daemon.robot_toml import emulated_robot, toml_text
from xvla_edge.daemon.service import Daemon

from tests.support.daemon_driving import accepted, drive
from tests.support.so101 import CALIBRATION, chain_config, write_calibration

pytestmark = pytest.mark.model  # exports a joint bundle
RATE_HZ = 100
PERIOD = 1.0 / RATE_HZ


@pytest.fixture(scope="module")
def joint_bundle(tmp_path_factory) -> Path:
    """A tiny fp32 joint-mode bundle (one arm: 6 joint channels and a gripper), exported from random weights."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from export.bundle import ExportOptions, export_bundle
    from xvla.random_checkpoint import write_random_checkpoint

    ckpt = write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "joint", "tiny", seed=4, action_mode="joint")
    out = tmp_path_factory.mktemp("bundle") / "tiny-joint"
    export_bundle(ckpt, out, ExportOptions(domain_id=3, views=1), progress=lambda line: None)
    return out


@pytest.fixture
def emu():
    process = emulator.start(chain_config(), seed=5)
    yield process
    process.stop()


@pytest.fixture
def daemon(tmp_path, joint_bundle, emu):
    sock_dir = Path(tempfile.mkdtemp(prefix="xvla-ctl-"))
    data = emulated_robot(joint_bundle, emu.port, tmp_path / "recordings", cameras={"width": 96, "height": 64},
                          control={"rate_hz": RATE_HZ, "realtime_priority": 0}, recorder={"seconds": 10},
                          operator={"socket": str(sock_dir / "ctl.sock")})
    data["arm"] = {"driver": "feetech", "port": emu.port, "space": "joint",
                   "calibration": str(write_calibration(tmp_path)), "max_joint_velocity": 2.0,
                   "gripper_open": "range_max"}
    (tmp_path / "robot.toml").write_text(toml_text(data))
    d = Daemon(load_config(tmp_path / "robot.toml"))
    d.start()
    d.sock = sock_dir / "ctl.sock"
    yield d
    d.close()
    sock_dir.rmdir()


def goals(emu, since: float = 0.0) -> list[tuple[float, int, int]]:
    """(time, motor, goal) of every goal write the servos took after ``since``."""
    return [tuple(e) for e in emu.call("goal_log") if e[0] > since]


def test_a_joint_chunk_streams_at_the_control_rate_within_the_calibrated_ranges(daemon, emu):
    assert drive(daemon, 60.0, until=lambda d: accepted(d) >= 3)
    start = time.monotonic()
    assert drive(daemon, 1.0)
    window = [g for g in goals(emu, start) if g[1] == 1]
    assert 0.7 * RATE_HZ <= len(window) <= 1.2 * RATE_HZ, len(window)  # one goal per tick
    ranges = {m["id"]: (m["range_min"], m["range_max"]) for m in CALIBRATION.values()}
    assert all(ranges[motor][0] <= goal <= ranges[motor][1] for _, motor, goal in goals(emu))
    trace = daemon.loop.trace()
    sent = ~np.isnan(trace["command"][:, 0])
    joints, t = trace["command"][sent, :5], trace["time"][sent]
    allowed = 2.0 * np.maximum(np.diff(t), PERIOD)[:, None] * 1.001  # max_joint_velocity = 2 rad/s
    assert len(joints) > 50 and (np.abs(np.diff(joints, axis=0)) <= allowed).all()  # the per-joint speed limit held
    assert daemon.stats.mode == "tracking"


def test_link_loss_holds_the_arm_and_the_daemon_reconnects(daemon, emu):
    assert drive(daemon, 60.0, until=lambda d: accepted(d) >= 2)
    emu.call("drop_replies", n=10**9)  # the servos hear the host, the host hears nothing
    assert drive(daemon, 10.0, until=lambda d: d.stats.mode == "link_lost")
    lost = time.monotonic()
    time.sleep(0.5)
    assert goals(emu, lost + PERIOD) == []  # nothing streamed after the loss: each servo keeps its last goal
    held = {k: v["Goal_Position"] for k, v in emu.call("snapshot").items()}
    time.sleep(0.3)
    assert {k: v["Goal_Position"] for k, v in emu.call("snapshot").items()} == held
    emu.call("drop_replies", n=0)
    assert drive(daemon, 20.0, until=lambda d: d.stats.mode in ("idle", "tracking") and accepted(d) >= 3)


def test_ctl_estop_reaches_the_servos_within_two_control_periods(daemon, emu, monkeypatch):
    """From the moment `ctl estop` connects to the e-stop socket (its own start-up, parsing the command line, is
    not the e-stop's latency) to the servos' goals set where they are, and held."""
    assert drive(daemon, 60.0, until=lambda d: accepted(d) >= 2 and d.stats.mode == "tracking")
    sent_at = []

    def timed_estop(path, *args, **kwargs):
        sent_at.append(time.monotonic())
        return send_estop(path, *args, **kwargs)

    send_estop = control.estop
    monkeypatch.setattr(control, "estop", timed_estop)
    assert main(["ctl", "estop", "--socket", str(daemon.sock)]) == 0
    sent = sent_at[0]
    time.sleep(0.5)
    after = goals(emu, sent)
    assert after, "no goal after the e-stop: the hold never reached the servos"
    hold_time = max(held_since(after, motor) for motor in range(1, 7))
    snapshot = emu.call("snapshot")
    assert all(abs(v["Goal_Position"] - v["Present_Position"]) <= 1 for v in snapshot.values())
    print(f"\ne-stop to the servos' hold: {(hold_time - sent) * 1e3:.1f} ms (period {PERIOD * 1e3:.0f} ms)")
    assert hold_time - sent <= 2 * PERIOD
    assert drive(daemon, 5.0, until=lambda d: d.status()["operator"] == "estopped")
    time.sleep(0.2)
    final = {int(k): v["Goal_Position"] for k, v in emu.call("snapshot").items()}
    assert all(abs(goal - final[motor]) <= 1 for _, motor, goal in goals(emu, hold_time))  # held since


def held_since(log: list[tuple[float, int, int]], motor: int) -> float:
    """When ``motor`` got the goal it still holds: the first write of the last run of goals within a tick of its final
    one in ``log`` (a later hold sets the goal where the servo is again, which rounding may put a tick away)."""
    writes = [(t, goal) for t, m, goal in log if m == motor]
    since = writes[-1][0]
    for t, goal in reversed(writes):
        if abs(goal - writes[-1][1]) > 1:
            break
        since = t
    return since
