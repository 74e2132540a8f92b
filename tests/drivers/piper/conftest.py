"""Fixtures of the Piper tests: connected arms on the emulator (tests/support/piper_bus.py)."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.support.piper_bus import emulated, fresh_channel


@pytest.fixture
def channel() -> str:
    return fresh_channel()


def _connected(space: str) -> Iterator[tuple]:
    emulator, clock, arm = emulated(fresh_channel(), space=space)
    arm.connect()
    yield emulator, clock, arm
    arm.close()
    emulator.close()


@pytest.fixture
def joint_arm() -> Iterator[tuple]:
    """A connected joint-space Piper on the emulator: (emulator, clock, arm)."""
    yield from _connected("joint")


@pytest.fixture
def ee_arm() -> Iterator[tuple]:
    """A connected end-effector Piper on the emulator: (emulator, clock, arm)."""
    yield from _connected("ee")
