"""xvla.files: the one atomic directory write and sha256 inventory every layer uses."""

from __future__ import annotations

import hashlib
import os

import pytest

from xvla.errors import OutputError, XVLAError
from xvla.files import atomic_directory, file_problem, inventory


def tree(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_the_directory_appears_only_when_the_block_succeeds(tmp_path):
    out = tmp_path / "bundle"
    with atomic_directory(out) as tmp:
        (tmp / "a.bin").write_bytes(b"new")
        assert not out.exists() and tmp.parent == tmp_path
    assert tree(out) == {"a.bin": b"new"} and os.listdir(tmp_path) == ["bundle"]


def test_a_failure_leaves_the_previous_directory_byte_identical_and_no_leftovers(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "old.bin").write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(out, force=True) as tmp:
            (tmp / "half.bin").write_bytes(b"half")
            raise KeyboardInterrupt
    assert tree(out) == {"old.bin": b"old"} and os.listdir(tmp_path) == ["bundle"]
    with atomic_directory(out, force=True) as tmp:
        (tmp / "new.bin").write_bytes(b"new")
    assert tree(out) == {"new.bin": b"new"} and os.listdir(tmp_path) == ["bundle"]


def test_targets_that_cannot_be_written_are_refused_before_any_work(tmp_path):
    (tmp_path / "exists").mkdir()
    for out, message in ((tmp_path / "exists", "already exists; pass --force"),
                         (tmp_path / "no" / "parent", "is not an existing directory")):
        with pytest.raises(OutputError, match=message) as info:
            with atomic_directory(out):
                pytest.fail("the block must not run")
        assert isinstance(info.value, XVLAError) and str(out) in str(info.value)


def test_inventory_and_file_problem_against_hashlib(tmp_path):
    (tmp_path / "a.onnx").write_bytes(b"graph")
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    entries = inventory(tmp_path, exclude=["manifest.json"])
    assert entries == {"a.onnx": {"sha256": hashlib.sha256(b"graph").hexdigest(), "bytes": 5}}
    path = tmp_path / "a.onnx"
    assert file_problem(path, entries["a.onnx"], "manifest.json") is None
    path.write_bytes(b"grapH")  # same size, other bytes
    assert "sha256" in file_problem(path, entries["a.onnx"], "manifest.json")
    path.write_bytes(b"graph!")
    assert "6 bytes; manifest.json records 5" in file_problem(path, entries["a.onnx"], "manifest.json")
    path.unlink()
    assert file_problem(path, entries["a.onnx"], "manifest.json") == f"{path}: listed in manifest.json but missing"
