"""Fixtures of the deployment tests: two installable bundles, and a robot directory where both were flashed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from xvla_edge.deploy.install import flash


@pytest.fixture(scope="session")
def bundles(tmp_path_factory, tiny_bundle) -> tuple[Path, Path]:
    """Bundle ``a``, the session's tiny bundle copied; ``b`` is ``a`` with ``sampler.default_steps`` 10 → 4.

    ``b`` is a distinct, valid bundle (the manifest records its files' hashes, not its own; installs are told
    apart by the manifest's sha256), made without a second ~15 s export.
    """
    root = tmp_path_factory.mktemp("flash")
    a, b = root / "a", root / "b"
    shutil.copytree(tiny_bundle, a)
    shutil.copytree(a, b)
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["sampler"]["default_steps"] = 4
    (b / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return a, b


@pytest.fixture
def robot_ab(bundles, tmp_path) -> Path:
    """A robot directory where ``a`` was flashed, then ``b``: current → b, previous → a."""
    a, b = bundles
    robot = tmp_path / "robot"
    flash(a, robot, say=lambda line: None)
    flash(b, robot, say=lambda line: None)
    return robot
