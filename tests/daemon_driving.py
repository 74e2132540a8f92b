"""Driving a started :class:`~xvla_edge.daemon.service.Daemon` from a test: supervisor passes until a condition
holds (the daemon, operator and served-policy tests share these)."""

from __future__ import annotations

import time
from typing import Callable, Optional

from xvla_edge.daemon.service import Daemon


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
