"""One flash or rollback at a time per robot directory: ``DIR/.lock``, flock'ed; a second one is refused."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from xvla_edge.deploy.layout import LOCK, FlashError, check_robot


@contextmanager
def locked(robot: Path) -> Iterator[None]:
    """Hold ``DIR/.lock`` (or refuse) in a directory :func:`~xvla_edge.deploy.layout.check_robot` accepts;
    removes nothing."""
    check_robot(robot)
    try:
        fd = os.open(robot / LOCK, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise FlashError(f"{robot / LOCK}: cannot open the lock file ({exc.strerror or exc})") from None
    with os.fdopen(fd, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FlashError(f"{robot}: another flash or rollback is running (it holds {robot / LOCK})") from None
        yield
