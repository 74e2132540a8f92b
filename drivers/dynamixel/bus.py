"""A Dynamixel Protocol 2.0 bus: :class:`~drivers.serial_bus.SerialBus` with this protocol's hooks, plus reboot.

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

from typing import Optional

from drivers.dynamixel import protocol as p
from drivers.dynamixel.tables import FIRMWARE_VERSION, MODEL_NUMBER
from drivers.serial_bus import BusLinkError, BusServoError, PendingRead, SerialBus

__all__ = ["Bus", "DynamixelLinkError", "PendingRead", "ServoError"]


class DynamixelLinkError(p.DynamixelError, BusLinkError):
    """No valid reply (after retries), or the serial port failed."""


class ServoError(p.DynamixelError, BusServoError):
    """A servo answered with an error status; ``status`` holds the packet."""


class Bus(SerialBus):
    """One half-duplex Dynamixel bus; use as a context manager or call :meth:`open`/:meth:`close`."""

    FAMILY = "Dynamixel"
    PROTOCOL = p
    LINK_ERROR = DynamixelLinkError
    SERVO_ERROR = ServoError
    RETRY_WORDS = "received a corrupted instruction (CRC_ERROR)"

    def __init__(self, port: str, *, baudrate: int = 1_000_000, timeout_s: float = 0.05, retries: int = 2) -> None:
        super().__init__(port, baudrate=baudrate, timeout_s=timeout_s, retries=retries)
        self.alerts: set[int] = set()

    def ping(self, motor_id: int) -> tuple[int, int]:
        """(model number, firmware version) of ``motor_id``."""
        status = self._transact(p.ping(motor_id).encode(), [motor_id], f"ping motor {motor_id}")[motor_id]
        if len(status.data) != 3:
            raise DynamixelLinkError(f"ping motor {motor_id}: expected 3 data bytes, got {len(status.data)}")
        return MODEL_NUMBER.decode(status.data[:2]), FIRMWARE_VERSION.decode(status.data[2:])

    def reboot(self, motor_id: int) -> None:
        self._transact(p.reboot(motor_id).encode(), [motor_id], f"reboot motor {motor_id}")

    # ---- Protocol 2.0 hooks ----------------------------------------------------------------------

    def _status(self, frame: p.Packet) -> Optional[p.Status]:
        if frame.instruction != p.Instruction.STATUS or not frame.params:
            return None
        return p.Status.from_packet(frame)

    def _retry(self, status: p.Status) -> bool:
        return status.result == p.ResultError.CRC_ERROR

    def _refusal(self, status: p.Status) -> str:
        return status.describe() if status.result else ""

    def _note(self, status: p.Status) -> None:
        if status.alert:
            self.alerts.add(status.id)
