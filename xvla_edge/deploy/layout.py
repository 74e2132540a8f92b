"""The bundle store of a robot: the names in its directory ``DIR`` and the rules that keep writes inside it.

    DIR/bundles/<embodiment>-d<domain>-<precision>-<12 hex of the bundle id>/   installed bundles
    DIR/current  -> bundles/...    the active bundle (point robot.toml's [bundle].path at DIR/current)
    DIR/previous -> bundles/...    what `rollback` makes active again
    DIR/.staging-<pid>/            a flash in progress (and ``.staging-<pid>.<link>``: a link being swapped)
    DIR/.lock                      flock'ed by the flash or rollback in progress; a second one is refused
    DIR/history.jsonl              one JSON line per flash or rollback: time, bundle id, installed name, previous
    DIR/.objects/, DIR/.incoming/  what a fleet flash sent, and the bundle assembled from it
                                   (:mod:`xvla_edge.deploy.fleet.agent`)

Nothing written is reached through a link: ``bundles``, ``.lock`` and ``history.jsonl`` must not be links
(:func:`check_robot` refuses them by name), and the last two are opened without following one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from runtime.manifest import MANIFEST_FILE, BundleError, Manifest
from runtime.manifest_schema import PRECISIONS
from xvla.errors import XVLAError

CURRENT, PREVIOUS, BUNDLES, LOCK, STAGING = "current", "previous", "bundles", ".lock", ".staging-"
HISTORY = "history.jsonl"  # every flash and rollback: time, bundle id, installed name, previous
OBJECTS, INCOMING = ".objects", ".incoming"
# the names a flash gives (and so the only ones its clean-up removes): an installed bundle, a staging directory
INSTALLED_NAME = re.compile(rf"[A-Za-z0-9_-][A-Za-z0-9._-]*-d[0-9]+-(?:{'|'.join(PRECISIONS)})-[0-9a-f]{{12}}"
                            r"(?:\.[0-9]+)?")
STAGING_NAME = re.compile(rf"{re.escape(STAGING)}[0-9]+(?:\.(?:{CURRENT}|{PREVIOUS}))?")


class FlashError(XVLAError, RuntimeError):
    """A flash or rollback was refused or failed; the active bundle is unchanged."""


def installed_name(manifest: Manifest) -> str:
    """The name a bundle is installed under in ``bundles/`` (before a ``.N`` suffix: see :func:`free_path`)."""
    return f"{manifest.embodiment}-d{manifest.domain_id}-{manifest.precision}-{manifest.bundle_id[:12]}"


def active_bundle(robot_dir: str | Path) -> Path:
    """The bundle directory ``DIR/current`` points at."""
    return linked_bundle(Path(robot_dir), CURRENT)


def link_target(robot_dir: str | Path, link: str) -> Optional[Path]:
    """Where ``DIR/link`` leads (None: it is not a link); a link that leads nowhere (a loop) gives itself."""
    path = Path(robot_dir) / link
    if not path.is_symlink():
        return None
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return path


def linked_bundle(robot: Path, link: str) -> Path:
    """The bundle directory ``DIR/link`` points at; :class:`FlashError` when it is no link or leads to no bundle."""
    path = robot / link
    target = link_target(robot, link)
    if target is None:
        hint = f"flash one with `xvla-edge flash BUNDLE --robot {robot}`" if link == CURRENT else "flash another first"
        raise FlashError(f"{path}: no {link} bundle (expected a symlink into {robot / BUNDLES}; {hint})")
    if not (target / MANIFEST_FILE).is_file():
        raise FlashError(f"{path} -> {target}: not a bundle (no {MANIFEST_FILE})")
    return target


def bundle_id(bundle: Path) -> Optional[str]:
    """The id of an installed bundle, or None when its manifest does not validate."""
    try:
        return Manifest.load(bundle).bundle_id
    except BundleError:
        return None


def check_robot(robot: Path) -> None:
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


def inside(robot: Path, path: Path) -> Path:
    """``path``, once checked to lie inside ``robot`` with no link on the way leading out."""
    if robot.resolve() not in (path.parent.resolve() / path.name).parents:
        raise FlashError(f"{path}: outside {robot}; refusing to write there")
    return path


def free_path(bundles: Path, name: str) -> Path:
    """``bundles/name``, or ``name.2``, ``name.3`` ... when it is taken: no directory a link points at is replaced."""
    path, n = bundles / name, 1
    while path.exists() or path.is_symlink():
        n += 1
        path = bundles / f"{name}.{n}"
    return path
