"""Install a bundle as a robot's active one (``xvla-edge flash``), in the robot directory of :mod:`.layout`.

:func:`flash` verifies every file's sha256 against the manifest, then, holding the lock (:mod:`.lock`), copies
the bundle into ``DIR/.staging-<pid>``, verifies the copy, builds TensorRT engines there when TensorRT is
installed (:mod:`.engines`), runs one smoke inference (:mod:`.smoke`) and the pre-switch ``checks``, fsyncs
the copy, renames it into ``bundles/``, switches the links (:mod:`.links`) and settles (:mod:`.settle`:
fsync, history, clean-up). Why this is safe:

- Nothing under ``bundles/`` is written in place: a bundle arrives by one rename of a complete, verified,
  fsynced directory. A bundle installed again while an older copy of it is still kept gets a ``.2`` suffix,
  so no directory a link points at is ever replaced.
- A failure or kill before the links change leaves ``current`` and ``previous`` as they were; what it left
  (``.staging-*``, an unreferenced directory in ``bundles/``) is removed by the next successful flash or
  rollback.
- Once ``current`` has changed, nothing that follows turns the flash into a failure (:mod:`.settle`).

The steps other modules carry out are called through their modules (``engines.build_engines``,
``smoke.smoke_test_within``, ``links.switch``), and :func:`verify` and :func:`copy_file` are module-level here,
so that a test can make any step fail.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from runtime.manifest import MANIFEST_FILE, BundleError, Manifest
from xvla.files import fsync_directory, fsync_tree, remove_path, sha256_file
from xvla_edge.deploy import engines, links, smoke
from xvla_edge.deploy.layout import (
    BUNDLES, CURRENT, PREVIOUS, STAGING, FlashError, bundle_id, free_path, inside, installed_name, link_target,
)
from xvla_edge.deploy.lock import locked
from xvla_edge.deploy.settle import settle

Check = Callable[[Path], None]
"""A pre-switch check of the staged bundle directory (e.g. an accuracy gate); raising refuses the flash."""


def flash(bundle: str | Path, robot_dir: str | Path, *, backend: str = "auto", device: str = "cpu",
          checks: Sequence[Check] = (), smoke_timeout_s: float = smoke.SMOKE_TIMEOUT_S,
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
    with locked(robot):
        old = _outgoing(robot, say)
        if old is not None and bundle_id(old) == manifest.bundle_id:
            say(f"{src} is already the active bundle ({old}, bundle {manifest.bundle_id}); nothing to do")
            return old
        final, timings = _install(src, manifest, digest, robot, old, backend, device, checks, smoke_timeout_s, say)
        settle(robot, say, "flash", final, old, **timings)
    say(f"flashed {final.name} (bundle {manifest.bundle_id}) into {robot}"
        + (f" (previous: {old.name})" if old is not None else ""))
    return final.resolve()


def verify(bundle: Path) -> Manifest:
    """The bundle's manifest, once every file it lists has its recorded size and sha256 (else BundleError)."""
    manifest = Manifest.load(bundle)
    manifest.verify_files(bundle)
    return manifest


def _outgoing(robot: Path, say: Callable[[str], None]) -> Optional[Path]:
    """The active bundle, which the flash makes ``previous``; None when there is none, or when ``current`` leads
    to no bundle (said: it is replaced, and not kept)."""
    old = link_target(robot, CURRENT)
    if old is not None and not (old / MANIFEST_FILE).is_file():
        say(f"{robot / CURRENT} -> {old} is not a bundle; replacing it (it will not become {PREVIOUS})")
        return None
    return old


def _install(src: Path, manifest: Manifest, digest: str, robot: Path, old: Optional[Path], backend: str,
             device: str, checks: Sequence[Check], smoke_timeout_s: float,
             say: Callable[[str], None]) -> tuple[Path, dict[str, object]]:
    """Stage, check and switch to the bundle: its installed directory, and the timings the history records. A
    failure removes what this flash wrote (the links unchanged) and is raised naming its step."""
    staged = inside(robot, robot / f"{STAGING}{os.getpid()}")
    remove_path(staged)  # a killed flash's leftover that had this process id: never build on its files
    final = inside(robot, free_path(robot / BUNDLES, installed_name(manifest)))
    step = "copy"
    try:
        for file in [*manifest.files, MANIFEST_FILE]:  # plain names (the manifest is validated)
            copy_file(src / file, inside(robot, staged / file))
        step = "verification of the copy"
        verify(staged)
        if sha256_file(staged / MANIFEST_FILE) != digest:
            raise BundleError(f"{staged / MANIFEST_FILE}: differs from {src / MANIFEST_FILE}, which changed "
                              "during the copy")
        step = "TensorRT engine build"
        t0 = time.monotonic()
        why_not = engines.build_engines(staged, engines.active_timing_cache(old))
        if why_not:
            say(why_not)
        step = "smoke inference"
        t1 = time.monotonic()
        smoke.smoke_test_within(smoke_timeout_s, staged, backend, device)
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
        links.switch(robot, final, old)
    except BaseException as exc:
        remove_path(staged)
        if final.exists() and final.resolve() not in {link_target(robot, link) for link in (CURRENT, PREVIOUS)}:
            remove_path(final)
        if isinstance(exc, Exception) and not isinstance(exc, (BundleError, FlashError)):
            raise FlashError(f"flash of {src} into {robot}: {step} failed: {exc}") from exc
        raise
    return final, timings


def copy_file(src: Path, dst: Path) -> None:
    """One file of the bundle into the staging directory (its parent created)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
