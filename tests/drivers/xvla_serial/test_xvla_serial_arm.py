"""XvlaSerialArm against the emulated controller in a separate process on a real pty."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any, Callable, Iterator

import numpy as np
import pytest

from drivers.arm import ArmFault, ArmLinkError, ArmState, FaultFlag, Target
from drivers.emulation.pty_emulator import EmulatorProcess, serve
from drivers.xvla_serial import codec as c
from drivers.xvla_serial import emulator
from drivers.xvla_serial.arm import XvlaSerialArm

CONFIG = emulator.ControllerConfig(n_joints=6, n_arms=1, timeout_range_ms=(20, 10_000))  # long deadmans allowed
LIMIT = CONFIG.joint_limit_rad


def wait_for(check: Callable[[], Any], what: str, timeout_s: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def wait_state(arm: XvlaSerialArm, ok: Callable[[ArmState], bool], what: str) -> ArmState:
    return wait_for(lambda: (lambda state: state if ok(state) else None)(arm.read_state()), what)


def wait_snapshot(emu: EmulatorProcess, ok: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    return wait_for(lambda: (lambda snap: snap if ok(snap) else None)(emu.call("snapshot")), what)


@pytest.fixture
def emu() -> Iterator[EmulatorProcess]:
    proc = emulator.start(CONFIG, seed=7)
    try:
        yield proc
    finally:
        proc.stop()


def connect(emu: EmulatorProcess, space: str = "joint", **kwargs: Any) -> XvlaSerialArm:
    """A connected client; generous timeouts (unless a test sets them) keep a loaded CI machine from tripping them."""
    kwargs = {"timeout_ms": 10_000, "reply_timeout_s": 0.5, "ack_timeout_s": 1.0, **kwargs}
    arm = XvlaSerialArm(emu.port, space=space, **kwargs)  # type: ignore[arg-type]
    arm.connect()
    return arm


def joint(value: float, gripper: float = 0.5) -> Target:
    return Target.joint(np.full(CONFIG.n_joints, value), [gripper])


def assert_within_limits(snap: dict[str, Any]) -> None:
    assert all(-LIMIT <= p <= LIMIT for p in snap["positions"] + snap["joint_target"])


# ---- streaming --------------------------------------------------------------------------------------


def stream(arm: XvlaSerialArm, targets: list[Target], rate_hz: float) -> None:
    """Send one target per tick at ``rate_hz``, reading state every 10th tick, like a control loop."""
    period = 1.0 / rate_hz
    next_tick = time.monotonic()
    for i, target in enumerate(targets):
        arm.send_target(target)
        if i % 10 == 9:
            arm.read_state()
        next_tick += period
        time.sleep(max(0.0, next_tick - time.monotonic()))


def upsample(waypoints: np.ndarray, duration_s: float, rate_hz: float) -> np.ndarray:
    """Linear interpolation of [30, D] waypoints (evenly spaced over ``duration_s``) at ``rate_hz``."""
    t_way = np.linspace(duration_s / len(waypoints), duration_s, len(waypoints))
    t_tick = np.arange(1, int(round(duration_s * rate_hz)) + 1) / rate_hz
    columns = [np.interp(t_tick, np.r_[0.0, t_way], np.r_[0.0, waypoints[:, d]]) for d in range(waypoints.shape[1])]
    return np.stack(columns, 1)


@pytest.mark.parametrize("rate_hz", [100, 500])
def test_stream_joint_trajectory(emu: EmulatorProcess, rate_hz: int) -> None:
    arm = connect(emu)
    s = np.linspace(0, 1, 31)[1:]
    waypoints = np.stack([0.8 * np.sin(np.pi / 2 * s) * (1 if j % 2 else -1) for j in range(6)] + [s], 1)  # [30, 7]
    ticks = upsample(waypoints, 0.6, rate_hz)
    stream(arm, [Target.joint(v[:6], v[6:]) for v in ticks], rate_hz)
    state = arm.read_state()  # its reply comes after every ACK, so all are in now
    assert arm.in_flight == 0
    assert arm.stats.targets_sent == arm.stats.targets_acked == len(ticks)
    assert arm.stats.replies_lost == arm.stats.targets_nacked == 0
    snap = emu.call("snapshot")
    seqs = snap["accepted_seqs"]
    assert snap["accepted"] == len(seqs) == len(ticks) and all((b - a) % 65536 >= 1 for a, b in zip(seqs, seqs[1:]))
    assert snap["seq_gaps"] == 0 and snap["nacks"] == []
    assert np.abs(state.joint_positions - waypoints[-1, :6]).max() < 0.2
    wait_state(arm, lambda s: np.abs(s.to_vector("joint") - waypoints[-1]).max() < 1e-3, "the arm to settle")
    assert_within_limits(emu.call("snapshot"))
    arm.close()


@pytest.mark.parametrize("rate_hz", [100, 500])
def test_stream_ee_trajectory(emu: EmulatorProcess, rate_hz: int) -> None:
    arm = connect(emu, space="ee")
    start = np.array(CONFIG.home_ee[:3])
    s = np.linspace(0, 1, 31)[1:, None]
    waypoints = np.concatenate([start + s * np.array([0.1, -0.15, 0.2]), 1 - s], 1)  # xyz, gripper: [30, 4]
    ticks = upsample(waypoints - np.r_[start, 1.0], 0.6, rate_hz) + np.r_[start, 1.0]
    quat = np.array([[0.0, 0.0, np.sin(0.2), np.cos(0.2)]])
    stream(arm, [Target.ee(v[None, :3], quat, v[3:]) for v in ticks], rate_hz)
    arm.read_state()
    assert arm.stats.targets_sent == arm.stats.targets_acked == len(ticks) and arm.stats.replies_lost == 0
    assert emu.call("snapshot")["accepted"] == len(ticks)
    final = wait_state(arm, lambda s: np.abs(np.r_[s.position[0], s.gripper] - waypoints[-1]).max() < 1e-4, "settled")
    assert np.allclose(final.quaternion[0], quat[0], atol=1e-4)
    arm.close()


# ---- limits and stops -------------------------------------------------------------------------------


def test_capabilities_reach_the_arm_interface(emu: EmulatorProcess) -> None:
    caps = connect(emu, timeout_ms=300).capabilities
    assert (caps.space, caps.n_arms, caps.n_joints) == ("joint", 1, 6)
    assert caps.joint_limits[0].lower == -LIMIT and caps.joint_limits[0].max_velocity == CONFIG.joint_max_velocity
    assert emu.call("snapshot")["timeout_ms"] == 300


def test_out_of_limit_target_never_reaches_the_wire(emu: EmulatorProcess) -> None:
    arm = connect(emu)
    with pytest.raises(ArmFault, match=r"joint 0 = 3\.0 is outside") as info:
        arm.send_target(joint(3.0))
    assert info.value.reason == "out_of_limits"
    with pytest.raises(ArmFault, match="arm 0 gripper = nan"):
        arm.send_target(joint(0.1, gripper=float("nan")))
    arm.read_state()
    snap = emu.call("snapshot")
    assert snap["nacks"] == [] and snap["accepted_seqs"] == [] and snap["accepted"] == 0
    assert arm.stats.targets_sent == 0


def test_estop_then_clear(emu: EmulatorProcess) -> None:
    arm = connect(emu)
    arm.send_target(joint(0.5))
    arm.estop()
    assert emu.call("snapshot")["mode"] == "ESTOPPED"
    with pytest.raises(ArmFault, match="e-stop latch") as info:
        arm.send_target(joint(0.5))
    assert info.value.flags & FaultFlag.ESTOP
    state = arm.read_state()
    assert state.blocked and state.faults & FaultFlag.ESTOP
    snap1 = emu.call("snapshot")
    time.sleep(0.05)
    snap2 = emu.call("snapshot")
    assert snap1["positions"] == snap2["positions"] == snap2["joint_target"]  # holding, not moving
    arm.clear_estop()
    assert emu.call("snapshot")["mode"] == "HOLDING"
    arm.send_target(joint(0.2))
    arm.read_state()
    assert emu.call("snapshot")["mode"] == "TRACKING"


def test_controller_side_estop_refuses_pipelined_target(emu: EmulatorProcess) -> None:
    arm = connect(emu)
    emu.call("press_estop")  # the controller's own e-stop input
    arm.send_target(joint(0.1))
    arm.read_state()  # the NACK arrives meanwhile
    with pytest.raises(ArmFault, match="ESTOPPED") as info:
        arm.send_target(joint(0.1))
    assert info.value.reason == "estopped"


def test_hold(emu: EmulatorProcess) -> None:
    arm = connect(emu)
    arm.send_target(joint(1.0))
    time.sleep(0.02)
    arm.hold()
    snap = emu.call("snapshot")
    assert snap["mode"] == "HOLDING" and snap["joint_target"] == snap["positions"]
    assert 0.0 < snap["positions"][0] <= 1.0


# ---- fault injection --------------------------------------------------------------------------------


def test_deadman_timeout_holds_then_reconnect(emu: EmulatorProcess) -> None:
    arm = connect(emu, timeout_ms=50)
    arm.send_target(joint(1.0))
    snap = wait_snapshot(emu, lambda s: s["mode"] == "HOLDING", "the controller deadman")
    assert snap["faults"] & int(c.Fault.HOST_TIMEOUT)
    assert snap["joint_target"] == snap["positions"]
    assert_within_limits(snap)
    arm.send_target(joint(1.0))
    arm.read_state()
    with pytest.raises(ArmLinkError, match="TIMED_OUT.*deadman fired"):
        arm.send_target(joint(1.0))
    arm.connect()  # re-handshake clears the latch
    arm.send_target(joint(0.3))
    arm.read_state()
    assert emu.call("snapshot")["mode"] == "TRACKING"


def test_dropped_frames_are_counted_not_fatal(emu: EmulatorProcess) -> None:
    arm = connect(emu)
    emu.call("drop_rx", n=1)
    arm.send_target(joint(0.1))  # never reaches the controller
    arm.send_target(joint(0.2))
    emu.call("drop_tx", n=1)
    arm.send_target(joint(0.3))  # its ACK is lost
    arm.send_target(joint(0.4))
    arm.read_state()
    assert arm.stats.replies_lost == 2 and arm.stats.targets_acked == 2 and arm.in_flight == 0
    snap = emu.call("snapshot")
    assert snap["accepted"] == len(snap["accepted_seqs"]) == 3 and snap["seq_gaps"] == 1


def test_corrupted_replies_are_never_accepted(emu: EmulatorProcess) -> None:
    arm = connect(emu)
    emu.call("corrupt_tx", n=1)
    state = arm.read_state()  # first STATE is corrupted and dropped; the retry succeeds
    assert state.mode in ("IDLE", "HOLDING")
    emu.call("garbage", data="A55A018300000300 0000" + os.urandom(64).hex())
    arm.send_target(joint(0.1))
    arm.read_state()
    assert arm.stats.frames_malformed == 0 and arm.stats.targets_acked == 1
    assert arm.stats.frames_corrupt + arm.stats.bytes_discarded > 0


def test_silent_controller_is_a_link_error_and_controller_holds(emu: EmulatorProcess) -> None:
    arm = connect(emu, timeout_ms=200)
    arm.send_target(joint(1.0))
    arm.read_state()
    emu.call("silence", on=True)
    arm.reply_timeout_s, arm.retries, arm.ack_timeout_s = 0.02, 1, 0.05
    with pytest.raises(ArmLinkError, match=f"{emu.port}: no reply to HEARTBEAT after 2 tries"):
        arm.read_state()
    with pytest.raises(ArmLinkError, match="TARGETs unacknowledged"):
        for _ in range(200):  # one target per 5 ms tick; send_target never waits, so time passes here
            arm.send_target(joint(1.0))
            time.sleep(0.005)
    assert arm.stats.targets_skipped > 0  # once 8 were unacknowledged, later ones were not sent
    snap = wait_snapshot(emu, lambda s: s["mode"] == "HOLDING", "the deadman while silent")
    assert snap["joint_target"] == snap["positions"]
    assert_within_limits(snap)


def test_reboot_is_detected(emu: EmulatorProcess) -> None:
    arm = connect(emu)
    arm.send_target(joint(0.4))
    time.sleep(0.05)
    emu.call("reboot")
    with pytest.raises(ArmLinkError, match="controller rebooted"):
        arm.read_state()
    arm.send_target(joint(0.4))
    arm.hold()  # HOLD is answered in every mode; the TARGET's NACK arrives before its ACK
    with pytest.raises(ArmLinkError, match="NOT_READY"):
        arm.send_target(joint(0.4))
    snap = emu.call("snapshot")
    assert snap["mode"] == "NOT_READY" and snap["joint_target"] == snap["positions"]
    arm.connect()
    arm.send_target(joint(0.0))
    arm.read_state()


def test_hardware_fault_blocks_until_cleared(emu: EmulatorProcess) -> None:
    arm = connect(emu)
    arm.send_target(joint(0.6))
    emu.call("set_fault", flags=int(c.Fault.OVER_CURRENT))
    state = arm.read_state()
    assert state.blocked and state.faults & FaultFlag.OVER_CURRENT and state.mode == "FAULT"
    arm.send_target(joint(0.6))
    arm.read_state()
    with pytest.raises(ArmFault, match="FAULTED") as info:
        arm.send_target(joint(0.6))
    assert info.value.flags & FaultFlag.OVER_CURRENT
    snap = emu.call("snapshot")
    assert snap["joint_target"] == snap["positions"]
    emu.call("clear_fault", flags=int(c.Fault.OVER_CURRENT))
    arm.connect()
    assert not arm.read_state().blocked


# ---- transports -------------------------------------------------------------------------------------


def test_loop_url_reports_echo() -> None:
    arm = XvlaSerialArm("loop://", space="joint", reply_timeout_s=0.02, retries=0)
    with pytest.raises(ArmLinkError, match="echoes our own frames"):
        arm.connect()
    assert arm.stats.frames_echoed == 1
    arm.close()


@pytest.mark.server
def test_socket_url() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    stop_r, stop_w = os.pipe()

    def run() -> None:
        conn, _ = server.accept()
        conn.setblocking(False)
        serve(emulator.ControllerEmulator(CONFIG, seed=3), conn.fileno(), control_fd=stop_r)
        conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    arm = XvlaSerialArm(f"socket://127.0.0.1:{port}", space="ee")
    try:
        assert arm.connect().n_arms == 1
        arm.send_target(Target.ee([[0.3, 0.0, 0.35]], [[0, 0, 0, 1]], [0.5]))
        assert arm.read_state().position.shape == (1, 3)
    finally:
        arm.close()
        os.close(stop_w)
        thread.join(5)
        server.close()
        os.close(stop_r)


def test_bad_port_is_a_link_error() -> None:
    with pytest.raises(ArmLinkError, match="cannot open xvla-serial port '/dev/does-not-exist'"):
        XvlaSerialArm("/dev/does-not-exist").connect()
