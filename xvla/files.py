"""Files every layer writes and checks: atomic directory writes and sha256 inventories (torch-free).

One implementation for the checkpoint writer, export, calibration sets, INT8 bundles, engine builds and
flash:

- :func:`atomic_directory` builds a directory under a temporary name beside its target and renames it
  into place only when the block succeeds, so a failure or Ctrl-C leaves the target as it was (absent, or
  the previous version when ``force`` replaces one). The new tree is fsynced before the rename, and the
  parent after it, so a robot that loses power keeps the old or the new directory, never a half.
- :func:`inventory` / :func:`file_entry` record ``{"sha256", "bytes"}`` per file, the form manifests and
  set indexes store; :func:`file_problem` says what is wrong with a file against its entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from xvla.errors import OutputError

CHUNK_BYTES = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: str | Path) -> dict[str, Any]:
    """``{"sha256": ..., "bytes": ...}`` of one file."""
    return {"sha256": sha256_file(path), "bytes": Path(path).stat().st_size}


def inventory(directory: str | Path, *, exclude: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """:func:`file_entry` of every regular file directly in ``directory`` (by name, sorted), except ``exclude``."""
    skip = set(exclude)
    return {p.name: file_entry(p) for p in sorted(Path(directory).iterdir())
            if p.is_file() and p.name not in skip}


def file_problem(path: Path, entry: Mapping[str, Any], index: str) -> str | None:
    """What is wrong with ``path`` against its ``entry`` in the file ``index`` (None: nothing)."""
    if not path.is_file():
        return f"{path}: listed in {index} but missing"
    size = path.stat().st_size
    if size != entry.get("bytes"):
        return f"{path}: {size} bytes; {index} records {entry.get('bytes')} (file changed)"
    digest = sha256_file(path)
    if digest != entry.get("sha256"):
        return (f"{path}: sha256 {digest[:16]}… does not match {index} ({str(entry.get('sha256'))[:16]}…): "
                "the file was modified or corrupted")
    return None


def check_target(out: Path, *, force: bool) -> None:
    """Refuse, before any work, a target directory that cannot be written (:class:`OutputError`)."""
    if (out.exists() or out.is_symlink()) and not force:
        raise OutputError(f"{out} already exists; pass --force to replace it (the old one is kept until the "
                          "new one is complete)")
    if not out.parent.is_dir():
        raise OutputError(f"cannot write {out}: {out.parent} is not an existing directory")
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {out}: no write permission in {out.parent}")


@contextlib.contextmanager
def atomic_directory(out: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``out``; when the block ends without error it becomes ``out``.

    ``out`` must not exist unless ``force`` (then it is replaced only after the new one is complete).
    """
    out = Path(out)
    check_target(out, force=force)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        fsync_tree(tmp)
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_directory(out.parent)


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is moved aside first and put back if that fails."""
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


def remove_path(path: Path) -> None:
    """Remove a file, a link (never what it points at) or a directory tree; nothing when ``path`` is absent."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.is_symlink() or path.exists():
        path.unlink()


def fsync_directory(path: Path) -> None:
    """Make a directory's entries (renames, new files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every regular file and directory under ``root`` (symlinks are not followed)."""
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        fsync_directory(Path(folder))
