"""The Piper tests' bus: a fresh python-can virtual channel per test, the emulated arm on it, and a virtual
clock that the driver itself advances (each reading moves it on and runs the emulator to the new time), so
timing checks are exact however loaded the machine is. ``NEEDS_CAN`` skips, by name, what needs python-can."""

from __future__ import annotations

import importlib.util
import itertools

import pytest

from drivers.piper.arm import PiperArm
from drivers.piper.emulator import PiperConfig, VirtualBusEmulator

NEEDS_CAN = pytest.mark.skipif(importlib.util.find_spec("can") is None,
                               reason="python-can (the [piper] extra) is not installed")
_CHANNELS = itertools.count()


def fresh_channel() -> str:
    """A virtual CAN channel nothing else in this process uses."""
    return f"piper-test-{next(_CHANNELS)}"


class SteppedClock:
    """A clock on which every reading is ``step`` seconds after the last; the emulator runs to each reading."""

    def __init__(self, emulator: VirtualBusEmulator, now: float, step: float = 0.0005) -> None:
        self.emulator, self.now, self.step = emulator, now, step

    def __call__(self) -> float:
        self.now += self.step
        self.emulator.pump(self.now)
        return self.now

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass with the driver idle (the emulator runs every millisecond)."""
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + 0.001)
            self.emulator.pump(self.now)


def emulated(channel: str, config: PiperConfig = PiperConfig(), step: float = 0.0005, **arm_options: object):
    """(emulator, clock, arm) on ``channel``, the arm not connected yet; ``step``: the clock's (a driver waiting
    for frames that do not come waits 5 ms of real time per reading: larger steps make such tests quicker)."""
    emulator = VirtualBusEmulator(channel, config, now=1000.0)
    clock = SteppedClock(emulator, 1000.0, step)
    arm = PiperArm(channel, interface="virtual", clock=clock, **arm_options)  # type: ignore[arg-type]
    return emulator, clock, arm
