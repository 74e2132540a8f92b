"""Feetech's serial servo protocol (SCS/STS "protocol 0"): framing, checksum, status error bits.

Packet layout (instruction and status alike)::

    FF FF | ID | LEN | INST or ERROR | PARAM... | CHECKSUM

``LEN`` counts the bytes after itself (INST/ERROR + params + checksum, so ``len(params) + 2``); the checksum
is the low byte of the bitwise NOT of the sum of ID, LEN, INST/ERROR and the params. A status packet puts the
servo's error bits where an instruction has its instruction byte; on the wire the two look alike. Addresses and
lengths are one byte each; STS multi-byte registers are little-endian. Facts from the vendor's Python SDK
(``feetech-servo-sdk``, ``scservo_sdk``), which the tests run as the oracle of the bytes; written here, not copied.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from drivers import serial_bus
from drivers.errors import ArmError
from drivers.stream_parser import StreamParser, decode_one

HEADER = b"\xff\xff"
BROADCAST_ID = 0xFE
MAX_ID = 0xFC  # 252
#: The vendor SDK's limit on a whole packet (header to checksum), which the servos' buffers share.
MAX_PACKET = 250
_HEAD_SIZE = 4  # header + id + length


class Instruction(enum.IntEnum):
    PING = 0x01
    READ = 0x02
    WRITE = 0x03
    REG_WRITE = 0x04
    ACTION = 0x05
    SYNC_READ = 0x82
    SYNC_WRITE = 0x83


class ErrorBit(enum.IntFlag):
    """A status packet's error byte: the servo's hardware conditions (bit 4 is unused)."""

    VOLTAGE = 0x01  # input voltage outside Min/Max_Voltage_Limit
    ANGLE = 0x02  # angle limit: a goal outside Min/Max_Position_Limit
    OVERHEAT = 0x04
    OVERCURRENT = 0x08
    OVERLOAD = 0x20


def describe_error(bits: int) -> str:
    """``'OVERLOAD+OVERHEAT'`` for a status error byte; ``'none'`` for 0; unknown bits by value."""
    names = [flag.name for flag in ErrorBit if bits & flag and flag.name]
    unknown = bits & ~sum(ErrorBit)
    return "+".join(names + ([f"0x{unknown:02X}"] if unknown else [])) or "none"


class FeetechError(ArmError):
    """Base class of every error raised by ``drivers.feetech``."""


class PacketError(FeetechError):
    """Bytes or values that do not form a valid packet."""


def checksum(body: bytes | bytearray) -> int:
    """The checksum of ``body`` (ID, LEN, INST/ERROR and params)."""
    return ~sum(body) & 0xFF


@dataclass(frozen=True)
class Packet:
    """One packet: ``code`` is the instruction of an instruction packet, the error byte of a status packet."""

    id: int
    code: int
    params: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.id <= BROADCAST_ID:
            raise PacketError(f"packet id {self.id} is not a valid id (0 ... {BROADCAST_ID})")
        if not 0 <= self.code <= 0xFF:
            raise PacketError(f"instruction or error {self.code} does not fit in a byte")
        if len(self.params) + 6 > MAX_PACKET:
            raise PacketError(f"{len(self.params)} params make a packet over {MAX_PACKET} bytes")

    def encode(self) -> bytes:
        body = bytes([self.id, len(self.params) + 2, self.code]) + self.params
        return HEADER + body + bytes([checksum(body)])


class Status(serial_bus.Status):
    """A status packet: the servo's id, its error bits and the returned data."""

    @classmethod
    def from_packet(cls, packet: Packet) -> Status:
        return cls(packet.id, packet.code, packet.params)

    def to_packet(self) -> Packet:
        return Packet(self.id, self.error, self.data)


class PacketParser(StreamParser[Packet]):
    """Streaming decoder (see :class:`~drivers.stream_parser.StreamParser`): an id of 0xFF or a LEN below 2 or
    beyond :data:`MAX_PACKET` rejects the head; a bad checksum rejects the packet."""

    HEADER = HEADER
    HEAD_SIZE = _HEAD_SIZE

    def _frame_size(self, head: bytearray) -> int | None:
        length = head[3]
        if head[2] > BROADCAST_ID or length < 2 or length + _HEAD_SIZE > MAX_PACKET:
            return None
        return _HEAD_SIZE + length

    def _decode(self, raw: bytes) -> Packet | None:
        if checksum(raw[2:-1]) != raw[-1]:
            return None
        return Packet(raw[2], raw[4], raw[5:-1])


def decode_packet(data: bytes) -> Packet:
    """Decode exactly one packet; raises :class:`PacketError` if ``data`` is anything else."""
    return decode_one(PacketParser(), data, PacketError, "packet")


# ---- instruction builders ------------------------------------------------------------------------


def _byte(name: str, value: int) -> int:
    if not 0 <= value <= 0xFF:
        raise PacketError(f"{name} {value} does not fit in a byte")
    return value


def _unicast(motor_id: int) -> int:
    if not 0 <= motor_id <= MAX_ID:
        raise PacketError(f"motor id {motor_id} is outside 0 ... {MAX_ID}")
    return motor_id


def ping(motor_id: int) -> Packet:
    return Packet(_unicast(motor_id), Instruction.PING)


def read(motor_id: int, address: int, length: int) -> Packet:
    return Packet(_unicast(motor_id), Instruction.READ, bytes([_byte("address", address), _byte("length", length)]))


def write(motor_id: int, address: int, data: bytes) -> Packet:
    return Packet(motor_id, Instruction.WRITE, bytes([_byte("address", address)]) + bytes(data))


def sync_read(address: int, length: int, motor_ids: list[int]) -> Packet:
    ids = bytes(_unicast(i) for i in motor_ids)
    head = bytes([_byte("address", address), _byte("length", length)])
    return Packet(BROADCAST_ID, Instruction.SYNC_READ, head + ids)


def sync_write(address: int, length: int, data: dict[int, bytes]) -> Packet:
    """Broadcast ``data[id]`` (each exactly ``length`` bytes) to ``address`` on every listed motor."""
    head = bytes([_byte("address", address), _byte("length", length)])
    blocks = serial_bus.sync_write_blocks(length, data, PacketError, _unicast)
    return Packet(BROADCAST_ID, Instruction.SYNC_WRITE, head + blocks)
