"""Write a directory atomically: build it under a temporary name beside its target, rename it into place.

The same pattern as :mod:`export.bundle` (which cannot be imported here without torch, and ``calibrate
capture`` runs on robot computers): a failure or Ctrl-C leaves the target as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from calibration.errors import CalibrationError


def check_target(out: Path, force: bool) -> None:
    """Refuse, before any work, a target that cannot be written."""
    if out.exists() and not force:
        raise CalibrationError(f"{out} already exists; pass --force to replace it (the old one is kept until the "
                               "new one is complete)")
    if not out.parent.is_dir():
        raise CalibrationError(f"cannot write {out}: {out.parent} is not an existing directory")
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise CalibrationError(f"cannot write {out}: no write permission in {out.parent}")


@contextlib.contextmanager
def atomic_directory(out: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory; when the block ends without error it becomes ``out``."""
    out = Path(out)
    check_target(out, force)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
