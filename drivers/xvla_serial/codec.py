"""xvla-serial frames and messages; the wire format is specified in PROTOCOL.md next to this file.

Everything here is pure (no I/O). :class:`ProtocolError` is the only exception raised.
"""

from __future__ import annotations

import binascii

import enum
import math
import struct
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, Union

from drivers.errors import ArmError
from drivers.physical_ranges import MAX_ARMS, MAX_JOINTS
from drivers.stream_parser import StreamParser, decode_one

VERSION = 1
SYNC = b"\xa5\x5a"
MAX_PAYLOAD = 512
EE_VALUES = 8  # x y z qx qy qz qw gripper
NO_FIELD = 0xFF
HEADER_SIZE = 10
OVERHEAD = HEADER_SIZE + 2
_HEAD = struct.Struct("<BBHH")  # version, type, seq, length
_U16 = struct.Struct("<H")
_MODE_COUNT = struct.Struct("<BB")
_ACK = struct.Struct("<BH")  # mode, faults
_NACK = struct.Struct("<BBBH")  # reason, field, mode, faults
_CAPS = struct.Struct("<BBBHHI")  # n_arms, n_joints, mode bits, timeout_ms, max_rate_hz, boot_id
_STATE = struct.Struct("<BBBHHII")  # mode, n_arms, n_joints, faults, last_target_seq, boot_id, uptime_ms


class ProtocolError(ArmError):
    """Bytes or values that do not follow the xvla-serial protocol."""


class MsgType(enum.IntEnum):
    HELLO = 0x01
    TARGET = 0x02
    HEARTBEAT = 0x03
    HOLD = 0x04
    ESTOP = 0x05
    CAPABILITIES = 0x81
    STATE = 0x82
    ACK = 0x83
    NACK = 0x84


HOST_TYPES = frozenset({MsgType.HELLO, MsgType.TARGET, MsgType.HEARTBEAT, MsgType.HOLD, MsgType.ESTOP})


class TargetMode(enum.IntEnum):
    EE = 1
    JOINT = 2


_MODE_BIT = {TargetMode.EE: 0x01, TargetMode.JOINT: 0x02}


class ControllerMode(enum.IntEnum):
    NOT_READY = 0
    IDLE = 1
    TRACKING = 2
    HOLDING = 3
    ESTOPPED = 4
    FAULT = 5


class Fault(enum.IntFlag):
    HOST_TIMEOUT = 0x01
    ESTOP = 0x02
    OVER_TEMPERATURE = 0x04
    OVER_CURRENT = 0x08
    ENCODER = 0x10
    SUPPLY_VOLTAGE = 0x20
    AT_LIMIT = 0x40


HARDWARE_FAULTS = Fault.OVER_TEMPERATURE | Fault.OVER_CURRENT | Fault.ENCODER | Fault.SUPPLY_VOLTAGE


class NackReason(enum.IntEnum):
    UNSUPPORTED_VERSION = 1
    UNKNOWN_TYPE = 2
    MALFORMED = 3
    NOT_READY = 4
    TIMED_OUT = 5
    MODE_UNSUPPORTED = 6
    OUT_OF_LIMITS = 7
    ESTOPPED = 8
    FAULTED = 9
    STALE_SEQUENCE = 10


def crc16(data: bytes | bytearray, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, not reflected, no final xor): the stdlib's crc_hqx."""
    return binascii.crc_hqx(data, crc)


def seq_newer(seq: int, reference: int) -> bool:
    """True if ``seq`` comes after ``reference`` in uint16 serial-number order."""
    return 1 <= (seq - reference) % 0x10000 <= 0x7FFF


# ---- frames ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One frame: header fields plus the raw payload."""

    type: int
    seq: int
    payload: bytes = b""
    version: int = VERSION

    def encode(self) -> bytes:
        if len(self.payload) > MAX_PAYLOAD:
            raise ProtocolError(f"payload of type 0x{self.type:02X} is {len(self.payload)} bytes, max {MAX_PAYLOAD}")
        try:
            head = _HEAD.pack(self.version, self.type, self.seq, len(self.payload))
        except struct.error as exc:
            raise ProtocolError(f"frame header out of range (version, type, seq): {exc}") from None
        body = head + crc16(head).to_bytes(2, "little") + self.payload
        return SYNC + body + crc16(body).to_bytes(2, "little")


def decode_frame(data: bytes) -> Frame:
    """Decode exactly one frame; raises :class:`ProtocolError` otherwise."""
    return decode_one(FrameParser(), data, ProtocolError, "frame")


class FrameParser(StreamParser[Frame]):
    """Streaming frame decoder (see :class:`~drivers.stream_parser.StreamParser`): a bad header CRC or an
    oversize length rejects the head, a bad frame CRC the frame; the scan then resumes one byte after the
    candidate's first sync byte (PROTOCOL.md §2)."""

    HEADER = SYNC
    HEAD_SIZE = HEADER_SIZE

    def _frame_size(self, head: bytearray) -> int | None:
        length = _U16.unpack_from(head, 6)[0]
        if int.from_bytes(head[8:10], "little") != crc16(head[2:8]) or length > MAX_PAYLOAD:
            return None
        return HEADER_SIZE + length + 2

    def _decode(self, raw: bytes) -> Frame | None:
        if crc16(raw[2:-2]) != int.from_bytes(raw[-2:], "little"):
            return None
        version, msg_type, seq, _length = _HEAD.unpack_from(raw, 2)
        return Frame(msg_type, seq, raw[HEADER_SIZE:-2], version)


# ---- payload helpers ------------------------------------------------------------------------------


def _pack(layout: struct.Struct, *values: object, what: str) -> bytes:
    try:
        return layout.pack(*values)
    except (struct.error, OverflowError) as exc:
        raise ProtocolError(f"{what}: value out of range ({exc})") from None


def _floats(values: tuple[float, ...], what: str) -> bytes:
    return _pack(struct.Struct(f"<{len(values)}f"), *values, what=what)


def _expect_len(what: str, payload: bytes, expected: int) -> None:
    if len(payload) != expected:
        raise ProtocolError(f"{what} payload: expected {expected} bytes, got {len(payload)}")


def _expect_min_len(what: str, payload: bytes, minimum: int) -> None:
    if len(payload) < minimum:
        raise ProtocolError(f"{what} payload: expected at least {minimum} bytes, got {len(payload)}")


def _unfloats(payload: bytes, offset: int, count: int) -> tuple[float, ...]:
    return struct.unpack_from(f"<{count}f", payload, offset)


def _counts(what: str, n_arms: int, n_joints: int) -> None:
    if n_arms > MAX_ARMS or n_joints > MAX_JOINTS:
        raise ProtocolError(f"{what}: {n_arms} arms / {n_joints} joints, max {MAX_ARMS} / {MAX_JOINTS}")


# ---- messages -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HelloMsg:
    TYPE: ClassVar[MsgType] = MsgType.HELLO
    timeout_ms: int = 0

    def pack(self) -> bytes:
        return _pack(_U16, self.timeout_ms, what="HELLO timeout_ms")

    @classmethod
    def unpack(cls, payload: bytes) -> HelloMsg:
        _expect_len("HELLO", payload, 2)
        return cls(*_U16.unpack(payload))


@dataclass(frozen=True)
class JointLimit:
    lower: float
    upper: float
    max_velocity: float


@dataclass(frozen=True)
class Workspace:
    lower: tuple[float, float, float]
    upper: tuple[float, float, float]


@dataclass(frozen=True)
class CapabilitiesMsg:
    TYPE: ClassVar[MsgType] = MsgType.CAPABILITIES
    target_modes: tuple[TargetMode, ...]
    timeout_ms: int
    max_rate_hz: int
    boot_id: int
    joints: tuple[JointLimit, ...]
    workspaces: tuple[Workspace, ...]

    @property
    def n_arms(self) -> int:
        return len(self.workspaces)

    @property
    def n_joints(self) -> int:
        return len(self.joints)

    def supports(self, mode: TargetMode) -> bool:
        return mode in self.target_modes

    def target_count(self, mode: TargetMode) -> int:
        """Number of values a TARGET in ``mode`` must carry."""
        return EE_VALUES * self.n_arms if mode == TargetMode.EE else self.n_joints + self.n_arms

    def pack(self) -> bytes:
        _counts("CAPABILITIES", self.n_arms, self.n_joints)
        bits = sum(_MODE_BIT[TargetMode(m)] for m in set(self.target_modes))
        head = _pack(_CAPS, self.n_arms, self.n_joints, bits, self.timeout_ms, self.max_rate_hz, self.boot_id,
                     what="CAPABILITIES header")
        joints = tuple(v for j in self.joints for v in (j.lower, j.upper, j.max_velocity))
        boxes = tuple(v for w in self.workspaces for v in (*w.lower, *w.upper))
        return head + _floats(joints, "CAPABILITIES joint limits") + _floats(boxes, "CAPABILITIES workspace")

    @classmethod
    def unpack(cls, payload: bytes) -> CapabilitiesMsg:
        _expect_min_len("CAPABILITIES", payload, _CAPS.size)
        n_arms, n_joints, bits, timeout_ms, rate, boot_id = _CAPS.unpack_from(payload)
        _counts("CAPABILITIES", n_arms, n_joints)
        _expect_len("CAPABILITIES", payload, _CAPS.size + 12 * n_joints + 24 * n_arms)
        j = _unfloats(payload, _CAPS.size, 3 * n_joints)
        w = _unfloats(payload, _CAPS.size + 12 * n_joints, 6 * n_arms)
        return cls(
            target_modes=tuple(m for m, bit in _MODE_BIT.items() if bits & bit),
            timeout_ms=timeout_ms,
            max_rate_hz=rate,
            boot_id=boot_id,
            joints=tuple(JointLimit(*j[i : i + 3]) for i in range(0, len(j), 3)),
            workspaces=tuple(Workspace(w[i : i + 3], w[i + 3 : i + 6]) for i in range(0, len(w), 6)),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class TargetMsg:
    TYPE: ClassVar[MsgType] = MsgType.TARGET
    mode: TargetMode
    values: tuple[float, ...]

    def pack(self) -> bytes:
        if len(self.values) > (MAX_PAYLOAD - 2) // 4:
            raise ProtocolError(f"TARGET carries {len(self.values)} values, max {(MAX_PAYLOAD - 2) // 4}")
        return _pack(_MODE_COUNT, int(self.mode), len(self.values), what="TARGET mode") + _floats(
            self.values, "TARGET values"
        )

    @classmethod
    def unpack(cls, payload: bytes) -> TargetMsg:
        _expect_min_len("TARGET", payload, _MODE_COUNT.size)
        mode, count = _MODE_COUNT.unpack_from(payload)
        if mode not in TargetMode._value2member_map_:
            raise ProtocolError(f"TARGET mode: expected 1 (EE) or 2 (JOINT), got {mode}")
        _expect_len("TARGET", payload, 2 + 4 * count)
        return cls(TargetMode(mode), _unfloats(payload, 2, count))


@dataclass(frozen=True)
class HeartbeatMsg:
    TYPE: ClassVar[MsgType] = MsgType.HEARTBEAT

    def pack(self) -> bytes:
        return b""

    @classmethod
    def unpack(cls, payload: bytes) -> HeartbeatMsg:
        _expect_len("HEARTBEAT", payload, 0)
        return cls()


@dataclass(frozen=True)
class HoldMsg:
    TYPE: ClassVar[MsgType] = MsgType.HOLD

    def pack(self) -> bytes:
        return b""

    @classmethod
    def unpack(cls, payload: bytes) -> HoldMsg:
        _expect_len("HOLD", payload, 0)
        return cls()


@dataclass(frozen=True)
class EstopMsg:
    TYPE: ClassVar[MsgType] = MsgType.ESTOP
    engage: bool = True

    def pack(self) -> bytes:
        return bytes([1 if self.engage else 0])

    @classmethod
    def unpack(cls, payload: bytes) -> EstopMsg:
        _expect_len("ESTOP", payload, 1)
        if payload[0] > 1:
            raise ProtocolError(f"ESTOP engage: expected 0 or 1, got {payload[0]}")
        return cls(bool(payload[0]))


@dataclass(frozen=True)
class StateMsg:
    TYPE: ClassVar[MsgType] = MsgType.STATE
    mode: ControllerMode
    faults: Fault
    last_target_seq: int
    boot_id: int
    uptime_ms: int
    positions: tuple[float, ...]
    velocities: tuple[float, ...]
    ee: tuple[float, ...]  # EE_VALUES per arm

    def pack(self) -> bytes:
        n_joints, n_arms = len(self.positions), len(self.ee) // EE_VALUES
        if len(self.velocities) != n_joints or len(self.ee) % EE_VALUES:
            raise ProtocolError(
                f"STATE: {n_joints} positions need {n_joints} velocities (got {len(self.velocities)}) and "
                f"ee must hold {EE_VALUES} values per arm (got {len(self.ee)})"
            )
        _counts("STATE", n_arms, n_joints)
        head = _pack(_STATE, int(self.mode), n_arms, n_joints, int(self.faults), self.last_target_seq,
                     self.boot_id, self.uptime_ms % 2**32, what="STATE header")
        return head + _floats(self.positions + self.velocities + self.ee, "STATE values")

    @classmethod
    def unpack(cls, payload: bytes) -> StateMsg:
        _expect_min_len("STATE", payload, _STATE.size)
        mode, n_arms, n_joints, faults, last_seq, boot_id, uptime = _STATE.unpack_from(payload)
        _counts("STATE", n_arms, n_joints)
        _expect_len("STATE", payload, _STATE.size + 8 * n_joints + 32 * n_arms)
        values = _unfloats(payload, _STATE.size, 2 * n_joints + EE_VALUES * n_arms)
        return cls(
            mode=_enum(ControllerMode, mode, "STATE mode"),
            faults=Fault(faults),
            last_target_seq=last_seq,
            boot_id=boot_id,
            uptime_ms=uptime,
            positions=values[:n_joints],
            velocities=values[n_joints : 2 * n_joints],
            ee=values[2 * n_joints :],
        )


@dataclass(frozen=True)
class AckMsg:
    TYPE: ClassVar[MsgType] = MsgType.ACK
    mode: ControllerMode
    faults: Fault = Fault(0)

    def pack(self) -> bytes:
        return _pack(_ACK, int(self.mode), int(self.faults), what="ACK")

    @classmethod
    def unpack(cls, payload: bytes) -> AckMsg:
        _expect_len("ACK", payload, 3)
        mode, faults = _ACK.unpack(payload)
        return cls(_enum(ControllerMode, mode, "ACK mode"), Fault(faults))


@dataclass(frozen=True)
class NackMsg:
    TYPE: ClassVar[MsgType] = MsgType.NACK
    reason: NackReason
    field: int = NO_FIELD
    mode: ControllerMode = ControllerMode.NOT_READY
    faults: Fault = Fault(0)

    def pack(self) -> bytes:
        return _pack(_NACK, int(self.reason), self.field, int(self.mode), int(self.faults), what="NACK")

    @classmethod
    def unpack(cls, payload: bytes) -> NackMsg:
        _expect_len("NACK", payload, 5)
        reason, field, mode, faults = _NACK.unpack(payload)
        return cls(_enum(NackReason, reason, "NACK reason"), field, _enum(ControllerMode, mode, "NACK mode"),
                   Fault(faults))


_E = TypeVar("_E", bound=enum.IntEnum)


def _enum(kind: type[_E], value: int, what: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        raise ProtocolError(f"{what}: unknown value {value}") from None


Message = Union[HelloMsg, CapabilitiesMsg, TargetMsg, HeartbeatMsg, HoldMsg, EstopMsg, StateMsg, AckMsg, NackMsg]
_BY_TYPE: dict[int, Any] = {
    cls.TYPE: cls
    for cls in (HelloMsg, CapabilitiesMsg, TargetMsg, HeartbeatMsg, HoldMsg, EstopMsg, StateMsg, AckMsg, NackMsg)
}


def encode(message: Message, seq: int) -> bytes:
    """Frame bytes for ``message`` with sequence number ``seq``."""
    return Frame(message.TYPE, seq, message.pack()).encode()


def decode(frame: Frame) -> Message:
    """The message carried by ``frame``; raises :class:`ProtocolError` on any mismatch."""
    if frame.version != VERSION:
        raise ProtocolError(f"frame version: expected {VERSION}, got {frame.version}")
    cls = _BY_TYPE.get(frame.type)
    if cls is None:
        raise ProtocolError(f"frame type: unknown type 0x{frame.type:02X}")
    message: Message = cls.unpack(frame.payload)
    return message


# ---- target checks (shared by controller and host) ------------------------------------------------


def target_violation(target: TargetMsg, caps: CapabilitiesMsg) -> tuple[NackReason, int] | None:
    """Why a controller with ``caps`` must refuse ``target``, as (reason, field index); None if valid."""
    if not caps.supports(target.mode):
        return NackReason.MODE_UNSUPPORTED, NO_FIELD
    if len(target.values) != caps.target_count(target.mode):
        return NackReason.MALFORMED, NO_FIELD
    for index, value in enumerate(target.values):
        if not math.isfinite(value):
            return NackReason.OUT_OF_LIMITS, index
    bad = _ee_violation(target.values, caps) if target.mode == TargetMode.EE else _joint_violation(target.values, caps)
    return None if bad is None else (NackReason.OUT_OF_LIMITS, bad)


def _joint_violation(values: tuple[float, ...], caps: CapabilitiesMsg) -> int | None:
    for index, (value, limit) in enumerate(zip(values, caps.joints)):
        if not limit.lower <= value <= limit.upper:
            return index
    for index in range(caps.n_joints, len(values)):
        if not 0.0 <= values[index] <= 1.0:
            return index
    return None


def _ee_violation(values: tuple[float, ...], caps: CapabilitiesMsg) -> int | None:
    for arm, box in enumerate(caps.workspaces):
        base = arm * EE_VALUES
        for axis in range(3):
            if not box.lower[axis] <= values[base + axis] <= box.upper[axis]:
                return base + axis
        if not 0.9 <= math.sqrt(sum(v * v for v in values[base + 3 : base + 7])) <= 1.1:
            return base + 6
        if not 0.0 <= values[base + 7] <= 1.0:
            return base + 7
    return None


_EE_NAMES = ("x", "y", "z", "qx", "qy", "qz", "qw", "gripper")


def describe_field(mode: TargetMode, index: int, caps: CapabilitiesMsg) -> str:
    """Name of TARGET value ``index``, e.g. ``'arm 1 z'`` or ``'joint 3'``."""
    if index == NO_FIELD:
        return "-"
    if mode == TargetMode.EE:
        return f"arm {index // EE_VALUES} {_EE_NAMES[index % EE_VALUES]}"
    if index < caps.n_joints:
        return f"joint {index}"
    return f"arm {index - caps.n_joints} gripper"
