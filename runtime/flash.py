"""``xvla-edge flash BUNDLE --robot DIR`` and ``xvla-edge rollback --robot DIR``: install bundles on a robot.

Layout of a robot's bundle directory::

    DIR/bundles/<embodiment>-d<domain>-<precision>-<12 hex of the manifest's sha256>/   installed bundles
    DIR/current  -> bundles/...    the active bundle (point robot.toml's [bundle].path here)
    DIR/previous -> bundles/...    what `rollback` switches back to
    DIR/.staging-<pid>/            a flash in progress
    DIR/.lock                      held (flock) by a flash or rollback

A flash verifies every file's sha256 against the manifest, copies the bundle into a staging directory,
verifies the copy, builds TensorRT engines there when TensorRT is present, runs one smoke inference, and
only then renames the staging directory into ``bundles/`` and swaps ``current`` — a new symlink renamed
over the old one, which POSIX makes atomic. Any failure or kill before that rename leaves ``current`` and
``previous`` untouched; leftover staging directories are removed by the next flash. Bundles other than
``current`` and ``previous`` are pruned after a successful switch.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import numpy as np

from runtime.manifest import MANIFEST_FILE, BundleError, Manifest, sha256_file
from runtime.types import Observation

CURRENT, PREVIOUS, BUNDLES = "current", "previous", "bundles"


class FlashError(RuntimeError):
    """A flash or rollback was refused or failed; the active bundle is unchanged."""


def active_bundle(robot_dir: str | Path) -> Path:
    """The bundle ``DIR/current`` points at."""
    link = Path(robot_dir) / CURRENT
    if not link.is_symlink():
        raise FlashError(f"{link}: no active bundle (flash one with `xvla-edge flash BUNDLE --robot {robot_dir}`)")
    return link.resolve()


def install_name(manifest_path: Path) -> str:
    m = json.loads(manifest_path.read_text())
    return (f"{m.get('embodiment', 'bundle')}-d{m.get('domain_id', 'x')}-{m.get('precision', 'x')}-"
            f"{sha256_file(manifest_path)[:12]}")


def build_engines(staged: Path) -> Optional[str]:
    """Build TensorRT engines in ``staged`` when TensorRT is importable; returns why not otherwise."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed here: no engines built (the bundle runs on ONNX Runtime)"
    from runtime import build_cli

    manifest = Manifest.load(staged)
    if manifest.precision not in build_cli.BUILDABLE_PRECISIONS:
        return f"a {manifest.precision} bundle: no TensorRT engines built"
    build_cli.build_engines(staged, build_cli.check_buildable(staged, force=True))
    return None


def smoke_test(staged: Path, backend: str, device: str) -> None:
    """One inference on a synthetic observation: finite actions of the manifest's shape."""
    from runtime.policy import Policy

    with Policy.load(staged, backend=backend, device=device) as policy:
        inputs, action = policy.manifest.inputs, policy.manifest.action
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) if v < int(inputs["views"]) else None
                  for v in range(3)]
        chunk = policy.act(Observation(images=images, instruction="smoke test",
                                       proprio=np.zeros(int(inputs["proprio_dim"]), np.float32)))
    expected = (int(action["chunk_length"]), int(action["output_dim"]))
    if chunk.actions.shape != expected or not np.isfinite(chunk.actions).all():
        raise FlashError(f"smoke inference in {staged}: expected finite actions of shape {expected}, "
                         f"got {chunk.actions.shape} (finite: {bool(np.isfinite(chunk.actions).all())})")


@contextmanager
def _locked(robot_dir: Path) -> Iterator[None]:
    robot_dir.mkdir(parents=True, exist_ok=True)
    with open(robot_dir / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise FlashError(f"{robot_dir}: another flash or rollback is running (lock {robot_dir / '.lock'})") from exc
        yield


def _point(robot_dir: Path, name: str, target: Path) -> None:
    """Atomically make ``robot_dir/name`` a relative symlink to ``target``."""
    tmp = robot_dir / f".{name}.{os.getpid()}"
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(os.path.relpath(target, robot_dir), tmp)
    os.replace(tmp, robot_dir / name)


def _copy(src: Path, dst: Path, files: List[str]) -> None:
    dst.mkdir(parents=True)
    for name in [*files, MANIFEST_FILE]:
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / name, dst / name)


def flash(bundle: str | Path, robot_dir: str | Path, *, backend: str = "auto", device: str = "cpu",
          checks: tuple[Callable[[Path], None], ...] = (), say: Callable[[str], None] = print) -> Path:
    """Install ``bundle`` as ``robot_dir``'s active bundle (see the module docstring); returns its path.

    ``checks`` run on the staged bundle after the smoke test (e.g. an accuracy gate); any exception refuses
    the flash.
    """
    src, robot = Path(bundle), Path(robot_dir)
    manifest = Manifest.load(src)
    manifest.verify_files(src)  # BundleError names a tampered or missing file
    name = install_name(src / MANIFEST_FILE)
    with _locked(robot):
        for stale in robot.glob(".staging-*"):
            shutil.rmtree(stale, ignore_errors=True)
        final = robot / BUNDLES / name
        if (robot / CURRENT).is_symlink() and active_bundle(robot) == final.resolve():
            say(f"{name} is already the active bundle; nothing to do")
            return final
        staged = robot / f".staging-{os.getpid()}"
        try:
            _copy(src, staged, list(manifest.files))
            Manifest.load(staged).verify_files(staged)
            why = build_engines(staged)
            if why:
                say(why)
            smoke_test(staged, backend, device)
            for check in checks:
                check(staged)
            (robot / BUNDLES).mkdir(exist_ok=True)
            if final.exists():
                shutil.rmtree(final)  # an earlier install of the same bundle that is neither current nor previous
            os.rename(staged, final)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        old = active_bundle(robot) if (robot / CURRENT).is_symlink() else None
        if old is not None:
            _point(robot, PREVIOUS, old)
        _point(robot, CURRENT, final)
        _prune(robot)
    say(f"flashed {name}" + (f" (previous: {old.name})" if old is not None else ""))
    return final


def rollback(robot_dir: str | Path, *, say: Callable[[str], None] = print) -> Path:
    """Swap ``current`` and ``previous``; returns the now active bundle."""
    robot = Path(robot_dir)
    with _locked(robot):
        if not (robot / PREVIOUS).is_symlink():
            raise FlashError(f"{robot / PREVIOUS}: no previous bundle to roll back to")
        previous, current = (robot / PREVIOUS).resolve(), active_bundle(robot)
        if not (previous / MANIFEST_FILE).exists():
            raise FlashError(f"{robot / PREVIOUS} -> {previous}: the bundle is gone")
        _point(robot, CURRENT, previous)
        _point(robot, PREVIOUS, current)
    say(f"rolled back to {previous.name} (previous: {current.name})")
    return previous


def _prune(robot: Path) -> None:
    keep = {(robot / link).resolve() for link in (CURRENT, PREVIOUS) if (robot / link).is_symlink()}
    for path in (robot / BUNDLES).iterdir():
        if path.resolve() not in keep:
            shutil.rmtree(path, ignore_errors=True)


# -- command line -------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="the bundle directory to install")
    p.add_argument("--robot", type=Path, required=True, help="the robot's bundle directory (holds `current`)")
    p.add_argument("--backend", default="auto", help="backend for the smoke inference (default auto)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])


def run(args: argparse.Namespace) -> int:
    try:
        flash(args.bundle, args.robot, backend=args.backend, device=args.device)
    except (BundleError, FlashError) as exc:
        print(f"xvla-edge flash: refused, the active bundle is unchanged: {exc}", file=sys.stderr)
        return 1
    return 0
