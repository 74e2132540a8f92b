"""Imports run downward only: each package's sources are parsed and every import (top-level or inside a
function) is checked against the layer rules of the design card."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROJECT = ("xvla", "export", "runtime", "drivers", "calibration", "benchmarks", "xvla_edge", "tools")

# package → (project packages it may not import, third-party roots it may not import, files exempt from the latter)
RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "xvla": (("export", "runtime", "drivers", "calibration", "benchmarks", "xvla_edge", "tools"), (), ()),
    "runtime": (("drivers", "export", "calibration", "benchmarks", "xvla_edge", "tools"), ("torch",),
                ("runtime/backends/torch_backend.py",)),
    "drivers": (tuple(p for p in PROJECT if p != "drivers"), ("torch",), ()),
    "export": (("drivers", "benchmarks", "xvla_edge", "tools"), (), ()),
    "calibration": (("export", "drivers", "benchmarks", "xvla_edge", "tools"), (), ()),
    "benchmarks": (("xvla_edge", "tools"), (), ()),
}


def imported_roots(source: str, module: str) -> set[str]:
    """Top-level names of every module ``source`` imports (``module``: its dotted name, for relative ones)."""
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = module.split(".")[: -node.level]
                roots.add((base or [node.module or ""])[0])
            elif node.module:
                roots.add(node.module.split(".")[0])
    return roots


def violations(package: str, root: Path = REPO) -> list[str]:
    forbidden, third_party, exempt = RULES[package]
    found = []
    for path in sorted((root / package).rglob("*.py")):
        if path.name.startswith("test_") or path.name == "conftest.py":
            continue  # a suite (benchmarks/test_*.py) exercises the layers above it, like tests/ does
        rel = path.relative_to(root).as_posix()
        module = rel[:-3].replace("/", ".")
        for name in sorted(imported_roots(path.read_text(), module)):
            if name in forbidden or (name in third_party and rel not in exempt):
                found.append(f"{rel} imports {name}")
    return found


@pytest.mark.parametrize("package", sorted(RULES))
def test_imports_run_downward_only(package):
    assert violations(package) == []


def test_nothing_below_the_application_layer_imports_it():
    users = [f"{p.relative_to(REPO)}" for pkg in PROJECT if pkg != "xvla_edge" and (REPO / pkg).is_dir()
             for p in (REPO / pkg).rglob("*.py")
             if not p.name.startswith("test_") and "xvla_edge" in imported_roots(p.read_text(), "x")]
    assert users == []


def test_the_checker_sees_imports_inside_functions_and_relative_ones(tmp_path):
    """The rules above are only worth something if a violation is found wherever the import hides."""
    (tmp_path / "drivers" / "sub").mkdir(parents=True)
    (tmp_path / "drivers" / "ok.py").write_text("import numpy\nfrom drivers import arm\n")
    (tmp_path / "drivers" / "sub" / "late.py").write_text("def f():\n    from runtime.policy import Policy\n")
    (tmp_path / "runtime").mkdir()
    (tmp_path / "runtime" / "a.py").write_text("from . import b\nimport torch.nn as nn\n")
    assert violations("drivers", tmp_path) == ["drivers/sub/late.py imports runtime"]
    assert violations("runtime", tmp_path) == ["runtime/a.py imports torch"]
