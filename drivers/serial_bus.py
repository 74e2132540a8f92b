"""The half-duplex servo bus that the Dynamixel and Feetech families share: one base, the protocol as hooks.

A servo bus is one serial line on which the host sends an instruction packet and the addressed servos answer
with status packets, one after the other. What differs between the families is small: how packets are built
and parsed, which status means "send it again" or "refused", and what a status reports about the servo's
hardware. :class:`SerialBus` holds everything else once: opening the port with pyserial (so URLs such as
``loop://``, ``socket://`` and ``spy://`` work, and emulators on a pty), ping/read/write/sync read/sync write
with retries, and the pipelined sync read of a control tick that never waits (:meth:`SerialBus.request_sync_read`,
:meth:`SerialBus.collect`, :meth:`SerialBus.result`). A family subclasses it, names its ``PROTOCOL`` module (its
packet builders and parser, see :class:`FamilyProtocol`), fills in the hooks (:meth:`SerialBus._status`,
:meth:`SerialBus._retry`, :meth:`SerialBus._refusal`, :meth:`SerialBus._note`) and names its error classes.

:class:`Register` is a control-table entry of either family: little-endian, unsigned, two's complement
(``signed``) or sign-magnitude (``sign_bit``: the bit that carries the sign, as Feetech's registers do).
:class:`Status` is a status packet of either family, :func:`sync_write_blocks` the body their Sync Writes share.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional, Protocol

import serial

from drivers.errors import ArmError
from drivers.stream_parser import StreamParser
from drivers.transport import Transport


class BusLinkError(ArmError, ConnectionError):
    """No valid reply (after retries), or the serial port failed."""


class BusServoError(ArmError, RuntimeError):
    """A servo answered with a status that refuses the instruction; ``status`` holds it."""

    def __init__(self, message: str, status: Any) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Status:
    """A status packet: the servo's id, its error byte and the returned data. A family subclasses it with the
    conversions from and to its packets (``from_packet``, ``to_packet``) and what its error byte means."""

    id: int
    error: int
    data: bytes = b""


class Packet(Protocol):
    """What the base does with a family's instruction packet: send its bytes."""

    def encode(self) -> bytes: ...


class FamilyProtocol(Protocol):
    """A family's protocol module, as the base uses it: the packet parser and the instruction builders."""

    PacketParser: Callable[[], StreamParser[Any]]

    def read(self, motor_id: int, address: int, length: int) -> Packet: ...

    def write(self, motor_id: int, address: int, data: bytes) -> Packet: ...

    def sync_read(self, address: int, length: int, motor_ids: list[int]) -> Packet: ...

    def sync_write(self, address: int, length: int, data: dict[int, bytes]) -> Packet: ...


@dataclass(frozen=True)
class Register:
    """One control-table entry: ``size`` bytes, little-endian; ``signed``: two's complement; ``sign_bit``: sign-
    magnitude with the sign in that bit (the magnitude in the bits below it)."""

    name: str
    address: int
    size: int
    writable: bool = True
    signed: bool = False
    sign_bit: Optional[int] = None

    def encode(self, value: int) -> bytes:
        """Little-endian bytes for ``value``; raises ``ValueError`` naming the register if it does not fit."""
        value = int(value)
        if self.sign_bit is not None:
            if abs(value) >= 1 << self.sign_bit:
                raise ValueError(f"{self.name}: {value} does not fit in {self.sign_bit} bits and a sign bit")
            return ((abs(value) | (1 << self.sign_bit)) if value < 0 else value).to_bytes(self.size, "little")
        try:
            return value.to_bytes(self.size, "little", signed=self.signed)
        except OverflowError:
            kind = "signed" if self.signed else "unsigned"
            raise ValueError(f"{self.name}: {value} does not fit in {self.size} {kind} byte(s)") from None

    def decode(self, data: bytes) -> int:
        if len(data) != self.size:
            raise ValueError(f"{self.name}: expected {self.size} byte(s), got {len(data)}")
        if self.sign_bit is not None:
            raw = int.from_bytes(data, "little")
            magnitude = raw & ((1 << self.sign_bit) - 1)
            return -magnitude if raw >> self.sign_bit & 1 else magnitude
        return int.from_bytes(data, "little", signed=self.signed)


@dataclass
class PendingRead:
    """A sync read sent by :meth:`SerialBus.request_sync_read` whose statuses :meth:`SerialBus.collect` gathers."""

    address: int
    length: Optional[int]  # data bytes per status; statuses of another length are stale replies, skipped
    motor_ids: list[int]
    what: str
    parser: StreamParser[Any]
    statuses: dict[int, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return len(self.statuses) == len(self.motor_ids)


class SerialBus(abc.ABC):
    """One half-duplex servo bus; use as a context manager or call :meth:`open`/:meth:`close`.

    ``FAMILY`` names the servos in messages; ``PROTOCOL`` is the family's protocol module; ``LINK_ERROR`` and
    ``SERVO_ERROR`` are the family's subclasses of :class:`BusLinkError` and :class:`BusServoError`;
    ``RETRY_WORDS`` says what a status asking for a retry means.
    """

    FAMILY: ClassVar[str]
    PROTOCOL: ClassVar[FamilyProtocol]
    LINK_ERROR: ClassVar[type[BusLinkError]] = BusLinkError
    SERVO_ERROR: ClassVar[type[BusServoError]] = BusServoError
    RETRY_WORDS: ClassVar[str] = "asked for the instruction again"

    def __init__(self, port: str, *, baudrate: int = 1_000_000, timeout_s: float = 0.05, retries: int = 2) -> None:
        self.port = port
        self.baudrate = baudrate
        self.timeout_s = timeout_s
        self.retries = retries
        self._link: Optional[Transport] = None

    # ---- the protocol's hooks ------------------------------------------------------------------------

    @abc.abstractmethod
    def _status(self, frame: Any) -> Optional[Status]:
        """The servo status in a parsed ``frame``, or None (an echo of an instruction, a stray packet)."""

    def _retry(self, status: Status) -> bool:
        """Whether ``status`` says the servo got a corrupted instruction (the exchange is repeated)."""
        return False

    def _refusal(self, status: Status) -> str:
        """Why ``status`` refuses the instruction (raised as ``SERVO_ERROR``), or "" when it does not."""
        return ""

    def _note(self, status: Status) -> None:
        """See every status taken (a family records hardware alerts here)."""

    # ---- packets, from the family's protocol module ------------------------------------------------

    def _parser(self) -> StreamParser[Any]:
        """A fresh streaming parser of the packets on this bus."""
        return self.PROTOCOL.PacketParser()

    def _read_packet(self, motor_id: int, address: int, length: int) -> bytes:
        return self.PROTOCOL.read(motor_id, address, length).encode()

    def _write_packet(self, motor_id: int, address: int, data: bytes) -> bytes:
        return self.PROTOCOL.write(motor_id, address, data).encode()

    def _sync_read_packet(self, address: int, length: int, motor_ids: list[int]) -> bytes:
        return self.PROTOCOL.sync_read(address, length, motor_ids).encode()

    def _sync_write_packet(self, address: int, length: int, data: dict[int, bytes]) -> bytes:
        return self.PROTOCOL.sync_write(address, length, data).encode()

    # ---- port ------------------------------------------------------------------------------------

    def open(self) -> None:
        if self._link is not None:
            return
        try:
            self._link = serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=0.002, write_timeout=0.5)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise self.LINK_ERROR(f"cannot open {self.FAMILY} bus {self.port!r} at {self.baudrate} baud: {exc}") \
                from exc

    def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            try:
                link.close()
            except (serial.SerialException, OSError):
                pass

    @property
    def is_open(self) -> bool:
        return self._link is not None

    def __enter__(self) -> SerialBus:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- instructions ----------------------------------------------------------------------------

    def read(self, motor_id: int, reg: Register) -> int:
        return reg.decode(self.read_bytes(motor_id, reg.address, reg.size, name=reg.name))

    def write(self, motor_id: int, reg: Register, value: int) -> None:
        what = f"write {reg.name} ({reg.address}) = {value} to motor {motor_id}"
        self._transact(self._write_packet(motor_id, reg.address, reg.encode(value)), [motor_id], what)

    def sync_read(self, reg: Register, motor_ids: list[int]) -> dict[int, int]:
        raw = self.sync_read_bytes(reg.address, reg.size, motor_ids, name=reg.name)
        return {motor_id: reg.decode(data) for motor_id, data in raw.items()}

    def sync_write(self, reg: Register, values: dict[int, int]) -> None:
        """Broadcast ``values`` to ``reg``; servos do not answer a sync write."""
        what = f"sync write {reg.name} ({reg.address}) to motors {list(values)}"
        self._write(self.sync_write_packet(reg, values), what)

    def sync_write_packet(self, reg: Register, values: dict[int, int]) -> bytes:
        """The Sync Write instruction that broadcasts ``values`` to ``reg``, as bytes on the wire."""
        return self._sync_write_packet(reg.address, reg.size, {i: reg.encode(v) for i, v in values.items()})

    def read_bytes(self, motor_id: int, address: int, length: int, *, name: str = "") -> bytes:
        what = f"read {name or 'address'} ({address}, {length} bytes) from motor {motor_id}"
        status = self._transact(self._read_packet(motor_id, address, length), [motor_id], what)[motor_id]
        self._check_length(status, length, what)
        return status.data

    def sync_read_bytes(self, address: int, length: int, motor_ids: list[int], *, name: str = "") -> dict[int, bytes]:
        what = f"sync read {name or 'address'} ({address}, {length} bytes) from motors {motor_ids}"
        statuses = self._transact(self._sync_read_packet(address, length, motor_ids), motor_ids, what)
        for status in statuses.values():
            self._check_length(status, length, what)
        return {motor_id: statuses[motor_id].data for motor_id in motor_ids}

    def request_sync_read(
        self, address: int, length: int, motor_ids: list[int], *, name: str = "", after: bytes = b""
    ) -> PendingRead:
        """Send a sync read (preceded by ``after``, e.g. a goal sync write, in the same write) without waiting
        for its statuses; bytes left in the input buffer are dropped first."""
        pending = PendingRead(address, length, list(motor_ids),
                              f"sync read {name or 'address'} ({address}, {length} bytes) from motors {motor_ids}",
                              self._parser())
        self._io(self._link_or_raise(pending.what).reset_input_buffer)
        self._write(after + self._sync_read_packet(address, length, motor_ids), pending.what)
        return pending

    def collect(self, pending: PendingRead, *, wait_s: float = 0.0) -> None:
        """Add the statuses of ``pending`` that have arrived; waits up to ``wait_s`` for the rest (0: never)."""
        link = self._link_or_raise(pending.what)
        deadline = time.monotonic() + wait_s
        wanted = set(pending.motor_ids)
        while not pending.complete:
            waiting = self._io(lambda: link.in_waiting)
            if not waiting and time.monotonic() >= deadline:
                return
            for frame in pending.parser.feed(self._io(lambda: link.read(max(1, waiting)))):
                status = self._status(frame)
                if status is None or status.id not in wanted:
                    continue  # our own echo on a half-duplex adapter, or a stray packet
                failed = self._retry(status) or self._refusal(status)
                if pending.length is not None and not failed and len(status.data) != pending.length:
                    continue  # a late reply to an earlier read
                pending.statuses.setdefault(status.id, status)
                self._note(status)

    def result(self, pending: PendingRead) -> Optional[dict[int, bytes]]:
        """The data of a complete ``pending`` read; None while statuses are missing or a servo asks for the
        instruction again. Raises ``SERVO_ERROR`` for a status that refuses it."""
        if not pending.complete or any(self._retry(s) for s in pending.statuses.values()):
            return None
        self._raise_refusals(pending.statuses, pending.what)
        return {motor_id: pending.statuses[motor_id].data for motor_id in pending.motor_ids}

    # ---- transport -------------------------------------------------------------------------------

    def _transact(self, packet: bytes, motor_ids: list[int], what: str) -> dict[int, Any]:
        """Send ``packet`` and collect one status per id, retrying the whole exchange on silence or a retry status."""
        problem = ""
        for _ in range(self.retries + 1):
            self._io(self._link_or_raise(what).reset_input_buffer)
            self._write(packet, what)
            pending = PendingRead(address=0, length=None, motor_ids=motor_ids, what=what, parser=self._parser())
            self.collect(pending, wait_s=self.timeout_s)
            statuses = pending.statuses
            retry = [s.id for s in statuses.values() if self._retry(s)]
            missing = [i for i in motor_ids if i not in statuses]
            if not missing and not retry:
                self._raise_refusals(statuses, what)
                return statuses
            problem = (f"no status packet from motor(s) {missing} within {self.timeout_s * 1000:.0f} ms" if missing
                       else f"motor(s) {retry} {self.RETRY_WORDS}")
        raise self.LINK_ERROR(f"{what} on {self.port}: failed after {self.retries + 1} tries: {problem}")

    def _raise_refusals(self, statuses: dict[int, Any], what: str) -> None:
        for status in statuses.values():
            why = self._refusal(status)
            if why:
                raise self.SERVO_ERROR(f"{what}: motor {status.id} answered {why}", status)

    def _check_length(self, status: Status, length: int, what: str) -> None:
        if len(status.data) != length:
            raise self.LINK_ERROR(f"{what}: motor {status.id} returned {len(status.data)} data bytes, expected "
                                  f"{length}")

    def _write(self, data: bytes, what: str) -> None:
        link = self._link_or_raise(what)
        self._io(lambda: link.write(data))

    def _link_or_raise(self, what: str) -> Transport:
        if self._link is None:
            raise self.LINK_ERROR(f"{what}: bus {self.port!r} is not open. Run `.open()` first.")
        return self._link

    def _io(self, op: Callable[[], Any]) -> Any:
        try:
            return op()
        except (serial.SerialException, OSError) as exc:
            raise self.LINK_ERROR(f"{self.FAMILY} bus {self.port}: serial I/O failed: {exc}") from exc


def sync_write_blocks(length: int, data: dict[int, bytes], error: Callable[[str], Exception],
                      motor_id: Callable[[int], int] = int) -> bytes:
    """The blocks of a Sync Write: each motor's id (checked by ``motor_id``) and then its ``length`` data bytes;
    raises ``error(message)`` for data of another length."""
    blocks = bytearray()
    for i, value in data.items():
        if len(value) != length:
            raise error(f"sync write to id {i}: expected {length} data bytes, got {len(value)}")
        blocks.append(motor_id(i))
        blocks += value
    return bytes(blocks)
