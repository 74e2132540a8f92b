"""An emulated device behind an in-process stand-in for ``serial.Serial``, on a virtual clock.

What the pty emulators (:mod:`drivers.emulation.pty_emulator`) do across processes in real time, this does in the
caller's process in virtual time: the device (either protocol's emulator, a :class:`~drivers.emulation.pty_emulator.
Device`) is fed what the host writes, and its replies reach the input buffer ``latency_s`` after it sends
them, as time is advanced by whoever owns the :class:`VirtualClock`. A read asking for more bytes than have
arrived — what pyserial would wait for — is counted in :attr:`VirtualPort.blocking_reads` and costs the port's
``timeout_s`` on the clock, so "the control tick never waits" can be checked exactly, however loaded the
machine running the check is.
"""

from __future__ import annotations

from drivers.emulation.pty_emulator import Device


class VirtualClock:
    """A monotonic clock that moves only when told: ``clock()`` reads it, ``clock.now += dt`` moves it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class VirtualPort:
    """The part of ``serial.Serial`` the arms use (``in_waiting``, ``read``, ``write``, ``reset_input_buffer``,
    ``close``), wired to ``device``."""

    def __init__(self, device: Device, clock: VirtualClock, *, timeout_s: float, latency_s: float = 0.0) -> None:
        self.device, self.clock, self.timeout_s, self.latency_s = device, clock, timeout_s, latency_s
        self.rx = bytearray()
        self.blocking_reads = 0

    def _deliver(self) -> None:
        now = self.clock()
        self.device.tick(now)
        while self.device.outbox and self.device.outbox[0][0] + self.latency_s <= now:
            self.rx += self.device.outbox.pop(0)[1]

    @property
    def in_waiting(self) -> int:
        self._deliver()
        return len(self.rx)

    def read(self, size: int = 1) -> bytes:
        self._deliver()
        if size > len(self.rx):  # a real port waits for the missing bytes, up to its timeout
            self.blocking_reads += 1
            self.clock.now += self.timeout_s
            self._deliver()
        data, self.rx = bytes(self.rx[:size]), self.rx[size:]
        return data

    def write(self, data: bytes) -> int:
        self.device.feed(data, self.clock())
        return len(data)

    def reset_input_buffer(self) -> None:
        self._deliver()
        self.rx.clear()

    def close(self) -> None:
        pass
