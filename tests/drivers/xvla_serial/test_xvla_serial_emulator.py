"""The xvla-serial controller emulator's protocol behaviour, driven in-process with hand-built frames."""

from __future__ import annotations

import pytest

from drivers.xvla_serial import codec as c
from drivers.xvla_serial.emulator import HISTORY, ControllerConfig, ControllerEmulator

T0 = 1000.0


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def exchange(emu: ControllerEmulator, wire: bytes, now: float = T0) -> list[c.Message]:
    emu.feed(wire, now)
    out = b"".join(data for _, data in emu.outbox)
    emu.outbox.clear()
    return [c.decode(f) for f in c.FrameParser().feed(out)]


def joint_target(value: float = 0.1, gripper: float = 0.5, n: int = 6) -> c.TargetMsg:
    return c.TargetMsg(c.TargetMode.JOINT, (value,) * n + (gripper,))


@pytest.fixture
def emu() -> ControllerEmulator:
    e = ControllerEmulator(ControllerConfig(), seed=1)
    e.tick(T0)
    return e


def test_hello_vector_gets_capabilities(emu: ControllerEmulator) -> None:
    (caps,) = exchange(emu, h("A5 5A 01 01 00 00 02 00 83 87 C8 00 CC 89"))  # PROTOCOL.md HELLO vector
    assert isinstance(caps, c.CapabilitiesMsg)
    assert caps.timeout_ms == 200 and caps.n_joints == 6 and caps.n_arms == 1
    assert emu.mode == c.ControllerMode.IDLE


@pytest.mark.parametrize(("requested", "granted"), [(0, 200), (5, 20), (60_000, 2000)])
def test_hello_timeout_is_clamped(emu: ControllerEmulator, requested: int, granted: int) -> None:
    (caps,) = exchange(emu, c.encode(c.HelloMsg(requested), 1))
    assert caps.timeout_ms == granted


def test_target_before_hello_is_not_ready(emu: ControllerEmulator) -> None:
    (nack,) = exchange(emu, c.encode(joint_target(), 1))
    assert nack == c.NackMsg(c.NackReason.NOT_READY, c.NO_FIELD, c.ControllerMode.NOT_READY)


def test_replies_echo_seq_and_come_in_order(emu: ControllerEmulator) -> None:
    wire = c.encode(c.HelloMsg(0), 10) + c.encode(joint_target(), 11) + c.encode(c.HeartbeatMsg(), 12)
    emu.feed(wire, T0)
    frames = c.FrameParser().feed(b"".join(d for _, d in emu.outbox))
    expected = [(10, c.MsgType.CAPABILITIES), (11, c.MsgType.ACK), (12, c.MsgType.STATE)]
    assert [(f.seq, f.type) for f in frames] == expected


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (c.Frame(c.MsgType.ACK, 2, h("00 00 00")), c.NackReason.UNKNOWN_TYPE),
        (c.Frame(0x42, 2), c.NackReason.UNKNOWN_TYPE),
        (c.Frame(c.MsgType.HEARTBEAT, 2, version=2), c.NackReason.UNSUPPORTED_VERSION),
        (c.Frame(c.MsgType.HEARTBEAT, 2, b"\x00"), c.NackReason.MALFORMED),
        (c.Frame(c.MsgType.TARGET, 2, c.TargetMsg(c.TargetMode.JOINT, (0.0,) * 3).pack()), c.NackReason.MALFORMED),
    ],
)
def test_bad_requests_are_nacked(emu: ControllerEmulator, frame: c.Frame, reason: c.NackReason) -> None:
    exchange(emu, c.encode(c.HelloMsg(0), 1))
    (nack,) = exchange(emu, frame.encode())
    assert isinstance(nack, c.NackMsg) and nack.reason == reason


def test_out_of_limits_is_refused_and_previous_target_kept(emu: ControllerEmulator) -> None:
    exchange(emu, c.encode(c.HelloMsg(0), 1))
    assert exchange(emu, c.encode(joint_target(0.25), 2)) == [c.AckMsg(c.ControllerMode.TRACKING)]
    (nack,) = exchange(emu, c.encode(c.TargetMsg(c.TargetMode.JOINT, (0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.5)), 3))
    assert (nack.reason, nack.field) == (c.NackReason.OUT_OF_LIMITS, 2)
    assert emu.joint_target == [0.25] * 6


def test_stale_sequence(emu: ControllerEmulator) -> None:
    exchange(emu, c.encode(c.HelloMsg(0), 100))
    assert isinstance(exchange(emu, c.encode(joint_target(), 101))[0], c.AckMsg)
    (nack,) = exchange(emu, c.encode(joint_target(), 101))
    assert nack.reason == c.NackReason.STALE_SEQUENCE
    (nack,) = exchange(emu, c.encode(joint_target(), 100 - 5))
    assert nack.reason == c.NackReason.STALE_SEQUENCE


def test_deadman_holds_and_latches_until_hello(emu: ControllerEmulator) -> None:
    exchange(emu, c.encode(c.HelloMsg(50), 1))
    exchange(emu, c.encode(joint_target(1.0), 2))
    emu.tick(T0 + 0.03)
    emu.tick(T0 + 0.06)  # 60 ms of silence > 50 ms
    assert emu.mode == c.ControllerMode.HOLDING and emu.faults & c.Fault.HOST_TIMEOUT
    held = list(emu.positions)
    assert 0.0 < held[0] < 1.0 and emu.joint_target == held
    emu.tick(T0 + 0.5)
    assert emu.positions == held
    (nack,) = exchange(emu, c.encode(joint_target(1.0), 3), T0 + 0.5)
    assert nack.reason == c.NackReason.TIMED_OUT
    exchange(emu, c.encode(c.HelloMsg(50), 4), T0 + 0.5)
    assert emu.mode == c.ControllerMode.IDLE and not emu.faults & c.Fault.HOST_TIMEOUT


def test_estop_latch(emu: ControllerEmulator) -> None:
    (ack,) = exchange(emu, c.encode(c.EstopMsg(True), 1))  # accepted before HELLO
    assert ack == c.AckMsg(c.ControllerMode.ESTOPPED, c.Fault.ESTOP)
    exchange(emu, c.encode(c.HelloMsg(0), 2))
    assert emu.mode == c.ControllerMode.ESTOPPED
    assert exchange(emu, c.encode(joint_target(), 3))[0].reason == c.NackReason.ESTOPPED
    assert exchange(emu, c.encode(c.EstopMsg(False), 4)) == [c.AckMsg(c.ControllerMode.HOLDING)]
    assert isinstance(exchange(emu, c.encode(joint_target(), 5))[0], c.AckMsg)


def test_hardware_fault_holds_until_cause_gone_and_hello(emu: ControllerEmulator) -> None:
    exchange(emu, c.encode(c.HelloMsg(0), 1))
    exchange(emu, c.encode(joint_target(1.0), 2))
    emu.tick(T0 + 0.02)
    emu.control("set_fault", {"flags": int(c.Fault.OVER_CURRENT)})
    held = list(emu.positions)
    emu.tick(T0 + 0.05)
    assert emu.positions == held and emu.mode == c.ControllerMode.FAULT
    assert exchange(emu, c.encode(joint_target(), 3), T0 + 0.05)[0].reason == c.NackReason.FAULTED
    exchange(emu, c.encode(c.HelloMsg(0), 4), T0 + 0.05)
    assert emu.mode == c.ControllerMode.FAULT  # cause still present
    emu.control("clear_fault", {"flags": int(c.Fault.OVER_CURRENT)})
    exchange(emu, c.encode(c.HelloMsg(0), 5), T0 + 0.05)
    assert emu.mode == c.ControllerMode.IDLE


def test_motion_respects_velocity_and_limits(emu: ControllerEmulator) -> None:
    exchange(emu, c.encode(c.HelloMsg(2000), 1))
    exchange(emu, c.encode(joint_target(2.5), 2))
    now = T0
    for _ in range(200):
        before = list(emu.positions)
        now += 0.01
        emu.tick(now)
        step = max(abs(a - b) for a, b in zip(emu.positions, before))
        assert step <= ControllerConfig().joint_max_velocity * 0.01 + 1e-12
    assert emu.positions == [2.5] * 6 and emu.faults & c.Fault.AT_LIMIT


def test_reboot_forgets_session_and_keeps_pose(emu: ControllerEmulator) -> None:
    (caps,) = exchange(emu, c.encode(c.HelloMsg(0), 1))
    exchange(emu, c.encode(joint_target(0.5), 2))
    emu.tick(T0 + 0.02)
    pose = list(emu.positions)
    emu.control("reboot", {})
    assert emu.boot_id != caps.boot_id and emu.mode == c.ControllerMode.NOT_READY
    emu.tick(T0 + 0.1)
    assert emu.positions == pose


def test_retained_state_is_bounded_over_a_long_session() -> None:
    """A 200 Hz session of 20,000 TARGETs (100 s) plus refusals: the history the emulator keeps is capped while
    its counts stay exact (a soak once grew the emulator's memory by ~7 kB/s through an unbounded list)."""
    emu = ControllerEmulator(ControllerConfig(), seed=2)
    now = T0
    emu.feed(c.encode(c.HelloMsg(0), 1), now)
    frames = 20_000
    for seq in range(2, frames + 2):
        now += 0.005
        emu.feed(c.encode(joint_target(0.1 + 1e-5 * (seq % 100)), seq & 0xFFFF), now)
        if seq % 10 == 0:
            emu.feed(c.encode(joint_target(), (seq - 5) & 0xFFFF), now)  # a stale sequence number: NACKed
        emu.tick(now)
        emu.outbox.clear()
    snap = emu.control("snapshot", {})
    assert snap["accepted"] == frames and snap["nacked"] == frames // 10
    assert len(snap["accepted_seqs"]) == len(snap["nacks"]) == HISTORY
    assert snap["accepted_seqs"][-1] == (frames + 1) & 0xFFFF and snap["nacks"][-1][1] == "STALE_SEQUENCE"
    assert len(emu.accepted_seqs) == len(emu.nacks) == HISTORY
    assert emu._parser.pending == 0 and emu.outbox == []


def test_place_puts_the_arm_at_a_pose_and_holds_it_there(emu: ControllerEmulator) -> None:
    emu.control("place", {"ee": [[0.4, -0.1, 0.2, 0.0, 0.0, 0.0, 2.0, 1.5]]})  # quaternion and gripper out of range
    assert emu.control("ee", {}) == [[0.4, -0.1, 0.2, 0.0, 0.0, 0.0, 1.0, 1.0]]
    emu.tick(T0 + 0.5)
    assert emu.control("ee", {}) == [[0.4, -0.1, 0.2, 0.0, 0.0, 0.0, 1.0, 1.0]]  # held: the target moved too
    assert emu.control("snapshot", {})["ee_target"] == [[0.4, -0.1, 0.2, 0.0, 0.0, 0.0, 1.0, 1.0]]


@pytest.mark.parametrize("ee, match", [
    ([[0.4, 0.0, 0.2, 0.0, 0.0, 0.0, 1.0]], "8 values"), ([], "1 poses"),
    ([[float("nan"), 0.0, 0.2, 0.0, 0.0, 0.0, 1.0, 1.0]], "non-finite"),
    ([[0.4, 0.0, 0.2, 0.0, 0.0, 0.0, 0.0, 1.0]], "unit norm"),
])
def test_place_refuses_bad_poses(emu: ControllerEmulator, ee, match) -> None:
    before = emu.control("ee", {})
    with pytest.raises(ValueError, match=match):
        emu.control("place", {"ee": ee})
    assert emu.control("ee", {}) == before
