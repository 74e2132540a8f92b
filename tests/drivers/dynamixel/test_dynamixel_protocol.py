"""Dynamixel Protocol 2.0 packets against hand-written byte vectors (ROBOTIS e-Manual examples)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.dynamixel import protocol as p

FUZZ = settings(max_examples=200, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def bitwise_crc(data: bytes) -> int:
    """Independent CRC-16 (poly 0x8005, init 0), bit by bit."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


# Instruction packets from the e-Manual's Protocol 2.0 examples.
PING_1 = h("FF FF FD 00 01 03 00 01 19 4E")
PING_BROADCAST = h("FF FF FD 00 FE 03 00 01 31 42")
READ_PRESENT_POSITION_1 = h("FF FF FD 00 01 07 00 02 84 00 04 00 1D 15")
WRITE_GOAL_512_1 = h("FF FF FD 00 01 09 00 03 74 00 00 02 00 00 CA 89")
REBOOT_1 = h("FF FF FD 00 01 03 00 08 2F 4E")
SYNC_READ_PRESENT_POSITION_1_2 = h("FF FF FD 00 FE 09 00 82 84 00 04 00 01 02 CE FA")
SYNC_WRITE_GOAL_150_170 = h("FF FF FD 00 FE 11 00 83 74 00 04 00 01 96 00 00 00 02 AA 00 00 00 82 87")
# Status packets from the same examples.
STATUS_PING_MODEL_1030_FW_38 = h("FF FF FD 00 01 07 00 55 00 06 04 26 65 5D")
STATUS_EMPTY_1 = h("FF FF FD 00 01 04 00 55 00 A1 0C")
STATUS_READ_166_ID1 = h("FF FF FD 00 01 08 00 55 00 A6 00 00 00 8C C0")
STATUS_READ_2079_ID2 = h("FF FF FD 00 02 08 00 55 00 1F 08 00 00 BA BE")
# Built by hand: params contain FF FF FD, so a FD is stuffed in and LEN counts it; CRC from bitwise_crc.
WRITE_STUFFED = h("FF FF FD 00 01 0A 00 03 74 00 FF FF FD FD 00 21 E7")
STATUS_STUFFED = h("FF FF FD 00 01 09 00 55 00 FF FF FD FD 00 D8 9C")
STATUS_ALERT_RANGE = h("FF FF FD 00 01 04 00 55 84 B9 0F")

ALL_VECTORS = [
    PING_1, PING_BROADCAST, READ_PRESENT_POSITION_1, WRITE_GOAL_512_1, REBOOT_1,
    SYNC_READ_PRESENT_POSITION_1_2, SYNC_WRITE_GOAL_150_170, STATUS_PING_MODEL_1030_FW_38,
    STATUS_EMPTY_1, STATUS_READ_166_ID1, STATUS_READ_2079_ID2, WRITE_STUFFED, STATUS_STUFFED,
    STATUS_ALERT_RANGE,
]


@pytest.mark.parametrize("vector", ALL_VECTORS, ids=lambda v: v.hex(" "))
def test_crc_matches_vectors(vector: bytes) -> None:
    expected = int.from_bytes(vector[-2:], "little")
    assert bitwise_crc(vector[:-2]) == expected
    assert p.crc16(vector[:-2]) == expected


def test_crc_is_incremental() -> None:
    assert p.crc16(PING_1[4:8], p.crc16(PING_1[:4])) == 0x4E19


@pytest.mark.parametrize(
    ("packet", "wire"),
    [
        (p.ping(1), PING_1),
        (p.ping(p.BROADCAST_ID), PING_BROADCAST),
        (p.read(1, 132, 4), READ_PRESENT_POSITION_1),
        (p.write(1, 116, (512).to_bytes(4, "little")), WRITE_GOAL_512_1),
        (p.reboot(1), REBOOT_1),
        (p.sync_read(132, 4, [1, 2]), SYNC_READ_PRESENT_POSITION_1_2),
        (p.sync_write(116, 4, {1: h("96 00 00 00"), 2: h("AA 00 00 00")}), SYNC_WRITE_GOAL_150_170),
        (p.write(1, 116, h("FF FF FD 00")), WRITE_STUFFED),
        (p.Status(1, 0, h("06 04 26")).to_packet(), STATUS_PING_MODEL_1030_FW_38),
        (p.Status(1, 0).to_packet(), STATUS_EMPTY_1),
        (p.Status(1, 0, h("A6 00 00 00")).to_packet(), STATUS_READ_166_ID1),
        (p.Status(2, 0, h("1F 08 00 00")).to_packet(), STATUS_READ_2079_ID2),
        (p.Status(1, 0, h("FF FF FD 00")).to_packet(), STATUS_STUFFED),
        (p.Status(1, 0x84).to_packet(), STATUS_ALERT_RANGE),
    ],
)
def test_encode_matches_wire_bytes(packet: p.Packet, wire: bytes) -> None:
    assert packet.encode() == wire
    assert p.decode_packet(wire) == packet


def test_status_fields() -> None:
    status = p.Status.from_packet(p.decode_packet(STATUS_READ_166_ID1))
    assert (status.id, status.error, int.from_bytes(status.data, "little")) == (1, 0, 166)
    alert = p.Status.from_packet(p.decode_packet(STATUS_ALERT_RANGE))
    assert alert.alert and alert.result == p.ResultError.DATA_RANGE_ERROR
    assert alert.describe() == "DATA_RANGE_ERROR + hardware alert"
    with pytest.raises(p.PacketError, match="expected a status packet"):
        p.Status.from_packet(p.decode_packet(PING_1))


@pytest.mark.parametrize(
    ("raw", "stuffed"),
    [
        ("", ""),
        ("FF FF FD", "FF FF FD FD"),
        ("FF FF FD FD", "FF FF FD FD FD"),
        ("FF FF FF FD", "FF FF FF FD FD"),
        ("FF FF FD FF FF FD", "FF FF FD FD FF FF FD FD"),
        ("FF FD FF FF", "FF FD FF FF"),
    ],
)
def test_stuffing_vectors(raw: str, stuffed: str) -> None:
    assert p.stuff(h(raw)) == h(stuffed)
    assert p.unstuff(h(stuffed)) == h(raw)


def test_unstuff_rejects_bare_pattern() -> None:
    with pytest.raises(p.PacketError, match="unstuffed FF FF FD"):
        p.unstuff(h("01 FF FF FD 00"))


def test_decode_rejects_bad_crc_and_trailing_bytes() -> None:
    with pytest.raises(p.PacketError):
        p.decode_packet(PING_1[:-1] + b"\x00")
    with pytest.raises(p.PacketError):
        p.decode_packet(PING_1 + b"\x00")
    with pytest.raises(p.PacketError):
        p.decode_packet(PING_1[:-1])


def test_sync_write_rejects_wrong_data_length() -> None:
    with pytest.raises(p.PacketError, match="id 3: expected 4 data bytes, got 2"):
        p.sync_write(116, 4, {3: b"\x00\x00"})


def test_parser_resyncs_after_garbage_and_split_delivery() -> None:
    stream = h("00 FF FF FF FD 13") + STATUS_READ_166_ID1 + h("FF FF FD") + STATUS_READ_2079_ID2 + h("FF")
    parser = p.PacketParser()
    out = []
    for i in range(len(stream)):
        out += parser.feed(stream[i : i + 1])
    assert [pk.id for pk in out] == [1, 2]
    assert parser.pending == 1  # the trailing FF may start a header


def test_parser_finds_packet_hidden_behind_corrupted_length() -> None:
    corrupt = bytearray(STATUS_READ_166_ID1)
    corrupt[5] = 0x40  # LEN 64: swallows the next packet until the CRC check fails
    parser = p.PacketParser()
    out = parser.feed(bytes(corrupt) + STATUS_READ_2079_ID2 + bytes(64))
    assert [pk.id for pk in out] == [2]
    assert parser.corrupt >= 1


@st.composite
def packets(draw: st.DrawFn) -> p.Packet:
    motor_id = draw(st.integers(0, 0xFF).filter(lambda i: i != 0xFD))
    inst = draw(st.sampled_from(list(p.Instruction)))
    stuffable = st.lists(st.sampled_from([b"\xff", b"\xfd", b"\x00"]), max_size=20).map(b"".join)
    params = draw(st.binary(max_size=40) | stuffable)
    return p.Packet(motor_id, inst, params)


@FUZZ
@given(packets())
def test_roundtrip(packet: p.Packet) -> None:
    wire = packet.encode()
    assert p.decode_packet(wire) == packet
    assert p.HEADER not in wire[4:-2]  # stuffing keeps the header out of the body
    assert bitwise_crc(wire[:-2]) == int.from_bytes(wire[-2:], "little")


@FUZZ
@given(st.binary(max_size=300))
def test_stuffing_roundtrip(data: bytes) -> None:
    assert p.unstuff(p.stuff(data)) == data


@FUZZ
@given(st.binary(max_size=400))
def test_parser_never_raises_on_random_bytes(data: bytes) -> None:
    parser = p.PacketParser()
    for pk in parser.feed(data):
        assert pk.encode() in data  # anything accepted was really on the wire


@FUZZ
@given(packets(), st.data())
def test_parser_rejects_bit_flips(packet: p.Packet, data: st.DataObject) -> None:
    wire = bytearray(packet.encode())
    for _ in range(data.draw(st.integers(1, 3))):
        bit = data.draw(st.integers(0, len(wire) * 8 - 1))
        wire[bit // 8] ^= 1 << (bit % 8)
    if bytes(wire) == packet.encode():
        return
    assert p.PacketParser().feed(bytes(wire) + bytes(p.MAX_LENGTH + 8)) == []


@FUZZ
@given(packets(), st.data())
def test_parser_truncation_then_next_packet(packet: p.Packet, data: st.DataObject) -> None:
    wire = packet.encode()
    cut = data.draw(st.integers(0, len(wire) - 1))
    follow = p.Status(7, 0, b"\x01\x02").to_packet()
    assert p.PacketParser().feed(wire[:cut] + follow.encode() + bytes(p.MAX_LENGTH + 8)) == [follow]
