"""A Feetech STS bus: :class:`~drivers.serial_bus.SerialBus` with Feetech's protocol as its hooks.

Why our own code and not the vendor SDK (``scservo_sdk``, which the tests use as the oracle of the bytes): the SDK
opens its port with ``serial.Serial(name)``, so it cannot use pyserial URLs or the tick's non-blocking pipelined
read; its packet timeout needs patching (LeRobot does so); and its module-level endianness switch is global to
the process. The protocol (:mod:`.protocol`) is small enough to own.

A Feetech status carries the servo's hardware conditions in its error byte (:class:`~.protocol.ErrorBit`) and its
data all the same: no status refuses an instruction, none asks for a retry. The bits of each servo's newest
status collect in :attr:`FeetechBus.errors`. The servos must answer writes (Response_Status_Level 1, the default)
for :meth:`FeetechBus.write` to be confirmed.
"""

from __future__ import annotations

from typing import Optional

from drivers.feetech import protocol as p
from drivers.feetech.tables import MODEL_NUMBER
from drivers.serial_bus import BusLinkError, PendingRead, SerialBus

__all__ = ["FeetechBus", "FeetechLinkError", "PendingRead"]


class FeetechLinkError(p.FeetechError, BusLinkError):
    """No valid reply (after retries), or the serial port failed."""


class FeetechBus(SerialBus):
    """One half-duplex Feetech bus; use as a context manager or call :meth:`open`/:meth:`close`."""

    FAMILY = "Feetech"
    PROTOCOL = p
    LINK_ERROR = FeetechLinkError

    def __init__(self, port: str, *, baudrate: int = 1_000_000, timeout_s: float = 0.05, retries: int = 2) -> None:
        super().__init__(port, baudrate=baudrate, timeout_s=timeout_s, retries=retries)
        self.errors: dict[int, int] = {}  # motor id → error bits of its newest status

    def ping(self, motor_id: int) -> int:
        """Ping ``motor_id`` and return its model number (read after the ping, as the vendor's SDK does)."""
        self._transact(p.ping(motor_id).encode(), [motor_id], f"ping motor {motor_id}")
        return self.read(motor_id, MODEL_NUMBER)

    # ---- protocol hooks --------------------------------------------------------------------------

    def _status(self, frame: p.Packet) -> Optional[p.Status]:
        if frame.id == p.BROADCAST_ID or frame.code & 0x80:
            return None  # an instruction (a broadcast, or a sync instruction's code), not a servo's status
        return p.Status.from_packet(frame)

    def _note(self, status: p.Status) -> None:
        self.errors[status.id] = status.error
