"""Flash and rollback: atomic switch, previous kept, and the active bundle untouched by any failure."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from runtime import flash as fl
from runtime.manifest import BundleError


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, tiny_checkpoint):
    """Two honest bundles of one checkpoint (two domains, so two manifests)."""
    from export.bundle import ExportOptions, export_bundle

    root = tmp_path_factory.mktemp("flash")
    for domain in (3, 2):
        export_bundle(tiny_checkpoint, root / f"d{domain}", ExportOptions(domain_id=domain, views=1),
                      progress=lambda s: None)
    return root / "d3", root / "d2"


def tree(path: Path) -> dict:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def quiet(msg: str) -> None:
    pass


def test_flash_flash_rollback(bundles, tmp_path):
    a, b = bundles
    robot = tmp_path / "robot"
    first = fl.flash(a, robot, say=quiet)
    assert fl.active_bundle(robot) == first and tree(first) == tree(a)
    assert not (robot / "previous").exists()
    messages = []
    assert fl.flash(a, robot, say=messages.append) == first and "already the active bundle" in messages[0]
    second = fl.flash(b, robot, say=quiet)
    assert fl.active_bundle(robot) == second and (robot / "previous").resolve() == first
    assert (robot / "current").is_symlink() and not Path(str((robot / "current").readlink())).is_absolute()
    assert fl.rollback(robot, say=quiet) == first
    assert fl.active_bundle(robot) == first and (robot / "previous").resolve() == second
    assert sorted(p.name for p in (robot / "bundles").iterdir()) == sorted([first.name, second.name])


@pytest.mark.parametrize("step", ["copy", "build", "smoke", "check", "switch"])
def test_a_failure_at_any_step_leaves_the_active_bundle(bundles, tmp_path, monkeypatch, step):
    a, b = bundles
    robot = tmp_path / "robot"
    active = fl.flash(a, robot, say=quiet)
    before = tree(active)

    def boom(*args, **kwargs):
        raise OSError(f"injected failure at {step}")

    real_copy2 = shutil.copy2
    calls = {"n": 0}

    def copy_then_fail(src, dst):  # dies part-way through the copy
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError("injected failure at copy")
        return real_copy2(src, dst)

    checks = ()
    if step == "copy":
        monkeypatch.setattr(fl.shutil, "copy2", copy_then_fail)
    elif step == "build":
        monkeypatch.setattr(fl, "build_engines", boom)
    elif step == "smoke":
        monkeypatch.setattr(fl, "smoke_test", boom)
    elif step == "check":
        checks = (boom,)
    else:
        real_rename = fl.os.rename
        monkeypatch.setattr(fl.os, "rename", lambda s, d: boom() if ".staging-" in str(s) else real_rename(s, d))
    with pytest.raises(OSError, match="injected"):
        fl.flash(b, robot, checks=checks, say=quiet)
    monkeypatch.undo()
    assert fl.active_bundle(robot) == active and tree(active) == before
    assert not (robot / "previous").exists()
    assert not list(robot.glob(".staging-*")) and [p.name for p in (robot / "bundles").iterdir()] == [active.name]


def test_a_killed_flash_is_cleaned_by_the_next(bundles, tmp_path):
    a, b = bundles
    robot = tmp_path / "robot"
    fl.flash(a, robot, say=quiet)
    (robot / ".staging-99999").mkdir()  # what a SIGKILL mid-copy leaves
    (robot / ".staging-99999" / "denoise.onnx").write_bytes(b"half")
    assert fl.active_bundle(robot).name.startswith("libero")
    fl.flash(b, robot, say=quiet)
    assert not list(robot.glob(".staging-*"))


def test_tampered_bundles_are_refused_by_file(bundles, tmp_path):
    a, _ = bundles
    bad = tmp_path / "bad"
    shutil.copytree(a, bad)
    name = next(iter(json.loads((a / "manifest.json").read_text())["files"]))
    with open(bad / name, "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01")
    robot = tmp_path / "robot"
    with pytest.raises(BundleError, match=name):
        fl.flash(bad, robot, say=quiet)
    assert not (robot / "current").exists()
    (bad / name).unlink()
    with pytest.raises(BundleError, match=name):
        fl.flash(bad, robot, say=quiet)


def test_rollback_without_previous_and_concurrent_flash(bundles, tmp_path):
    import fcntl

    a, b = bundles
    robot = tmp_path / "robot"
    fl.flash(a, robot, say=quiet)
    with pytest.raises(fl.FlashError, match="no previous bundle"):
        fl.rollback(robot, say=quiet)
    with open(robot / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(fl.FlashError, match="another flash or rollback is running"):
            fl.flash(b, robot, say=quiet)
    with pytest.raises(fl.FlashError, match="no active bundle"):
        fl.active_bundle(tmp_path / "empty")
