"""xvla-serial codec against the byte vectors in PROTOCOL.md, plus parser fuzzing."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.xvla_serial import codec as c

FUZZ = settings(max_examples=200, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def bitwise_crc(data: bytes) -> int:
    """Independent CRC-16/CCITT-FALSE, bit by bit."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


# The vectors printed in PROTOCOL.md section 2.
HEARTBEAT_1 = h("A5 5A 01 03 01 00 00 00 D6 D3 50 AF")
HELLO_200 = h("A5 5A 01 01 00 00 02 00 83 87 C8 00 CC 89")
TARGET_JOINT_2 = h("A5 5A 01 02 02 00 0E 00 54 C1 02 03 00 00 00 3F 00 00 80 BE 00 00 80 3F F8 90")
ACK_2 = h("A5 5A 01 83 02 00 03 00 89 3F 02 00 00 93 5B")
NACK_2 = h("A5 5A 01 84 02 00 05 00 FB F2 07 01 01 00 00 7E 45")
ESTOP_3 = h("A5 5A 01 05 03 00 01 00 0A C0 01 88 08")

VECTORS = [
    (HEARTBEAT_1, c.HeartbeatMsg(), 1),
    (HELLO_200, c.HelloMsg(200), 0),
    (TARGET_JOINT_2, c.TargetMsg(c.TargetMode.JOINT, (0.5, -0.25, 1.0)), 2),
    (ACK_2, c.AckMsg(c.ControllerMode.TRACKING), 2),
    (NACK_2, c.NackMsg(c.NackReason.OUT_OF_LIMITS, 1, c.ControllerMode.IDLE), 2),
    (ESTOP_3, c.EstopMsg(True), 3),
]


def test_crc_check_value() -> None:
    assert c.crc16(b"123456789") == 0x29B1 == bitwise_crc(b"123456789")


@pytest.mark.parametrize(("wire", "message", "seq"), VECTORS, ids=lambda v: getattr(v, "TYPE", v))
def test_vectors(wire: bytes, message: c.Message, seq: int) -> None:
    assert bitwise_crc(wire[2:8]) == int.from_bytes(wire[8:10], "little")
    assert bitwise_crc(wire[2:-2]) == int.from_bytes(wire[-2:], "little")
    assert c.encode(message, seq) == wire
    frame = c.decode_frame(wire)
    assert (frame.seq, frame.type) == (seq, message.TYPE)
    assert c.decode(frame) == message


def test_protocol_md_lists_the_same_vectors() -> None:
    from pathlib import Path

    text = (Path(c.__file__).parent / "PROTOCOL.md").read_text()
    for wire, _, _ in VECTORS:
        assert wire.hex(" ").upper() in text


CAPS = c.CapabilitiesMsg(
    target_modes=(c.TargetMode.EE, c.TargetMode.JOINT),
    timeout_ms=200,
    max_rate_hz=500,
    boot_id=0xDEADBEEF,
    joints=(c.JointLimit(-1.0, 1.0, 2.0), c.JointLimit(-2.0, 0.5, 3.0)),
    workspaces=(c.Workspace((0.125, -0.5, 0.0), (0.75, 0.5, 0.625)),),
)


def test_capabilities_layout() -> None:
    payload = CAPS.pack()
    assert len(payload) == 11 + 12 * 2 + 24 * 1
    assert payload[:11] == h("01 02 03 C8 00 F4 01 EF BE AD DE")
    assert struct.unpack_from("<3f", payload, 11) == (-1.0, 1.0, 2.0)
    assert c.CapabilitiesMsg.unpack(payload) == CAPS


def test_state_layout() -> None:
    state = c.StateMsg(
        mode=c.ControllerMode.TRACKING, faults=c.Fault.AT_LIMIT, last_target_seq=7, boot_id=9, uptime_ms=1234,
        positions=(0.5, 0.25), velocities=(0.0, -1.0), ee=(0.25, 0.0, 0.5, 0.0, 0.0, 0.0, 1.0, 0.5),
    )
    payload = state.pack()
    assert payload[:15] == h("02 01 02 40 00 07 00 09 00 00 00 D2 04 00 00")
    assert len(payload) == 15 + 8 * 2 + 32
    assert c.StateMsg.unpack(payload) == state


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (c.Frame(c.MsgType.HELLO, 0, b"\x01"), "HELLO payload: expected 2 bytes, got 1"),
        (c.Frame(c.MsgType.TARGET, 0, h("03 00")), "TARGET mode: expected 1 .* got 3"),
        (c.Frame(c.MsgType.TARGET, 0, h("02 02 00 00 00 00")), "TARGET payload: expected 10 bytes, got 6"),
        (c.Frame(c.MsgType.ESTOP, 0, h("02")), "ESTOP engage: expected 0 or 1, got 2"),
        (c.Frame(0x42, 0), "unknown type 0x42"),
        (c.Frame(c.MsgType.HEARTBEAT, 0, version=2), "version: expected 1, got 2"),
        (c.Frame(c.MsgType.NACK, 0, h("63 FF 00 00 00")), "NACK reason: unknown value 99"),
        (c.Frame(c.MsgType.STATE, 0, h("00 05 00 00 00 00 00 00 00 00 00 00 00 00 00")), "5 arms"),
    ],
)
def test_decode_errors_name_the_field(frame: c.Frame, match: str) -> None:
    with pytest.raises(c.ProtocolError, match=match):
        c.decode(frame)


def test_encode_rejects_out_of_range() -> None:
    with pytest.raises(c.ProtocolError, match="HELLO timeout_ms"):
        c.encode(c.HelloMsg(70000), 0)
    with pytest.raises(c.ProtocolError, match="TARGET values"):
        c.encode(c.TargetMsg(c.TargetMode.JOINT, (1e39,)), 0)
    with pytest.raises(c.ProtocolError, match="header out of range"):
        c.Frame(c.MsgType.HEARTBEAT, 70000).encode()


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ((0.4, 0.0, 0.3, 0.0, 0.0, 0.0, 1.0, 0.5), None),
        ((0.4, 0.0, 0.7, 0.0, 0.0, 0.0, 1.0, 0.5), (c.NackReason.OUT_OF_LIMITS, 2)),
        ((0.4, 0.0, 0.3, 0.0, 0.0, 0.0, 0.5, 0.5), (c.NackReason.OUT_OF_LIMITS, 6)),
        ((0.4, 0.0, 0.3, 0.0, 0.0, 0.0, 1.0, 1.5), (c.NackReason.OUT_OF_LIMITS, 7)),
        ((0.4, math.nan, 0.3, 0.0, 0.0, 0.0, 1.0, 0.5), (c.NackReason.OUT_OF_LIMITS, 1)),
        ((0.4, 0.0, 0.3), (c.NackReason.MALFORMED, c.NO_FIELD)),
    ],
)
def test_ee_target_violation(values: tuple[float, ...], expected: object) -> None:
    assert c.target_violation(c.TargetMsg(c.TargetMode.EE, values), CAPS) == expected


def test_joint_target_violation_and_field_names() -> None:
    assert c.target_violation(c.TargetMsg(c.TargetMode.JOINT, (0.0, 0.0, 1.0)), CAPS) is None
    assert c.target_violation(c.TargetMsg(c.TargetMode.JOINT, (0.0, 0.6, 1.0)), CAPS) == (c.NackReason.OUT_OF_LIMITS, 1)
    bad_gripper = c.TargetMsg(c.TargetMode.JOINT, (0.0, 0.0, -0.1))
    assert c.target_violation(bad_gripper, CAPS) == (c.NackReason.OUT_OF_LIMITS, 2)
    assert c.describe_field(c.TargetMode.JOINT, 1, CAPS) == "joint 1"
    assert c.describe_field(c.TargetMode.JOINT, 2, CAPS) == "arm 0 gripper"
    assert c.describe_field(c.TargetMode.EE, 10, CAPS) == "arm 1 z"
    joint_only = c.CapabilitiesMsg((c.TargetMode.JOINT,), 200, 100, 1, CAPS.joints, ())
    ee = c.TargetMsg(c.TargetMode.EE, ())
    assert c.target_violation(ee, joint_only) == (c.NackReason.MODE_UNSUPPORTED, c.NO_FIELD)


def test_seq_newer_wraps() -> None:
    assert c.seq_newer(1, 0) and c.seq_newer(0, 0xFFFF) and c.seq_newer(0x7FFF, 0)
    assert not c.seq_newer(0, 0) and not c.seq_newer(0x8000, 0) and not c.seq_newer(5, 6)


def test_parser_resyncs_and_handles_split_delivery() -> None:
    stream = h("A5 A5 5A 00 FF") + HEARTBEAT_1 + h("5A A5") + ACK_2 + h("A5")
    parser = c.FrameParser()
    frames = []
    for i in range(len(stream)):
        frames += parser.feed(stream[i : i + 1])
    assert [f.type for f in frames] == [c.MsgType.HEARTBEAT, c.MsgType.ACK]
    assert parser.pending == 1


def test_parser_rejects_corrupted_length_without_waiting() -> None:
    bad = bytearray(ACK_2)
    bad[6] = 0xFF  # LEN = 255: the header CRC fails at once
    parser = c.FrameParser()
    assert parser.feed(bytes(bad) + HEARTBEAT_1) == [c.decode_frame(HEARTBEAT_1)]
    assert parser.corrupt == 1


# ---- property-based fuzzing -----------------------------------------------------------------------

floats32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
xyz = st.tuples(floats32, floats32, floats32)


@st.composite
def messages(draw: st.DrawFn) -> c.Message:
    kind = draw(st.sampled_from(["hello", "caps", "target", "hb", "hold", "estop", "state", "ack", "nack"]))
    n_joints, n_arms = draw(st.integers(0, c.MAX_JOINTS)), draw(st.integers(0, c.MAX_ARMS))
    mode = draw(st.sampled_from(list(c.ControllerMode)))
    faults = c.Fault(draw(st.integers(0, 0x7F)))
    if kind == "hello":
        return c.HelloMsg(draw(st.integers(0, 0xFFFF)))
    if kind == "caps":
        return c.CapabilitiesMsg(
            target_modes=tuple(draw(st.sets(st.sampled_from(list(c.TargetMode))))),
            timeout_ms=draw(st.integers(0, 0xFFFF)), max_rate_hz=draw(st.integers(0, 0xFFFF)),
            boot_id=draw(st.integers(0, 2**32 - 1)),
            joints=tuple(c.JointLimit(*draw(xyz)) for _ in range(n_joints)),
            workspaces=tuple(
                c.Workspace(draw(xyz), draw(xyz)) for _ in range(n_arms)
            ),
        )
    if kind == "target":
        return c.TargetMsg(draw(st.sampled_from(list(c.TargetMode))), tuple(draw(st.lists(floats32, max_size=40))))
    if kind == "hb":
        return c.HeartbeatMsg()
    if kind == "hold":
        return c.HoldMsg()
    if kind == "estop":
        return c.EstopMsg(draw(st.booleans()))
    if kind == "state":
        return c.StateMsg(
            mode=mode, faults=faults, last_target_seq=draw(st.integers(0, 0xFFFF)),
            boot_id=draw(st.integers(0, 2**32 - 1)), uptime_ms=draw(st.integers(0, 2**32 - 1)),
            positions=tuple(draw(st.lists(floats32, min_size=n_joints, max_size=n_joints))),
            velocities=tuple(draw(st.lists(floats32, min_size=n_joints, max_size=n_joints))),
            ee=tuple(draw(st.lists(floats32, min_size=8 * n_arms, max_size=8 * n_arms))),
        )
    if kind == "ack":
        return c.AckMsg(mode, faults)
    return c.NackMsg(draw(st.sampled_from(list(c.NackReason))), draw(st.integers(0, 255)), mode, faults)


@FUZZ
@given(messages(), st.integers(0, 0xFFFF))
def test_message_roundtrip(message: c.Message, seq: int) -> None:
    wire = c.encode(message, seq)
    frame = c.decode_frame(wire)
    assert frame.seq == seq
    assert c.decode(frame) == message


@FUZZ
@given(st.binary(max_size=600))
def test_parser_and_decoder_on_random_bytes(data: bytes) -> None:
    parser = c.FrameParser()
    for frame in parser.feed(data):
        assert frame.encode() in data
        try:
            c.decode(frame)
        except c.ProtocolError:
            pass


@FUZZ
@given(st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(max_size=80))
def test_decoder_on_random_payloads(msg_type: int, seq: int, payload: bytes) -> None:
    try:
        c.decode(c.Frame(msg_type, seq, payload))
    except c.ProtocolError:
        pass


@FUZZ
@given(messages(), st.data())
def test_bit_flips_are_never_accepted(message: c.Message, data: st.DataObject) -> None:
    wire = bytearray(c.encode(message, 5))
    bits = data.draw(st.sets(st.integers(0, len(wire) * 8 - 1), min_size=1, max_size=3))
    for bit in bits:
        wire[bit // 8] ^= 1 << (bit % 8)
    assert c.FrameParser().feed(bytes(wire) + bytes(c.MAX_PAYLOAD + c.OVERHEAD)) == []


@FUZZ
@given(messages(), st.data())
def test_truncated_frame_then_valid_frame(message: c.Message, data: st.DataObject) -> None:
    wire = c.encode(message, 9)
    cut = data.draw(st.integers(0, len(wire) - 1))
    frames = c.FrameParser().feed(wire[:cut] + HEARTBEAT_1 + bytes(c.MAX_PAYLOAD + c.OVERHEAD))
    assert frames == [c.decode_frame(HEARTBEAT_1)]
