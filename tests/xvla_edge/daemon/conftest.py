"""Fixtures of the daemon tests: the session's tiny bundle and an xvla-serial controller emulator on a pty."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.xvla_serial import emulator


@pytest.fixture(scope="module")
def bundle(tiny_bundle) -> Path:
    """The session's tiny bundle (domain 3, one view); the daemon only reads it."""
    return tiny_bundle


@pytest.fixture
def emu():
    """A one-arm controller emulator in its own process, stopped after the test."""
    process = emulator.start(emulator.ControllerConfig(n_arms=1), seed=3)
    yield process
    process.stop()
