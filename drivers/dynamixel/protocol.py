"""Dynamixel Protocol 2.0 packets: framing, CRC-16, byte stuffing, status errors.

Packet layout (e-Manual "DYNAMIXEL Protocol 2.0", https://emanual.robotis.com/docs/en/dxl/protocol2/)::

    FF FF FD 00 | ID | LEN_L LEN_H | INST | PARAM... | CRC_L CRC_H

``LEN`` counts the bytes after itself (INST + stuffed params + 2 CRC bytes). Every ``FF FF FD`` from
INST onward is sent as ``FF FF FD FD``. The CRC (poly 0x8005, init 0, not reflected) covers the header
through the last (stuffed) param and is sent little-endian. Status packets use INST 0x55 and put the
error byte first in the params. Written from the protocol description, not from the vendor SDK.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from drivers import serial_bus
from drivers.errors import ArmError
from drivers.stream_parser import StreamParser, decode_one

HEADER = b"\xff\xff\xfd\x00"
BROADCAST_ID = 0xFE
MAX_ID = 252
# LEN values above this are treated as corruption; the largest packet this package builds is a sync
# write of 253 motors x 4 bytes (~1.3 kB).
MAX_LENGTH = 2048
_HEADER_SIZE = 7  # header + id + length


class Instruction(enum.IntEnum):
    """Instruction byte values used here."""

    PING = 0x01
    READ = 0x02
    WRITE = 0x03
    REBOOT = 0x08
    STATUS = 0x55
    SYNC_READ = 0x82
    SYNC_WRITE = 0x83


class ResultError(enum.IntEnum):
    """Low 7 bits of a status packet's error byte."""

    NONE = 0
    RESULT_FAIL = 1
    INSTRUCTION_ERROR = 2
    CRC_ERROR = 3
    DATA_RANGE_ERROR = 4
    DATA_LENGTH_ERROR = 5
    DATA_LIMIT_ERROR = 6
    ACCESS_ERROR = 7


ALERT_BIT = 0x80  # error byte bit 7: hardware error, read Hardware_Error_Status (70)


class DynamixelError(ArmError):
    """Base class of every error raised by ``drivers.dynamixel``."""


class PacketError(DynamixelError):
    """Bytes that do not form a valid Protocol 2.0 packet (bad header, length, CRC or stuffing)."""


def _make_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _make_table()


def crc16(data: bytes | bytearray, crc: int = 0) -> int:
    """Dynamixel CRC-16 (poly 0x8005, init 0, no reflection, no final xor)."""
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


def stuff(body: bytes) -> bytes:
    """Insert ``FD`` after every ``FF FF FD`` in ``body`` (INST and params)."""
    out = bytearray()
    i = 0
    while i < len(body):
        if body[i : i + 3] == b"\xff\xff\xfd":
            out += b"\xff\xff\xfd\xfd"
            i += 3
        else:
            out.append(body[i])
            i += 1
    return bytes(out)


def unstuff(body: bytes) -> bytes:
    """Inverse of :func:`stuff`; raises :class:`PacketError` on an unstuffed ``FF FF FD``."""
    out = bytearray()
    i = 0
    while i < len(body):
        if body[i : i + 3] == b"\xff\xff\xfd":
            if body[i + 3 : i + 4] != b"\xfd":
                raise PacketError(f"unstuffed FF FF FD at body offset {i}")
            out += b"\xff\xff\xfd"
            i += 4
        else:
            out.append(body[i])
            i += 1
    return bytes(out)


@dataclass(frozen=True)
class Packet:
    """One decoded packet: an instruction packet, or a status packet when ``instruction`` is 0x55."""

    id: int
    instruction: int
    params: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.id <= 0xFF or self.id == 0xFD:
            raise PacketError(f"packet id {self.id} is not a valid Protocol 2.0 id")
        if not 0 <= self.instruction <= 0xFF:
            raise PacketError(f"instruction {self.instruction} does not fit in a byte")

    def encode(self) -> bytes:
        """Bytes on the wire, stuffed and with CRC."""
        body = stuff(bytes([self.instruction]) + self.params)
        head = HEADER + bytes([self.id]) + (len(body) + 2).to_bytes(2, "little")
        crc = crc16(head + body)
        return head + body + crc.to_bytes(2, "little")


class Status(serial_bus.Status):
    """A status packet: the servo's id, its error byte and the returned data."""

    @classmethod
    def from_packet(cls, packet: Packet) -> Status:
        if packet.instruction != Instruction.STATUS or not packet.params:
            raise PacketError(
                f"expected a status packet (instruction 0x55 with an error byte) from id {packet.id}, "
                f"got instruction 0x{packet.instruction:02X} with {len(packet.params)} param bytes"
            )
        return cls(packet.id, packet.params[0], packet.params[1:])

    def to_packet(self) -> Packet:
        return Packet(self.id, Instruction.STATUS, bytes([self.error]) + self.data)

    @property
    def alert(self) -> bool:
        """True when the servo reports a hardware error (see Hardware_Error_Status)."""
        return bool(self.error & ALERT_BIT)

    @property
    def result(self) -> int:
        """The result code (low 7 bits); compare with :class:`ResultError`."""
        return self.error & 0x7F

    def describe(self) -> str:
        """Human-readable error byte, e.g. ``'DATA_RANGE_ERROR + hardware alert'``."""
        try:
            text = ResultError(self.result).name
        except ValueError:
            text = f"unknown result {self.result}"
        return text + (" + hardware alert" if self.alert else "")


def decode_packet(data: bytes) -> Packet:
    """Decode exactly one packet; raises :class:`PacketError` if ``data`` is anything else."""
    return decode_one(PacketParser(), data, PacketError, "packet")


class PacketParser(StreamParser[Packet]):
    """Streaming packet decoder (see :class:`~drivers.stream_parser.StreamParser`): a bad reserved byte or a
    LEN outside ``3 ... max_length`` rejects the head; a bad CRC or bad stuffing rejects the packet."""

    HEADER = HEADER
    HEAD_SIZE = _HEADER_SIZE

    def __init__(self, max_length: int = MAX_LENGTH) -> None:
        super().__init__()
        self._max_length = max_length

    def _frame_size(self, head: bytearray) -> int | None:
        length = int.from_bytes(head[5:7], "little")
        if head[4] == 0xFD or not 3 <= length <= self._max_length:
            return None
        return _HEADER_SIZE + length

    def _decode(self, raw: bytes) -> Packet | None:
        if crc16(raw[:-2]) != int.from_bytes(raw[-2:], "little"):
            return None
        try:
            body = unstuff(raw[_HEADER_SIZE:-2])
        except PacketError:
            return None
        if not body:
            return None
        return Packet(raw[4], body[0], body[1:])


# ---- instruction builders ------------------------------------------------------------------------


def _u16(value: int) -> bytes:
    return value.to_bytes(2, "little")


def ping(motor_id: int) -> Packet:
    return Packet(motor_id, Instruction.PING)


def read(motor_id: int, address: int, length: int) -> Packet:
    return Packet(motor_id, Instruction.READ, _u16(address) + _u16(length))


def write(motor_id: int, address: int, data: bytes) -> Packet:
    return Packet(motor_id, Instruction.WRITE, _u16(address) + bytes(data))


def reboot(motor_id: int) -> Packet:
    return Packet(motor_id, Instruction.REBOOT)


def sync_read(address: int, length: int, motor_ids: list[int]) -> Packet:
    return Packet(BROADCAST_ID, Instruction.SYNC_READ, _u16(address) + _u16(length) + bytes(motor_ids))


def sync_write(address: int, length: int, data: dict[int, bytes]) -> Packet:
    """Broadcast ``data[id]`` (each exactly ``length`` bytes) to ``address`` on every listed motor."""
    blocks = serial_bus.sync_write_blocks(length, data, PacketError)
    return Packet(BROADCAST_ID, Instruction.SYNC_WRITE, _u16(address) + _u16(length) + blocks)
