"""The suite's tiers, as a pytest plugin: the ``server``, ``subprocess`` and ``model`` markers, marking by
fixture, and a guard that fails a test outside ``server``/``subprocess`` the moment it starts a process or
listens on a socket.

``make quick`` runs ``-m`` :data:`QUICK`; ``make test`` runs everything. A test that starts a process (a CLI, a daemon, an emulator on a pty, a control-loop child) is marked
``subprocess``, one that listens on a port or socket (uvicorn, Ray, sshd, Chromium, an in-process HTTP server)
``server``, one that exports a bundle or runs a network (seconds to a minute each, even at the tiny size)
``model``: by a ``pytestmark`` line, a decorator, or by requesting (directly or through another fixture) a
fixture named in :data:`FIXTURE_MARKS`.
"""

from __future__ import annotations

import multiprocessing.process
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

MARKERS = {
    "server": "listens on a port or socket: uvicorn, Ray, sshd, Chromium, an in-process HTTP server",
    "subprocess": "starts another process: the CLI, a daemon, an emulator on a pty, a control-loop child",
    "model": "exports a bundle or runs a network (tiny random-weight configs): seconds to a minute each",
}
QUICK = "not server and not subprocess and not model and not slow"  # `make quick`'s selection
GUARDED = ("server", "subprocess")  # a test outside these may neither start a process nor listen
FIXTURE_MARKS = {  # fixtures that start processes or servers: a test requesting one is marked for it
    "daemon": "subprocess",  # tests/xvla_edge/daemon: the daemon, its control-loop child, the emulator
    "emu": "subprocess",  # an emulator process on a pty
    "server": "server",  # tests/xvla_edge/serve: the policy server on uvicorn in a thread
    "spawn_server": "server",  # tests/xvla_edge/serve: `xvla-edge serve` in its own process
    "fleet": "server",  # tests/xvla_edge/serve/test_ray_serve.py: Ray Serve
    "sshd": "server",  # tests/xvla_edge/deploy/fleet: a real sshd on a loopback port
    "ssh_options": "server",
    "robots": "server",
    "tiny_checkpoint": "model",  # tests/conftest.py: a checkpoint written by torch, and what is exported from it
    "tiny_bundle": "model",
    "tiny_batch_bundle": "model",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    _warm_font_cache()


def _warm_font_cache() -> None:
    """matplotlib builds its font cache once per machine, running ``fc-list``: build it here, before any guard,
    so that on a fresh machine the first test that draws a plot is not blamed for starting a process."""
    try:
        import matplotlib.font_manager  # noqa: F401 - imported for its side effect
    except ImportError:  # the torch-free robot environment has no matplotlib
        pass


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            if fixture in FIXTURE_MARKS:
                item.add_marker(FIXTURE_MARKS[fixture])


def _unguarded(item: pytest.Item) -> bool:
    return not any(item.get_closest_marker(name) for name in (*GUARDED, "slow"))


@contextmanager
def _guarded(item: pytest.Item) -> Iterator[list[str]]:
    """Within: starting a process or listening on a socket records what happened and fails the test."""
    seen: list[str] = []

    def refuse(what: str, marker: str) -> Any:
        def refused(*args: Any, **kwargs: Any) -> Any:
            seen.append(f"{item.nodeid} {what} but is not marked `{marker}` (tests/support/tiers.py)")
            pytest.fail(seen[-1], pytrace=False)
        return refused

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(subprocess.Popen, "_execute_child", refuse("starts a process", "subprocess"))
        mp.setattr(multiprocessing.process.BaseProcess, "start", refuse("starts a process", "subprocess"))
        mp.setattr(socket.socket, "listen", refuse("listens on a socket", "server"))
        yield seen


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    return (yield from _phase(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    return (yield from _phase(item))


def _phase(item: pytest.Item) -> Iterator[None]:
    if not _unguarded(item):
        return (yield)
    with _guarded(item) as seen:
        result = yield
    if seen:  # refused in a thread, or the refusal was caught: fail the test all the same
        pytest.fail(seen[0], pytrace=False)
    return result
