"""The robot's side of a fleet flash: ``xvla-edge fleet agent DIR OP``, run over SSH by the workstation.

Every operation reads its input from stdin, prints one JSON object on stdout and exits 0, or prints
``{"error": "..."}`` and exits 1. ``DIR`` is the robot's bundle directory of :mod:`xvla_edge.deploy.layout`; the
agent adds

    DIR/.objects/<sha256>            files received, named by their content (verified before they get the name)
    DIR/.objects/<sha256>.partial    a file being received; a dropped connection leaves it to be continued
    DIR/.incoming/<bundle id>/       a bundle assembled from objects (hard links), flashed from there

Operations:

- ``have``: stdin ``{"files": {name: {"sha256", "bytes"}}}`` → ``{"missing": {sha256: bytes already received}}``.
  A file is present when it is an object or a file of an installed bundle with that sha256 (its manifest says
  so, and its size agrees): content the robot holds is never sent again.
- ``put SHA256 BYTES OFFSET``: stdin = the file's bytes from ``OFFSET``; appended to the partial file (whose size
  must be ``OFFSET``), checked against SHA256 once complete, then renamed to its object name. A short stream
  keeps what arrived.
- ``assemble SHA256``: the object SHA256 is a manifest; validated, and every file it lists linked (or copied)
  from where it is present into ``.incoming/<bundle id>/``, which is then verified like any bundle.
- ``flash BUNDLE_ID [--backend B] [--device D] [--smoke-timeout S]``: :func:`xvla_edge.deploy.install.flash` of
  the assembled bundle (verification, TensorRT engines when TensorRT is here, smoke inference on the daemon's
  backend and device, atomic switch); then ``.incoming`` and ``.objects`` are removed (the installed bundles
  hold the content) → ``status``. Once ``current`` has changed nothing turns the answer into an error: a failure after
  the switch is one of its ``messages``.
- ``status``: the active and previous bundles, the last readable entry of ``history.jsonl`` and ``warnings``
  (lines of it skipped: a torn write); answers whatever ``DIR`` holds.
- ``health URL BUNDLE_ID SECONDS``: poll the daemon's ``/healthz`` at URL (on the robot: it listens on loopback)
  until it answers with ``bundle_id`` BUNDLE_ID → its answer; an error after SECONDS naming what it last said.
- ``rollback``: :func:`xvla_edge.deploy.rollback.rollback` (previous becomes active again) → ``status``.
- ``probe URL``: ``status`` and what the daemon's ``/healthz`` at URL says now (``{"health": null, "reason"}``
  when it does not answer).

Nothing here trusts its input: digests are 64 hex digits, sizes bounded, names plain (the manifest is validated
before a file of it is linked), and nothing is written through a link: ``.objects`` and ``.incoming`` must be
directories, and the files in them regular files, not links (refused by name otherwise).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO, Optional

from runtime.manifest import MANIFEST_FILE, BundleError, Manifest
from xvla.files import remove_path, sha256_file
from xvla_edge.deploy.history import read_history
from xvla_edge.deploy.install import flash
from xvla_edge.deploy.layout import BUNDLES, CURRENT, INCOMING, OBJECTS, PREVIOUS, FlashError, link_target
from xvla_edge.deploy.rollback import rollback

MAX_FILE_BYTES = 1 << 40  # far above any bundle file, far below a size that overflows anything
CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


class AgentError(FlashError):
    """A request the agent refuses or cannot carry out; nothing active changed."""


def _digest(text: str) -> str:
    if not isinstance(text, str) or not _SHA256.fullmatch(text):
        raise AgentError(f"{text!r}: expected a sha256 of 64 lowercase hex digits")
    return text


def _size(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_FILE_BYTES:
        raise AgentError(f"{what} = {value!r}: expected an integer 0 ... {MAX_FILE_BYTES}")
    return value


def _own_dir(root: Path, name: str, create: bool = True) -> Path:
    """``root/name``, a directory the agent writes into (created if missing and ``create``): refused when it is
    a link or not a directory, so nothing written there can land outside ``root``."""
    path = root / name
    if create and not (path.is_symlink() or path.exists()):
        path.mkdir(parents=True)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise AgentError(f"{path}: expected the directory the agent keeps inside {root}, found a link or a file; "
                         "move it away")
    return path


def _file_size(path: Path) -> Optional[int]:
    """The size of the regular file ``path``; None when there is none. A link or anything else there is
    refused: the agent writes and trusts only files it created."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise AgentError(f"{path}: expected a file the agent wrote, found a link or not a regular file; move it away")
    return st.st_size


def installed_files(root: Path) -> dict[str, Path]:
    """sha256 → a file of an installed bundle with that content (per its manifest and size)."""
    found: dict[str, Path] = {}
    for bundle in sorted((root / BUNDLES).iterdir()) if (root / BUNDLES).is_dir() else []:
        try:
            manifest = Manifest.load(bundle)
        except BundleError:
            continue
        for name, entry in manifest.files.items():
            path = bundle / name
            if path.is_file() and not path.is_symlink() and path.stat().st_size == entry["bytes"]:
                found.setdefault(entry["sha256"], path)
        found.setdefault(hashlib.sha256((bundle / MANIFEST_FILE).read_bytes()).hexdigest(), bundle / MANIFEST_FILE)
    return found


def have(root: Path, request: dict[str, Any]) -> dict[str, Any]:
    files = request.get("files") if isinstance(request, dict) else None
    if not isinstance(files, dict):
        raise AgentError('have: expected {"files": {name: {"sha256": ..., "bytes": ...}}} on stdin')
    objects, installed = _own_dir(root, OBJECTS), installed_files(root)
    missing = {}
    for name, entry in files.items():
        if not isinstance(entry, dict):
            raise AgentError(f"have: files.{name}: expected {{sha256, bytes}}")
        digest = _digest(entry.get("sha256"))
        _size(entry.get("bytes"), f"files.{name}.bytes")
        if _file_size(objects / digest) is not None or digest in installed:
            continue
        missing[digest] = _file_size(objects / f"{digest}.partial") or 0
    return {"missing": missing}


def put(root: Path, digest: str, size: int, offset: int, data: BinaryIO) -> dict[str, Any]:
    digest, size, offset = _digest(digest), _size(size, "bytes"), _size(offset, "offset")
    objects = _own_dir(root, OBJECTS)
    final, partial = objects / digest, objects / f"{digest}.partial"
    stored = _file_size(final)
    if stored is not None:
        return {"stored": digest, "bytes": stored}
    have_bytes = _file_size(partial) or 0
    if have_bytes != offset or offset > size:
        raise AgentError(f"put {digest[:12]}: {have_bytes} bytes received so far, the stream starts at {offset}; "
                         "ask again with `have`")
    fd = os.open(partial, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "ab") as out:
        left = size - offset
        while left:
            block = data.read(min(CHUNK, left))
            if not block:
                break
            out.write(block)
            left -= len(block)
        out.flush()
        os.fsync(out.fileno())
    received = partial.stat().st_size
    if received < size:
        raise AgentError(f"put {digest[:12]}: the stream ended after {received} of {size} bytes; kept for a resume")
    if sha256_file(partial) != digest:
        partial.unlink()
        raise AgentError(f"put {digest[:12]}: the {size} bytes received do not have that sha256; discarded")
    os.replace(partial, final)
    return {"stored": digest, "bytes": size}


def assemble(root: Path, manifest_digest: str) -> dict[str, Any]:
    objects = _own_dir(root, OBJECTS)
    source = objects / _digest(manifest_digest)
    if _file_size(source) is None:
        installed = installed_files(root)
        if manifest_digest not in installed:
            raise AgentError(f"assemble: no manifest {manifest_digest[:12]} here; send it first")
        source = installed[manifest_digest]
    try:
        manifest = Manifest.from_dict(json.loads(source.read_text()), f"manifest {manifest_digest[:12]}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise AgentError(f"assemble: manifest {manifest_digest[:12]} is not a valid manifest: {exc}") from None
    incoming = _own_dir(root, INCOMING)
    target, tmp = incoming / manifest.bundle_id, incoming / f"{manifest.bundle_id}.tmp"
    remove_path(tmp)
    tmp.mkdir()
    installed = installed_files(root)
    for name, entry in manifest.files.items():  # plain names: the manifest is validated
        digest = entry["sha256"]
        src = objects / digest if _file_size(objects / digest) is not None else installed.get(digest)
        if src is None:
            remove_path(tmp)
            raise AgentError(f"assemble: {name} ({digest[:12]}) is not here; send it first")
        _link_or_copy(src, tmp / name)
    _link_or_copy(source, tmp / MANIFEST_FILE)
    try:
        Manifest.load(tmp).verify_files(tmp)
    except BundleError as exc:
        remove_path(tmp)
        raise AgentError(f"assemble: the assembled bundle does not verify: {exc}") from None
    remove_path(target)
    os.replace(tmp, target)
    return {"assembled": manifest.bundle_id, "path": str(target)}


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed: a copy
        shutil.copy2(src, dst)


def flash_assembled(root: Path, bundle_id: str, backend: str, device: str, smoke_timeout_s: float) -> dict[str, Any]:
    source = _own_dir(root, INCOMING, create=False) / _digest(bundle_id)
    if source.is_symlink() or not (source / MANIFEST_FILE).is_file():
        raise AgentError(f"flash: bundle {bundle_id[:12]} is not assembled here (expected {source}/{MANIFEST_FILE})")
    lines: list[str] = []
    installed = flash(source, root, backend=backend, device=device, smoke_timeout_s=smoke_timeout_s, say=lines.append)
    for leftover in (INCOMING, OBJECTS):
        try:
            remove_path(root / leftover)
        except OSError as exc:  # the switch has happened: a message, not a failed flash
            lines.append(f"warning: could not remove {root / leftover}: {exc}")
    return {"installed": installed.name, "bundle_id": bundle_id, "messages": lines, **status(root)}


def status(root: Path) -> dict[str, Any]:
    """What ``current`` and ``previous`` point at (``bundle_id`` None: not a valid bundle), the last readable
    entry of ``history.jsonl`` and ``warnings`` about lines of it skipped; never refuses for what ``DIR`` holds."""
    out: dict[str, Any] = {}
    for link in (CURRENT, PREVIOUS):
        target = link_target(root, link)
        manifest: Optional[Manifest] = None
        if target is not None:
            try:
                manifest = Manifest.load(target)
            except BundleError:
                pass
        out[link] = None if target is None else {"name": target.name,
                                                 "bundle_id": manifest.bundle_id if manifest else None}
    history = read_history(root)
    out["last"] = history.entries[-1] if history.entries else None
    out["warnings"] = history.warnings
    return out


def health(url: str, bundle_id: str, seconds: float) -> dict[str, Any]:
    """The daemon's ``/healthz`` answer once it names ``bundle_id`` (any status: a daemon just started may be
    degraded until its cameras deliver)."""
    if not url.startswith(("http://", "https://")) or not 0 < seconds <= 3600:
        raise AgentError(f"health: expected an http(s) URL and 0 < seconds <= 3600, got {url!r}, {seconds}")
    deadline, last = time.monotonic() + seconds, "no answer"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                body = r.read(1 << 16)
        except urllib.error.HTTPError as exc:  # 503 degraded: still an answer
            body = exc.read(1 << 16)
        except (OSError, ValueError) as exc:
            body, last = None, f"{type(exc).__name__}: {exc}"
        if body is not None:
            try:
                answer = json.loads(body)
            except ValueError:
                answer = None
            if isinstance(answer, dict) and answer.get("bundle_id") == bundle_id:
                return {"health": answer}
            last = body.decode("utf-8", "replace")[:200]
        if time.monotonic() >= deadline:
            raise AgentError(f"health: {url} did not report bundle {bundle_id[:12]} within {seconds:g} s "
                             f"(last: {last})")
        time.sleep(0.5)


def probe(url: str) -> dict[str, Any]:
    """The daemon's ``/healthz`` answer now (503 degraded included), or why there is none."""
    if not url.startswith(("http://", "https://")):
        raise AgentError(f"probe: expected an http(s) URL, got {url!r}")
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            body = r.read(1 << 16)
    except urllib.error.HTTPError as exc:
        body = exc.read(1 << 16)
    except (OSError, ValueError) as exc:
        return {"health": None, "reason": f"{type(exc).__name__}: {exc}"}
    try:
        answer = json.loads(body)
    except ValueError:
        return {"health": None, "reason": f"not JSON: {body[:100]!r}"}
    return {"health": answer if isinstance(answer, dict) else None}


def run(root: Path, op: str, args: list[str], stdin: BinaryIO) -> dict[str, Any]:
    """One operation (see the module docstring)."""
    if op == "have":
        try:
            request = json.loads(stdin.read(16 << 20) or b"{}")
        except (ValueError, RecursionError) as exc:
            raise AgentError(f"have: stdin is not JSON ({type(exc).__name__}: {exc})") from None
        return have(root, request)
    if op == "put" and len(args) == 3:
        try:
            size, offset = int(args[1]), int(args[2])
        except ValueError:
            raise AgentError(f"put: expected SHA256 BYTES OFFSET, got {args}") from None
        return put(root, args[0], size, offset, stdin)
    if op == "assemble" and len(args) == 1:
        return assemble(root, args[0])
    if op == "status" and not args:
        return status(root)
    if op == "health" and len(args) == 3:
        try:
            seconds = float(args[2])
        except ValueError:
            raise AgentError(f"health: seconds = {args[2]!r}: expected a number") from None
        return health(args[0], _digest(args[1]), seconds)
    if op == "probe" and len(args) == 1:
        return {**status(root), **probe(args[0])}
    if op == "rollback" and not args:
        rollback(root, say=lambda line: None)
        return status(root)
    raise AgentError(f"unknown operation {op!r} with {len(args)} argument(s); expected have, put SHA BYTES OFFSET, "
                     "assemble SHA, flash BUNDLE_ID, status, health URL BUNDLE_ID SECONDS, probe URL, rollback")


def main(root: Path, op: str, args: list[str], *, backend: str = "auto", device: str = "cpu",
         smoke_timeout_s: float = 600.0) -> int:
    """Print the operation's JSON answer; exit status 0, or 1 with ``{"error": ...}``."""
    try:
        if not root.is_absolute():
            raise AgentError(f"{root}: the robot directory must be an absolute path")
        if op == "flash" and len(args) == 1:
            answer = flash_assembled(root, args[0], backend, device, smoke_timeout_s)
        else:
            answer = run(root, op, args, sys.stdin.buffer)
    except (FlashError, BundleError, OSError) as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 1
    print(json.dumps(answer), flush=True)
    return 0
