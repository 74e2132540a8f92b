"""The ``current`` and ``previous`` links: the atomic switch of the active bundle.

- ``current`` only ever changes by ``os.replace`` of a new symlink over it: rename(2) is atomic on POSIX, so
  a reader (the daemon) sees the old bundle or the new one, never a missing or partial one.
- ``previous`` is repointed before ``current``, and put back if repointing ``current`` fails. Only a kill
  between those two renames leaves ``previous`` = ``current`` (the active bundle unchanged; rollback says so).
- The links are relative: the robot directory can move (e.g. to a new disk).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from xvla.files import remove_path
from xvla_edge.deploy.layout import CURRENT, PREVIOUS, STAGING


def switch(robot: Path, current: Path, previous: Optional[Path]) -> None:
    """Point ``previous`` then ``current`` (each atomically); ``previous`` is put back if ``current`` fails."""
    old_previous = os.readlink(robot / PREVIOUS) if (robot / PREVIOUS).is_symlink() else None
    if previous is not None:
        _point(robot, PREVIOUS, previous)
    try:
        _point(robot, CURRENT, current)
    except BaseException:
        if old_previous is not None:
            _point(robot, PREVIOUS, robot / old_previous)
        elif previous is not None:
            (robot / PREVIOUS).unlink()
        raise


def _point(robot: Path, link: str, target: Path) -> None:
    """Atomically make ``robot/link`` a relative symlink to ``target``: a new link renamed over the old."""
    tmp = robot / f"{STAGING}{os.getpid()}.{link}"
    remove_path(tmp)
    os.symlink(os.path.relpath(target, robot), tmp)
    try:
        os.replace(tmp, robot / link)
    except BaseException:
        tmp.unlink()
        raise
