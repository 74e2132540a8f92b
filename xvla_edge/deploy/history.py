"""``DIR/history.jsonl``: one JSON line per flash or rollback (time, bundle id, installed name, previous).

The file is append-only (:func:`record`) and read by :func:`read_history` alone, which skips a torn or
unreadable line with a warning; a record that finds the file not ending in a newline (a torn write) starts a
new line.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import stat
from pathlib import Path
from typing import Callable, NamedTuple, Optional

from xvla_edge.deploy.layout import HISTORY, bundle_id

HISTORY_READ_BYTES = 1 << 20  # read_history reads the file's last MiB: thousands of entries


class History(NamedTuple):
    """The readable entries of ``history.jsonl``, oldest first, and what was skipped (one line each)."""

    entries: list[dict]
    warnings: list[str]


def read_history(robot_dir: str | Path, max_bytes: int = HISTORY_READ_BYTES) -> History:
    """The entries of ``DIR/history.jsonl`` in its last ``max_bytes``; never raises. A line that is not one
    JSON object (UTF-8, finite numbers) is skipped and named in ``warnings``: a torn write, or damage. A file
    that cannot be read as such (a link, a directory, a FIFO) gives no entries and a warning."""
    path = Path(robot_dir) / HISTORY
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return History([], [])
    except OSError as exc:
        return History([], [f"{path}: not read ({exc.strerror or exc}); expected the file flash appends to"])
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError("not a regular file")
        size = info.st_size
        lines = os.pread(fd, min(size, max_bytes), max(0, size - max_bytes)).split(b"\n")
    except OSError as exc:
        return History([], [f"{path}: not read ({exc.strerror or exc}); expected the file flash appends to"])
    finally:
        os.close(fd)
    if size > max_bytes:
        lines = lines[1:]  # where the window starts: part of a line, cut here rather than torn
    entries, warnings = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite)
            if not isinstance(entry, dict):
                raise ValueError(f"a JSON {type(entry).__name__}")
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            where = ("its last line (no newline at its end: a torn write)" if number == len(lines)
                     else f"line {number}" + (f" of its last {max_bytes} bytes" if size > max_bytes else ""))
            warnings.append(f"{path}: {where} was skipped: {len(line)} bytes, not a JSON object "
                            f"({type(exc).__name__}: {str(exc)[:100]})")
            continue
        entries.append(entry)
    return History(entries, warnings)


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number a history entry holds")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is not a finite number")
    return value


def record(robot: Path, action: str, active: Path, previous: Optional[Path], say: Callable[[str], None],
           **extra: object) -> None:
    """Append what became active to ``DIR/history.jsonl`` (one JSON object per flash or rollback; a flash adds
    whether engines were built and how long the build and the smoke inference took). A file not ending in a
    newline (a torn write) gets one first, so the entry is a line of its own."""
    entry = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "action": action,
             "bundle_id": bundle_id(active), "bundle": active.name,
             "previous": None if previous is None else previous.name, **extra}
    fd = os.open(robot / HISTORY, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "r+b") as f:
        size = os.fstat(fd).st_size
        torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        if torn:
            say(f"{robot / HISTORY}: its last line was torn (no newline at the end); it stays, skipped when read")
        f.write((b"\n" if torn else b"") + json.dumps(entry).encode() + b"\n")
        f.flush()
        os.fsync(fd)
