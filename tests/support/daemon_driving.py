"""Driving a started :class:`~xvla_edge.daemon.service.Daemon` from a test: supervisor passes until a condition
holds (the daemon, operator and served-policy tests share these)."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from typing import Callable, Optional

from xvla_edge.daemon.control import send
from xvla_edge.daemon.service import Daemon

RATE_HZ = 100  # the control rate of the operator tests' daemons


def drive(daemon: Daemon, seconds: float, until: Optional[Callable[[Daemon], bool]] = None) -> bool:
    """Run supervisor passes for up to ``seconds``; True as soon as ``until(daemon)`` holds (no ``until``: True)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        daemon.step()
        if until is not None and until(daemon):
            return True
        time.sleep(0.02)
    return until is None


def accepted(daemon: Daemon) -> int:
    """Chunks the control loop has taken so far."""
    return daemon.stats.events.get("chunk_accepted", 0)


def ctl(daemon: Daemon, command: str, **args: object) -> dict:
    """One command over the daemon's control socket (``daemon.sock``); its reply."""
    return send(daemon.sock, {"command": command, **args})


def http(url: str, data: Optional[dict] = None, token: Optional[str] = None,
         headers: Optional[dict] = None) -> tuple[int, bytes, str]:
    """(status, body, content type) of a GET (``data`` None) or a JSON POST to ``url``."""
    sent = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {}),
            **(headers or {})}
    request = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode(), headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
