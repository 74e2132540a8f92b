"""A Dynamixel Protocol 2.0 bus on pyserial: ping, read, write, sync read, sync write, reboot.

Why pyserial and not the vendor DynamixelSDK: the SDK opens its port with ``serial.Serial(name)``, so
it cannot use pyserial URL handlers (``loop://``, ``socket://``, ``spy://`` for field hex dumps) or be
pointed at an emulator without patching, and dynamixel-sdk 4.x changed its API (LeRobot pins
``<3.9``). Protocol 2.0 is small enough (:mod:`.protocol`) to own outright.

Errors: :class:`DynamixelLinkError` (a ``ConnectionError``) when no valid status packet arrives
after the retries or the port fails; :class:`ServoError` when a servo answers with an error status.
Hardware alerts (status error bit 7) do not fail a transaction: the motor ids collect in
:attr:`Bus.alerts` until the caller reads Hardware_Error_Status and clears them.
The servos must keep Status_Return_Level = 2 (the default) so that writes are answered.

For a control tick that must not wait, :meth:`Bus.request_sync_read` sends a sync read (optionally after a
sync write, in one write) and returns a :class:`PendingRead`; :meth:`Bus.collect` adds the statuses that have
arrived without waiting and :meth:`Bus.result` checks them once all are in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import serial

from drivers.transport import Transport
from drivers.dynamixel import protocol as p
from drivers.dynamixel.tables import FIRMWARE_VERSION, MODEL_NUMBER, Register


class DynamixelLinkError(p.DynamixelError, ConnectionError):
    """No valid reply (after retries), or the serial port failed."""


class ServoError(p.DynamixelError, RuntimeError):
    """A servo answered with an error status; ``status`` holds the packet."""

    def __init__(self, message: str, status: p.Status) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class PendingRead:
    """A sync read sent by :meth:`Bus.request_sync_read` whose statuses :meth:`Bus.collect` gathers."""

    address: int
    length: int | None  # data bytes per status; statuses of another length are stale replies, skipped
    motor_ids: list[int]
    what: str
    statuses: dict[int, p.Status] = field(default_factory=dict)
    parser: p.PacketParser = field(default_factory=p.PacketParser)

    @property
    def complete(self) -> bool:
        return len(self.statuses) == len(self.motor_ids)


def sync_write_packet(reg: Register, values: dict[int, int]) -> p.Packet:
    """The Sync Write instruction that broadcasts ``values`` to ``reg``."""
    return p.sync_write(reg.address, reg.size, {i: reg.encode(v) for i, v in values.items()})


class Bus:
    """One half-duplex Dynamixel bus; use as a context manager or call :meth:`open`/:meth:`close`."""

    def __init__(self, port: str, *, baudrate: int = 1_000_000, timeout_s: float = 0.05, retries: int = 2) -> None:
        self.port = port
        self.baudrate = baudrate
        self.timeout_s = timeout_s
        self.retries = retries
        self.alerts: set[int] = set()
        self._link: Transport | None = None

    def open(self) -> None:
        if self._link is not None:
            return
        try:
            self._link = serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=0.002, write_timeout=0.5)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise DynamixelLinkError(f"cannot open Dynamixel bus {self.port!r} at {self.baudrate} baud: {exc}") from exc

    def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            try:
                link.close()
            except (serial.SerialException, OSError):
                pass

    def __enter__(self) -> Bus:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- instructions ----------------------------------------------------------------------------

    def ping(self, motor_id: int) -> tuple[int, int]:
        """(model number, firmware version) of ``motor_id``."""
        status = self._transact(p.ping(motor_id), [motor_id], f"ping motor {motor_id}")[motor_id]
        if len(status.data) != 3:
            raise DynamixelLinkError(f"ping motor {motor_id}: expected 3 data bytes, got {len(status.data)}")
        return MODEL_NUMBER.decode(status.data[:2]), FIRMWARE_VERSION.decode(status.data[2:])

    def read(self, motor_id: int, reg: Register) -> int:
        return reg.decode(self.read_bytes(motor_id, reg.address, reg.size, name=reg.name))

    def write(self, motor_id: int, reg: Register, value: int) -> None:
        what = f"write {reg.name} ({reg.address}) = {value} to motor {motor_id}"
        self._transact(p.write(motor_id, reg.address, reg.encode(value)), [motor_id], what)

    def sync_read(self, reg: Register, motor_ids: list[int]) -> dict[int, int]:
        raw = self.sync_read_bytes(reg.address, reg.size, motor_ids, name=reg.name)
        return {motor_id: reg.decode(data) for motor_id, data in raw.items()}

    def sync_write(self, reg: Register, values: dict[int, int]) -> None:
        """Broadcast ``values`` to ``reg``; servos do not answer a sync write."""
        what = f"sync write {reg.name} ({reg.address}) to motors {list(values)}"
        self._write(sync_write_packet(reg, values).encode(), what)

    def reboot(self, motor_id: int) -> None:
        self._transact(p.reboot(motor_id), [motor_id], f"reboot motor {motor_id}")

    def read_bytes(self, motor_id: int, address: int, length: int, *, name: str = "") -> bytes:
        what = f"read {name or 'address'} ({address}, {length} bytes) from motor {motor_id}"
        status = self._transact(p.read(motor_id, address, length), [motor_id], what)[motor_id]
        _check_length(status, length, what)
        return status.data

    def sync_read_bytes(self, address: int, length: int, motor_ids: list[int], *, name: str = "") -> dict[int, bytes]:
        what = f"sync read {name or 'address'} ({address}, {length} bytes) from motors {motor_ids}"
        statuses = self._transact(p.sync_read(address, length, motor_ids), motor_ids, what)
        for status in statuses.values():
            _check_length(status, length, what)
        return {motor_id: statuses[motor_id].data for motor_id in motor_ids}

    def request_sync_read(
        self, address: int, length: int, motor_ids: list[int], *, name: str = "", after: p.Packet | None = None
    ) -> PendingRead:
        """Send a sync read (preceded by ``after``, e.g. a goal sync write, in the same write) without waiting
        for its statuses; bytes left in the input buffer are dropped first."""
        pending = PendingRead(address, length, list(motor_ids),
                              f"sync read {name or 'address'} ({address}, {length} bytes) from motors {motor_ids}")
        self._io(self._link_or_raise(pending.what).reset_input_buffer)
        head = after.encode() if after is not None else b""
        self._write(head + p.sync_read(address, length, motor_ids).encode(), pending.what)
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
            for packet in pending.parser.feed(self._io(lambda: link.read(max(1, waiting)))):
                if packet.instruction != p.Instruction.STATUS or packet.id not in wanted or not packet.params:
                    continue  # our own echo on a half-duplex adapter, or a stray packet
                status = p.Status.from_packet(packet)
                if pending.length is not None and not status.result and len(status.data) != pending.length:
                    continue  # a late reply to an earlier read
                pending.statuses.setdefault(status.id, status)
                if status.alert:
                    self.alerts.add(status.id)

    def result(self, pending: PendingRead) -> dict[int, bytes] | None:
        """The data of a complete ``pending`` read; None while statuses are missing or a servo got a corrupted
        instruction (CRC_ERROR). Raises :class:`ServoError` for another error status."""
        if not pending.complete or any(s.result == p.ResultError.CRC_ERROR for s in pending.statuses.values()):
            return None
        for status in pending.statuses.values():
            if status.result:
                raise ServoError(f"{pending.what}: motor {status.id} answered {status.describe()}", status)
        return {motor_id: pending.statuses[motor_id].data for motor_id in pending.motor_ids}

    # ---- transport -------------------------------------------------------------------------------

    def _transact(self, packet: p.Packet, motor_ids: list[int], what: str) -> dict[int, p.Status]:
        """Send ``packet`` and collect one status per id, retrying the whole exchange on silence or CRC errors."""
        problem = ""
        for _ in range(self.retries + 1):
            self._io(self._link_or_raise(what).reset_input_buffer)
            self._write(packet.encode(), what)
            pending = PendingRead(address=0, length=None, motor_ids=motor_ids, what=what)  # any status
            self.collect(pending, wait_s=self.timeout_s)
            statuses = pending.statuses
            retry = [s for s in statuses.values() if s.result == p.ResultError.CRC_ERROR]
            missing = [i for i in motor_ids if i not in statuses]
            if not missing and not retry:
                for status in statuses.values():
                    if status.result:
                        raise ServoError(f"{what}: motor {status.id} answered {status.describe()}", status)
                return statuses
            problem = (
                f"no status packet from motor(s) {missing} within {self.timeout_s * 1000:.0f} ms"
                if missing
                else f"motor(s) {[s.id for s in retry]} received a corrupted instruction (CRC_ERROR)"
            )
        raise DynamixelLinkError(f"{what} on {self.port}: failed after {self.retries + 1} tries: {problem}")

    def _write(self, data: bytes, what: str) -> None:
        link = self._link_or_raise(what)
        self._io(lambda: link.write(data))

    def _link_or_raise(self, what: str) -> Transport:
        if self._link is None:
            raise DynamixelLinkError(f"{what}: bus {self.port!r} is not open. Run `.open()` first.")
        return self._link

    def _io(self, op: Callable[[], Any]) -> Any:
        try:
            return op()
        except (serial.SerialException, OSError) as exc:
            raise DynamixelLinkError(f"Dynamixel bus {self.port}: serial I/O failed: {exc}") from exc


def _check_length(status: p.Status, length: int, what: str) -> None:
    if len(status.data) != length:
        raise DynamixelLinkError(f"{what}: motor {status.id} returned {len(status.data)} data bytes, expected {length}")
