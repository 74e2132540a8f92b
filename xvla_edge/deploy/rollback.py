"""Make the previous bundle active again (``xvla-edge rollback``): ``current`` and ``previous`` trade places."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from runtime.manifest import BundleError
from xvla_edge.deploy import links
from xvla_edge.deploy.install import verify
from xvla_edge.deploy.layout import CURRENT, PREVIOUS, FlashError, active_bundle, linked_bundle
from xvla_edge.deploy.lock import locked
from xvla_edge.deploy.settle import settle


def rollback(robot_dir: str | Path, *, say: Callable[[str], None] = print) -> Path:
    """Make ``previous`` the active bundle and the active one ``previous``; returns the now active bundle."""
    robot = Path(robot_dir)
    if not robot.is_dir():
        raise FlashError(f"{robot}: no such directory (expected a robot bundle directory made by `xvla-edge flash`)")
    with locked(robot):
        current, previous = active_bundle(robot), linked_bundle(robot, PREVIOUS)
        if previous == current:
            raise FlashError(f"{robot / PREVIOUS} and {robot / CURRENT} both point at {current} (a flash was "
                             "killed between its two link updates): nothing to roll back to")
        try:
            verify(previous)
        except BundleError as exc:
            raise FlashError(f"{robot / PREVIOUS} -> {previous} fails its checksums, not switching: {exc}") from None
        links.switch(robot, previous, current)
        settle(robot, say, "rollback", previous, current)
    say(f"rolled back to {previous.name} (previous: {current.name})")
    return previous
