"""Flash and rollback: atomic switch, previous kept, and the installed bundles untouched by any failure (the
fixtures ``bundles`` and ``robot_ab``: conftest.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.manifest import BundleError
from xvla_edge.cli import main as cli
from xvla_edge.deploy import engines, install, settle, smoke
from xvla_edge.deploy.install import flash
from xvla_edge.deploy.layout import FlashError, active_bundle
from xvla_edge.deploy.rollback import rollback

REPO = Path(__file__).parents[3]


def quiet(msg: str) -> None:
    pass


def tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def state(robot: Path) -> tuple:
    """Everything a flash may touch: the links, every installed byte, and the names in the robot directory."""
    return (os.readlink(robot / "current"), os.readlink(robot / "previous"), tree(robot / "bundles"),
            sorted(p.name for p in robot.iterdir()))


def same_files(installed: Path, bundle: Path) -> bool:
    return tree(installed) == tree(bundle)


def test_flash_flash_rollback(bundles, tmp_path):
    a, b = bundles
    robot = tmp_path / "robot"
    said: list[str] = []
    first = flash(a, robot, say=said.append)
    assert any("TensorRT is not installed" in m for m in said)
    assert active_bundle(robot) == first.resolve() and same_files(first, a)
    assert first.parent == robot / "bundles" and not (robot / "previous").exists()
    said.clear()
    assert flash(a, robot, say=said.append) == first.resolve() and "already the active bundle" in said[0]

    second = flash(b, robot, say=quiet)
    assert active_bundle(robot) == second.resolve() and same_files(second, b)
    assert (robot / "previous").resolve() == first.resolve() and same_files(first, a)
    assert not os.path.isabs(os.readlink(robot / "current"))  # the directory can move (e.g. a new disk)

    assert rollback(robot, say=quiet) == first.resolve()
    assert active_bundle(robot) == first.resolve() and (robot / "previous").resolve() == second.resolve()
    assert rollback(robot, say=quiet) == second.resolve()
    assert sorted(p.name for p in (robot / "bundles").iterdir()) == sorted([first.name, second.name])
    assert sorted(p.name for p in robot.iterdir()) == [".lock", "bundles", "current", "history.jsonl", "previous"]
    ids = {bundle: hashlib.sha256(json.dumps(json.loads((bundle / "manifest.json").read_text()), sort_keys=True,
                                             separators=(",", ":")).encode()).hexdigest() for bundle in (a, b)}
    history = [json.loads(line) for line in (robot / "history.jsonl").read_text().splitlines()]
    assert [(h["action"], h["bundle_id"], h["bundle"], h["previous"]) for h in history] == [
        ("flash", ids[a], first.name, None), ("flash", ids[b], second.name, first.name),
        ("rollback", ids[a], first.name, second.name), ("rollback", ids[b], second.name, first.name)]
    assert first.name.endswith(ids[a][:12])  # installed under its bundle id


def test_older_bundles_are_pruned_and_a_reflash_of_previous_never_touches_it(robot_ab, bundles):
    a, _ = bundles
    old_a = (robot_ab / "previous").resolve()
    b = active_bundle(robot_ab)
    new_a = flash(a, robot_ab, say=quiet)  # the bundle `previous` holds, installed afresh beside it
    assert new_a.name == f"{old_a.name}.2" and same_files(new_a, a)
    assert active_bundle(robot_ab) == new_a.resolve() and (robot_ab / "previous").resolve() == b
    assert not old_a.exists()  # neither current nor previous: pruned


def test_a_build_step_output_is_installed(bundles, tmp_path, monkeypatch):
    a, _ = bundles

    def fake_build(staged: Path, timing_cache=None) -> None:  # what TensorRT's build leaves: engines/ inside the staged bundle
        (staged / "engines").mkdir()
        (staged / "engines" / "engines.json").write_text("{}")

    monkeypatch.setattr(engines, "build_engines", fake_build)
    installed = flash(a, tmp_path / "robot", say=quiet)
    assert (installed / "engines" / "engines.json").read_text() == "{}"


def test_the_build_starts_from_the_active_bundles_timing_cache_and_history_has_the_timings(bundles, tmp_path,
                                                                                           monkeypatch):
    a, b = bundles
    robot, caches = tmp_path / "robot", []

    def fake_build(staged: Path, timing_cache=None) -> None:
        caches.append(timing_cache)
        (staged / "engines").mkdir()
        (staged / "engines" / "timing.cache").write_text(f"timings for {staged.name}")

    monkeypatch.setattr(engines, "build_engines", fake_build)
    first = flash(a, robot, say=quiet)
    flash(b, robot, say=quiet)
    assert caches == [None, first / "engines" / "timing.cache"]  # the second build starts from the first's cache
    last = json.loads((robot / "history.jsonl").read_text().splitlines()[-1])
    assert last["engines"] is True and last["build_s"] >= 0 and last["smoke_s"] > 0


def _fail(step: str, monkeypatch: pytest.MonkeyPatch, robot: Path) -> tuple[tuple[install.Check, ...], str]:
    """Make ``step`` fail; returns the pre-switch checks to pass and the error expected."""
    def boom(*args, **kwargs):
        raise OSError(f"injected failure at {step}")

    if step == "verify":  # the staged copy fails its checksums
        real_verify = install.verify

        def verify(path: Path):
            if ".staging-" in str(path):
                raise BundleError(f"{path / 'encoder.onnx'}: injected")
            return real_verify(path)
        monkeypatch.setattr(install, "verify", verify)
        return (), r"\.staging-\d+/encoder\.onnx: injected"
    if step == "copy":  # dies after two files
        real_copy, copied = install.copy_file, []

        def copy_file(src: Path, dst: Path) -> None:
            if len(copied) == 2:
                boom()
            real_copy(src, dst)
            copied.append(dst)
        monkeypatch.setattr(install, "copy_file", copy_file)
        return (), "copy failed: injected"
    if step == "build":  # dies half-way through writing engines
        def half_build(staged: Path, timing_cache=None) -> None:
            (staged / "engines").mkdir()
            (staged / "engines" / "encoder.engine").write_bytes(b"half")
            boom()
        monkeypatch.setattr(engines, "build_engines", half_build)
        return (), "TensorRT engine build failed: injected"
    if step == "smoke":  # the policy runs but its actions are NaN
        from runtime.policy import Policy

        real_act = Policy.act
        monkeypatch.setattr(Policy, "act", lambda self, obs, **kw: dataclasses.replace(
            real_act(self, obs, **kw), actions=np.full((30, 20), np.nan, np.float32)))
        return (), r"smoke inference of .*: expected finite actions of shape \(30, 20\), got .* 600 non-finite"
    if step == "check":
        return (boom,), "pre-switch check 'boom' failed: injected"
    real_replace = os.replace  # "switch": renaming the new `current` link into place fails
    monkeypatch.setattr(os, "replace", lambda src, dst: boom() if Path(dst) == robot / "current"
                        else real_replace(src, dst))
    return (), "switch failed: injected"


@pytest.mark.parametrize("step", ["verify", "copy", "build", "smoke", "check", "switch"])
def test_a_failure_at_any_step_leaves_both_bundles_untouched(robot_ab, bundles, monkeypatch, step):
    a, _ = bundles
    before = state(robot_ab)
    checks, expected = _fail(step, monkeypatch, robot_ab)
    with pytest.raises((FlashError, BundleError), match=expected):
        flash(a, robot_ab, checks=checks, say=quiet)
    monkeypatch.undo()
    assert state(robot_ab) == before  # same links, same bytes, no staging directory, no half-installed bundle
    flash(a, robot_ab, say=quiet)
    assert not list(robot_ab.glob(".staging-*")) and len(list((robot_ab / "bundles").iterdir())) == 2


@pytest.mark.parametrize("tamper", ["bytes changed", "file missing", "manifest edited", "manifest not json"])
def test_a_tampered_bundle_is_refused_naming_the_file(robot_ab, bundles, tmp_path, tamper):
    a, _ = bundles
    bad = tmp_path / "bad"
    shutil.copytree(a, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    name = "denoise.onnx.data"
    if tamper == "bytes changed":
        with open(bad / name, "r+b") as f:
            f.seek(100)
            f.write(bytes(b ^ 0xFF for b in f.read(2)))
    elif tamper == "file missing":
        (bad / name).unlink()
    elif tamper == "manifest edited":
        manifest["files"][name]["sha256"] = "0" * 64
        (bad / "manifest.json").write_text(json.dumps(manifest))
    else:
        name = "manifest.json"
        (bad / name).write_text("{ not json")
    before = state(robot_ab)
    with pytest.raises(BundleError, match=rf"{bad / name}: "):
        flash(bad, robot_ab, say=quiet)
    assert state(robot_ab) == before


KILLABLE_FLASH = """
import sys, time
from pathlib import Path
from xvla_edge.deploy import install

real_copy, copied = install.copy_file, []
def slow_copy(src, dst):
    real_copy(src, dst)
    copied.append(dst)
    if len(copied) == 2:  # two files in staging, the lock held: tell the test, then wait to be killed
        Path(sys.argv[3]).touch()
        time.sleep(60)
install.copy_file = slow_copy
install.flash(sys.argv[1], sys.argv[2], say=lambda m: None)
"""


@pytest.mark.subprocess
def test_a_killed_flash_blocks_others_while_alive_and_is_cleaned_by_the_next(bundles, tmp_path):
    a, b = bundles
    robot, marker = tmp_path / "robot", tmp_path / "copying"
    first = flash(a, robot, say=quiet)
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE_FLASH, str(b), str(robot), str(marker)], cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the flash subprocess never reached the copy"
            time.sleep(0.02)
        with pytest.raises(FlashError, match="another flash or rollback is running"):
            flash(b, robot, say=quiet)
        with pytest.raises(FlashError, match="another flash or rollback is running"):
            rollback(robot, say=quiet)
    finally:
        proc.kill()  # SIGKILL mid-copy: no cleanup runs
        proc.wait()
    assert [p.name for p in robot.glob(".staging-*")] == [f".staging-{proc.pid}"]
    assert active_bundle(robot) == first.resolve() and same_files(first, a) and not (robot / "previous").exists()
    second = flash(b, robot, say=quiet)
    assert not list(robot.glob(".staging-*"))
    assert active_bundle(robot) == second.resolve() and (robot / "previous").resolve() == first.resolve()


def test_rollback_and_active_bundle_errors(robot_ab, bundles, tmp_path):
    a, _ = bundles
    with pytest.raises(FlashError, match=r"empty/current: no current bundle .*xvla-edge flash BUNDLE"):
        active_bundle(tmp_path / "empty")
    with pytest.raises(FlashError, match="empty: no such directory"):
        rollback(tmp_path / "empty", say=quiet)
    assert not (tmp_path / "empty").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FlashError, match="empty/current: no current bundle"):
        rollback(tmp_path / "empty", say=quiet)
    one = tmp_path / "one"
    flash(a, one, say=quiet)
    with pytest.raises(FlashError, match=r"one/previous: no previous bundle"):
        rollback(one, say=quiet)

    before = state(robot_ab)  # a previous bundle damaged on disk is not switched to
    previous = (robot_ab / "previous").resolve()
    (previous / "tokenizer.json").write_text("{}")
    with pytest.raises(FlashError, match=r"previous -> .* fails its checksums.*tokenizer\.json"):
        rollback(robot_ab, say=quiet)
    assert state(robot_ab)[:2] == before[:2]

    os.symlink(os.readlink(robot_ab / "current"), robot_ab / "tmp")  # a kill between the two link updates
    os.replace(robot_ab / "tmp", robot_ab / "previous")
    with pytest.raises(FlashError, match="both point at"):
        rollback(robot_ab, say=quiet)


def test_a_broken_current_link_is_replaced_and_not_kept_as_previous(robot_ab, bundles):
    a, _ = bundles
    previous = os.readlink(robot_ab / "previous")
    shutil.rmtree(active_bundle(robot_ab))
    with pytest.raises(FlashError, match=r"current -> .*: not a bundle \(no manifest.json\)"):
        active_bundle(robot_ab)
    said: list[str] = []
    installed = flash(a, robot_ab, say=said.append)
    assert any("is not a bundle; replacing it" in m for m in said)
    assert active_bundle(robot_ab) == installed.resolve() and os.readlink(robot_ab / "previous") == previous


def test_cli_exit_codes(bundles, tmp_path, capsys):
    a, b = bundles
    robot = str(tmp_path / "robot")
    assert cli(["rollback", "--robot", robot]) == 1
    assert "robot: no such directory" in capsys.readouterr().err
    assert cli(["flash", str(a), "--robot", robot]) == 0
    assert cli(["flash", str(b), "--robot", robot, "--backend", "onnxruntime"]) == 0
    assert cli(["rollback", "--robot", robot]) == 0
    assert active_bundle(robot).name.startswith("libero-franka-d3-fp32-")
    bad = tmp_path / "bad"
    shutil.copytree(b, bad)
    (bad / "encoder.onnx").unlink()
    capsys.readouterr()
    assert cli(["flash", str(bad), "--robot", robot]) == 1
    assert f"{bad / 'encoder.onnx'}: listed in manifest.json but missing" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        cli(["flash", str(a)])
    assert usage.value.code == 2


@pytest.mark.subprocess
def test_the_flash_modules_import_without_torch_or_export() -> None:
    code = ("import sys, xvla_edge.deploy.install, xvla_edge.deploy.rollback, xvla_edge.commands.flash, "
            "xvla_edge.commands.rollback; "
            "bad = [m for m in ('torch', 'export') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("field, value, named", [
    ("embodiment", "../../escaped", 'embodiment = "../../escaped": expected a plain name'),
    ("files", "../outside.bin", 'files: "../outside.bin" is not a plain file name'),
    ("files", "/tmp/abs.bin", 'files: "/tmp/abs.bin" is not a plain file name'),
])
def test_a_manifest_cannot_lead_flash_out_of_the_robot_directory(robot_ab, bundles, tmp_path, field, value, named):
    a, _ = bundles
    bad = shutil.copytree(a, tmp_path / "bad")
    manifest = json.loads((bad / "manifest.json").read_text())
    if field == "files":
        manifest["files"][value] = manifest["files"]["tokenizer.json"]
    else:
        manifest[field] = value
    (bad / "manifest.json").write_text(json.dumps(manifest))
    before, outside = state(robot_ab), sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(BundleError, match=re.escape(named)):
        flash(bad, robot_ab, say=quiet)
    assert state(robot_ab) == before and sorted(p.name for p in tmp_path.iterdir()) == outside
    assert not (robot_ab.parent / "escaped").exists() and not Path("/tmp/abs.bin").exists()


def test_robot_directories_that_are_not_safe_are_refused_by_name(bundles, tmp_path):
    a, _ = bundles
    plain = tmp_path / "plain"
    plain.write_text("not a directory")
    with pytest.raises(FlashError, match=rf"--robot {plain}: not a directory"):
        flash(a, plain, say=quiet)
    robot, elsewhere = tmp_path / "robot", tmp_path / "elsewhere"
    robot.mkdir()
    elsewhere.mkdir()
    (elsewhere / "precious").write_text("kept")
    (robot / "bundles").symlink_to(elsewhere)  # pruning through this link would delete `precious`
    with pytest.raises(FlashError, match="bundles: expected the directory of installed bundles, found a link"):
        flash(a, robot, say=quiet)
    assert (elsewhere / "precious").read_text() == "kept"


def test_a_hung_smoke_inference_is_refused_within_its_timeout(robot_ab, bundles, monkeypatch):
    a, _ = bundles
    release = threading.Event()
    monkeypatch.setattr(smoke, "smoke_test", lambda *args: release.wait(60))  # a backend that never returns
    before = state(robot_ab)
    try:
        with pytest.raises(FlashError, match="smoke inference on auto/cpu did not finish within 0.5 s"):
            flash(a, robot_ab, smoke_timeout_s=0.5, say=quiet)
    finally:
        release.set()
    assert state(robot_ab) == before
    for bad in (math.nan, -1.0, math.inf):
        with pytest.raises(FlashError, match="expected a finite number of seconds > 0"):
            flash(a, robot_ab, smoke_timeout_s=bad, say=quiet)


# -- after the switch, nothing turns the operation into a failure -------------------------------------------


@pytest.mark.parametrize("op", ["flash", "rollback"])
@pytest.mark.parametrize("step", ["record", "clean"])
def test_a_failure_after_the_switch_is_a_warning_and_the_switch_stands(robot_ab, bundles, monkeypatch, op, step):
    a, _ = bundles
    current, previous = active_bundle(robot_ab), (robot_ab / "previous").resolve()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(settle, step, disk_full)
    said: list[str] = []
    active = flash(a, robot_ab, say=said.append) if op == "flash" else rollback(robot_ab, say=said.append)
    assert active_bundle(robot_ab) == active.resolve() and (robot_ab / "previous").resolve() == current
    if op == "rollback":
        assert active == previous
    assert any(m.startswith(f"warning: {op} done") and "No space left on device" in m for m in said), said


# -- clean-up: after a successful switch only, and only the names flash gives -------------------------------


def test_a_refused_command_removes_nothing_and_a_successful_one_only_what_flash_made(robot_ab, bundles, monkeypatch):
    a, _ = bundles
    bundles_dir, previous = robot_ab / "bundles", (robot_ab / "previous").resolve()
    keep = shutil.copytree(previous, bundles_dir / f"{previous.name}.keep")  # an operator's copy
    (bundles_dir / "notes.txt").write_text("why .keep is kept")
    stale = shutil.copytree(previous, bundles_dir / f"{previous.name}.7")  # a killed flash's renamed copy
    (robot_ab / ".staging-999999").mkdir()  # a killed flash's staging
    (robot_ab / ".staging-999999" / "encoder.onnx").write_bytes(b"half")
    before = state(robot_ab)

    def refuse(staged: Path) -> None:
        raise FlashError("accuracy gate: refused")

    with pytest.raises(FlashError, match="accuracy gate: refused"):  # refused after taking the lock
        flash(a, robot_ab, checks=(refuse,), say=quiet)
    assert state(robot_ab) == before
    os.symlink(os.readlink(robot_ab / "current"), robot_ab / "tmp")  # previous = current: rollback refuses
    os.replace(robot_ab / "tmp", robot_ab / "previous")
    refused = state(robot_ab)
    with pytest.raises(FlashError, match="nothing to roll back to"):
        rollback(robot_ab, say=quiet)
    assert state(robot_ab) == refused

    said: list[str] = []
    installed = flash(a, robot_ab, say=said.append)
    assert installed.name == f"{previous.name}.2" and active_bundle(robot_ab) == installed
    assert not stale.exists() and not previous.exists() and not (robot_ab / ".staging-999999").exists()
    assert same_files(keep, a) and (bundles_dir / "notes.txt").read_text() == "why .keep is kept"
    assert sorted(p.name for p in bundles_dir.iterdir()) == sorted(
        [installed.name, (robot_ab / "previous").resolve().name, keep.name, "notes.txt"])
    assert [m for m in said if m.startswith("left alone")] == [
        f"left alone in {bundles_dir} (not names flash gives): {keep.name}, notes.txt"]


@pytest.mark.parametrize("name", [".lock", "history.jsonl"])
def test_a_link_placed_where_flash_writes_a_file_is_refused_and_its_target_untouched(robot_ab, bundles, tmp_path,
                                                                                      name):
    a, _ = bundles
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    (robot_ab / name).unlink()
    (robot_ab / name).symlink_to(outside)
    before = state(robot_ab)
    for command in (lambda: flash(a, robot_ab, say=quiet), lambda: rollback(robot_ab, say=quiet)):
        with pytest.raises(FlashError, match=rf"{re.escape(str(robot_ab / name))}: expected the .* found a link"):
            command()
        assert outside.read_text() == "precious" and state(robot_ab) == before
