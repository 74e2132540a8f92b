"""Fixtures of the daemon tests: the session's tiny bundle, an xvla-serial controller emulator on a pty, a
started daemon with its control socket, and robot.toml files written from text."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from drivers.xvla_serial import emulator
from xvla_edge.daemon.config import load_config
from xvla_edge.daemon.robot_toml import robot_toml
from xvla_edge.daemon.service import Daemon

from tests.support.daemon_driving import RATE_HZ


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


@pytest.fixture
def daemon(tmp_path, bundle, emu, request):
    """A started daemon on the emulator with its control socket (``daemon.sock``); a test may add robot.toml
    sections with ``@pytest.mark.robot(health={...})``."""
    sock_dir = Path(tempfile.mkdtemp(prefix="xvla-ctl-"))  # traversable by others, as /run/xvla-edge is
    sock_dir.chmod(0o755)
    sock = sock_dir / "ctl.sock"
    marker = request.node.get_closest_marker("robot")
    extra = dict(marker.kwargs) if marker else {}
    path = tmp_path / "robot.toml"
    path.write_text(robot_toml(bundle, emu.port, tmp_path / "recordings", cameras={"width": 96, "height": 64},
                               arm={"timeout_ms": 300}, control={"rate_hz": RATE_HZ, "realtime_priority": 0},
                               recorder={"seconds": 10}, operator={"socket": str(sock)}, **extra))
    d = Daemon(load_config(path))
    d.start()
    d.sock = sock
    yield d
    d.close()
    assert not sock.exists()  # removed on the way out
    sock_dir.rmdir()


@pytest.fixture
def write(tmp_path: Path):
    """A function writing robot.toml text to the test's directory; its path."""
    def write(text: str) -> Path:
        path = tmp_path / "robot.toml"
        path.write_text(text)
        return path

    return write
