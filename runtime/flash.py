"""Install bundles on a robot computer (``xvla-edge flash``) and switch back (``xvla-edge rollback``).

Layout of a robot's bundle directory ``DIR``::

    DIR/bundles/<embodiment>-d<domain>-<precision>-<12 hex of the bundle id>/   installed bundles
    DIR/current  -> bundles/...    the active bundle (point robot.toml's [bundle].path at DIR/current)
    DIR/previous -> bundles/...    what `rollback` makes active again
    DIR/.staging-<pid>/            a flash in progress (and ``.staging-<pid>.<link>``: a link being swapped)
    DIR/.lock                      flock'ed by the flash or rollback in progress; a second one is refused
    DIR/history.jsonl              one JSON line per flash or rollback: time, bundle id, installed name, previous

A flash verifies every file's sha256 against the manifest, copies the bundle into ``DIR/.staging-<pid>``,
verifies the copy, builds TensorRT engines there when TensorRT is installed, runs one smoke inference and the
pre-switch ``checks``, fsyncs the copy, renames it into ``bundles/``, then repoints the links. Why this is
safe:

- ``current`` only ever changes by ``os.replace`` of a new symlink over it: rename(2) is atomic on POSIX, so
  a reader (the daemon) sees the old bundle or the new one, never a missing or partial one.
- Nothing under ``bundles/`` is written in place: a bundle arrives by one rename of a complete, verified,
  fsynced directory. A bundle installed again while an older copy of it is still kept gets a ``.2`` suffix,
  so no directory a link points at is ever replaced.
- A failure or kill before the links change leaves ``current`` and ``previous`` as they were; what it left
  (``.staging-*``, an unreferenced directory in ``bundles/``) is removed by the next successful flash or
  rollback, which holds the lock, so no live flash owns it.
- ``previous`` is repointed before ``current``, and put back if repointing ``current`` fails. Only a kill
  between those two renames leaves ``previous`` = ``current`` (the active bundle unchanged; rollback says so).
- Once ``current`` has changed, the operation has happened: a failure of what follows (fsync, the history
  line, the clean-up) is reported as a warning, never raised, so a caller reports what ``current`` points at.
- Nothing written is reached through a link: ``bundles``, ``.lock`` and ``history.jsonl`` must not be links
  (refused by name), and the last two are opened without following one.

Clean-up runs after a successful switch only (never on a refused or failed command) and removes only names
this module creates: ``.staging-<pid>`` and ``.staging-<pid>.<link>`` in ``DIR``, and in ``bundles/`` the
``<embodiment>-d<domain>-<precision>-<12 hex>`` directories (with their ``.N`` suffixes) that neither
``current`` nor ``previous`` points at. Anything else there (``<name>.keep``, notes) is left alone and named
once in the output.

``history.jsonl`` is append-only and read by :func:`read_history` alone, which skips a torn or unreadable line
with a warning; a record that finds the file not ending in a newline (a torn write) starts a new line.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import math
import os
import re
import shutil
import stat
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Optional, Sequence

import numpy as np

from runtime.backends.tensorrt.backend import TIMING_CACHE
from runtime.manifest import ENGINES_DIR, MANIFEST_FILE, BundleError, Manifest
from runtime.manifest_schema import PRECISIONS
from runtime.types import Observation
from xvla.errors import XVLAError
from xvla.files import fsync_directory, fsync_tree, remove_path, sha256_file

CURRENT, PREVIOUS, BUNDLES, LOCK, STAGING = "current", "previous", "bundles", ".lock", ".staging-"
SMOKE_TIMEOUT_S = 600.0  # the first TensorRT run of a full-size engine on a Jetson takes well under this
HISTORY = "history.jsonl"  # every flash and rollback: time, bundle id, installed name, previous
HISTORY_READ_BYTES = 1 << 20  # read_history reads the file's last MiB: thousands of entries
# the names this module gives (and so the only ones its clean-up removes): an installed bundle, a staging directory
INSTALLED_NAME = re.compile(rf"[A-Za-z0-9_-][A-Za-z0-9._-]*-d[0-9]+-(?:{'|'.join(PRECISIONS)})-[0-9a-f]{{12}}"
                            r"(?:\.[0-9]+)?")
STAGING_NAME = re.compile(rf"{re.escape(STAGING)}[0-9]+(?:\.(?:{CURRENT}|{PREVIOUS}))?")

Check = Callable[[Path], None]
"""A pre-switch check of the staged bundle directory (e.g. an accuracy gate); raising refuses the flash."""


class FlashError(XVLAError, RuntimeError):
    """A flash or rollback was refused or failed; the active bundle is unchanged."""


def active_bundle(robot_dir: str | Path) -> Path:
    """The bundle directory ``DIR/current`` points at."""
    return _target(Path(robot_dir), CURRENT)


def link_target(robot_dir: str | Path, link: str) -> Optional[Path]:
    """Where ``DIR/link`` leads (None: it is not a link); a link that leads nowhere (a loop) gives itself."""
    path = Path(robot_dir) / link
    if not path.is_symlink():
        return None
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return path


def _target(robot: Path, link: str) -> Path:
    path = robot / link
    target = link_target(robot, link)
    if target is None:
        hint = f"flash one with `xvla-edge flash BUNDLE --robot {robot}`" if link == CURRENT else "flash another first"
        raise FlashError(f"{path}: no {link} bundle (expected a symlink into {robot / BUNDLES}; {hint})")
    if not (target / MANIFEST_FILE).is_file():
        raise FlashError(f"{path} -> {target}: not a bundle (no {MANIFEST_FILE})")
    return target


# -- the steps of a flash; each is a module-level function so that a test can make it fail ---------------


def verify(bundle: Path) -> Manifest:
    """The bundle's manifest, once every file it lists has its recorded size and sha256 (else BundleError)."""
    manifest = Manifest.load(bundle)
    manifest.verify_files(bundle)
    return manifest


def copy_file(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def build_engines(staged: Path, timing_cache: Optional[Path] = None) -> Optional[str]:
    """Build TensorRT engines in ``staged`` when TensorRT is installed (starting from ``timing_cache``, the active
    bundle's, when there is one); otherwise return why not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed here: no engines built (the bundle will run on ONNX Runtime)"
    from runtime.backends.tensorrt import build

    manifest = Manifest.load(staged)
    if manifest.precision not in build.BUILDABLE_PRECISIONS:
        return f"a {manifest.precision} bundle: no TensorRT engines built (it runs on ONNX Runtime)"
    build.build_engines(staged, build.check_buildable(staged, force=True), timing_cache=timing_cache)
    return None


def smoke_test(staged: Path, backend: str, device: str) -> None:
    """One inference on a synthetic observation; the actions must be finite and of the manifest's shape."""
    from runtime.policy import Policy

    with Policy.load(staged, backend=backend, device=device, verify=False) as policy:
        inputs, action = policy.manifest.inputs, policy.manifest.action
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) if v < int(inputs["views"]) else None
                  for v in range(int(inputs["view_slots"]))]
        chunk = policy.act(Observation(images=images, instruction="smoke test",
                                       proprio=np.zeros(int(inputs.get("state_dim", inputs["proprio_dim"])), np.float32)))
    expected = (int(action["chunk_length"]), int(action["output_dim"]))
    actions = np.asarray(chunk.actions)
    if actions.shape != expected or not np.isfinite(actions).all():
        raise FlashError(f"smoke inference of {staged}: expected finite actions of shape {expected}, got shape "
                         f"{actions.shape} with {int((~np.isfinite(actions)).sum())} non-finite values")


def _within(seconds: float, what: str, fn: Callable[..., None], *args: object) -> None:
    """Run ``fn(*args)`` on a worker thread; :class:`FlashError` when it has not returned after ``seconds``
    (the thread is a daemon: a hung backend cannot keep the flash, or its lock, forever)."""
    failure: list[BaseException] = []

    def work() -> None:
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the flash thread below
            failure.append(exc)

    worker = threading.Thread(target=work, name="flash-smoke", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise FlashError(f"{what} did not finish within {seconds:g} s (a hung backend or device?)")
    if failure:
        raise failure[0]


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


# -- flash and rollback ------------------------------------------------------------------------------------


def flash(bundle: str | Path, robot_dir: str | Path, *, backend: str = "auto", device: str = "cpu",
          checks: Sequence[Check] = (), smoke_timeout_s: float = SMOKE_TIMEOUT_S,
          say: Callable[[str], None] = print) -> Path:
    """Install ``bundle`` as ``robot_dir``'s active bundle (see the module docstring); returns its directory.

    The smoke inference runs on ``backend``/``device`` (the daemon's) and must finish within ``smoke_timeout_s``.

    Raises BundleError (naming the file) for a bundle that fails its checksums, FlashError for any other
    refusal or failure; either way ``current`` and ``previous`` are unchanged.
    """
    src, robot = Path(bundle), Path(robot_dir)
    if not (math.isfinite(smoke_timeout_s) and smoke_timeout_s > 0):
        raise FlashError(f"smoke timeout {smoke_timeout_s!r}: expected a finite number of seconds > 0")
    manifest = verify(src)
    digest = sha256_file(src / MANIFEST_FILE)
    name = f"{manifest.embodiment}-d{manifest.domain_id}-{manifest.precision}-{manifest.bundle_id[:12]}"
    with _locked(robot):
        old = link_target(robot, CURRENT)
        if old is not None and not (old / MANIFEST_FILE).is_file():
            say(f"{robot / CURRENT} -> {old} is not a bundle; replacing it (it will not become {PREVIOUS})")
            old = None
        if old is not None and _bundle_id(old) == manifest.bundle_id:
            say(f"{src} is already the active bundle ({old}, bundle {manifest.bundle_id}); nothing to do")
            return old
        staged = _inside(robot, robot / f"{STAGING}{os.getpid()}")
        remove_path(staged)  # a killed flash's leftover that had this process id: never build on its files
        final = _inside(robot, _free_path(robot / BUNDLES, name))
        step = "copy"
        try:
            for file in [*manifest.files, MANIFEST_FILE]:  # plain names (the manifest is validated)
                copy_file(src / file, _inside(robot, staged / file))
            step = "verification of the copy"
            verify(staged)
            if sha256_file(staged / MANIFEST_FILE) != digest:
                raise BundleError(f"{staged / MANIFEST_FILE}: differs from {src / MANIFEST_FILE}, which changed "
                                  "during the copy")
            step = "TensorRT engine build"
            t0 = time.monotonic()
            why_not = build_engines(staged, None if old is None else old / ENGINES_DIR / TIMING_CACHE)
            if why_not:
                say(why_not)
            step = "smoke inference"
            t1 = time.monotonic()
            _within(smoke_timeout_s, f"smoke inference on {backend}/{device}", smoke_test, staged, backend, device)
            timings = {"engines": why_not is None, "build_s": round(t1 - t0, 2),
                       "smoke_s": round(time.monotonic() - t1, 2)}
            for check in checks:
                step = f"pre-switch check {getattr(check, '__name__', check)!r}"
                check(staged)
            step = "switch"
            fsync_tree(staged)
            final.parent.mkdir(exist_ok=True)
            os.rename(staged, final)
            fsync_directory(final.parent)
            switch(robot, final, old)
        except BaseException as exc:
            remove_path(staged)
            if final.exists() and final.resolve() not in {link_target(robot, link) for link in (CURRENT, PREVIOUS)}:
                remove_path(final)
            if isinstance(exc, Exception) and not isinstance(exc, (BundleError, FlashError)):
                raise FlashError(f"flash of {src} into {robot}: {step} failed: {exc}") from exc
            raise
        _settle(robot, say, "flash", final, old, **timings)
    say(f"flashed {final.name} (bundle {manifest.bundle_id}) into {robot}"
        + (f" (previous: {old.name})" if old is not None else ""))
    return final.resolve()


def rollback(robot_dir: str | Path, *, say: Callable[[str], None] = print) -> Path:
    """Make ``previous`` the active bundle and the active one ``previous``; returns the now active bundle."""
    robot = Path(robot_dir)
    if not robot.is_dir():
        raise FlashError(f"{robot}: no such directory (expected a robot bundle directory made by `xvla-edge flash`)")
    with _locked(robot):
        current, previous = active_bundle(robot), _target(robot, PREVIOUS)
        if previous == current:
            raise FlashError(f"{robot / PREVIOUS} and {robot / CURRENT} both point at {current} (a flash was "
                             "killed between its two link updates): nothing to roll back to")
        try:
            verify(previous)
        except BundleError as exc:
            raise FlashError(f"{robot / PREVIOUS} -> {previous} fails its checksums, not switching: {exc}") from None
        switch(robot, previous, current)
        _settle(robot, say, "rollback", previous, current)
    say(f"rolled back to {previous.name} (previous: {current.name})")
    return previous


# -- helpers -----------------------------------------------------------------------------------------------


def _bundle_id(bundle: Path) -> Optional[str]:
    """The id of an installed bundle, or None when its manifest does not validate."""
    try:
        return Manifest.load(bundle).bundle_id
    except BundleError:
        return None


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


def _record(robot: Path, action: str, active: Path, previous: Optional[Path], say: Callable[[str], None],
            **extra: object) -> None:
    """Append what became active to ``DIR/history.jsonl`` (one JSON object per flash or rollback; a flash adds
    whether engines were built and how long the build and the smoke inference took). A file not ending in a
    newline (a torn write) gets one first, so the entry is a line of its own."""
    entry = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "action": action,
             "bundle_id": _bundle_id(active), "bundle": active.name,
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


def _settle(robot: Path, say: Callable[[str], None], action: str, active: Path, previous: Optional[Path],
            **extra: object) -> None:
    """What follows a switch: make it durable, record it, clean up. ``current`` has changed, so a failure here
    is a warning through ``say``, never raised: the caller must report the bundle now active, not a failure."""
    steps: list[tuple[str, Callable[[], None]]] = [
        ("make the switch durable (fsync)", lambda: fsync_directory(robot)),
        (f"append to {HISTORY}", lambda: _record(robot, action, active, previous, say, **extra)),
        ("clean up", lambda: _clean(robot, say))]
    for what, step in steps:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - any failure after the switch: reported, not raised
            say(f"warning: {action} done ({robot / CURRENT} -> {active.name}), but could not {what}: "
                f"{type(exc).__name__}: {exc}")


@contextmanager
def _locked(robot: Path) -> Iterator[None]:
    """Hold ``DIR/.lock`` (or refuse); removes nothing."""
    _check_robot(robot)
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


def _check_robot(robot: Path) -> None:
    """The robot directory: a directory (created if missing) whose ``bundles`` is a real directory too and whose
    ``.lock`` and ``history.jsonl`` are regular files when present, so nothing written or pruned there can be
    led elsewhere by a link."""
    if robot.exists() and not robot.is_dir():
        raise FlashError(f"--robot {robot}: not a directory (expected the robot's bundle directory)")
    try:
        robot.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FlashError(f"--robot {robot}: cannot create it ({exc.strerror or exc})") from exc
    bundles = robot / BUNDLES
    if bundles.is_symlink() or (bundles.exists() and not bundles.is_dir()):
        raise FlashError(f"{bundles}: expected the directory of installed bundles, found a link or a file; move it away")
    for name, what in ((LOCK, "the lock file"), (HISTORY, "the history file")):
        path = robot / name
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise FlashError(f"{path}: expected {what} flash writes, found a link or not a regular file; move it "
                             "away")


def _inside(robot: Path, path: Path) -> Path:
    """``path``, once checked to lie inside ``robot`` with no link on the way leading out."""
    if robot.resolve() not in (path.parent.resolve() / path.name).parents:
        raise FlashError(f"{path}: outside {robot}; refusing to write there")
    return path


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


def _free_path(bundles: Path, name: str) -> Path:
    path, n = bundles / name, 1
    while path.exists() or path.is_symlink():
        n += 1
        path = bundles / f"{name}.{n}"
    return path


def _clean(robot: Path, say: Callable[[str], None]) -> None:
    """Remove staging leftovers and the installed bundles neither ``current`` nor ``previous`` points at, by the
    names this module gives them (:data:`STAGING_NAME`, :data:`INSTALLED_NAME`); say which other names in
    ``bundles/`` are left alone."""
    keep = {link_target(robot, CURRENT), link_target(robot, PREVIOUS)}
    bundles = sorted((robot / BUNDLES).iterdir()) if (robot / BUNDLES).is_dir() else []
    foreign = [b.name for b in bundles if not INSTALLED_NAME.fullmatch(b.name)]
    for path in [*(p for p in robot.iterdir() if STAGING_NAME.fullmatch(p.name)),
                 *(b for b in bundles if INSTALLED_NAME.fullmatch(b.name) and b.resolve() not in keep)]:
        remove_path(path)
    if foreign:
        say(f"left alone in {robot / BUNDLES} (not names flash gives): {', '.join(foreign[:5])}"
            + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""))
