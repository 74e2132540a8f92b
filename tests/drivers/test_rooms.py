"""The rooms of drivers/ import only what their package docstrings allow: the control path never imports an arm
family or the emulation stand-ins, the ground floor imports no room, system/ nothing of drivers/ at all."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator

import pytest

DRIVERS = Path(__file__).resolve().parents[2] / "drivers"
GROUND = ("drivers.arm", "drivers.errors", "drivers.transport", "drivers.stream_parser", "drivers.physical_ranges")

# room → the modules of drivers/ (dotted prefixes) it may import; drivers/registry.py, the top, may import any
ALLOWED: dict[str, tuple[str, ...]] = {
    "ground": GROUND,
    "control": (*GROUND, "drivers.control", "drivers.system"),
    "emulation": (*GROUND, "drivers.emulation", "drivers.control.quaternion"),
    "system": (),
    "dynamixel": (*GROUND, "drivers.dynamixel", "drivers.emulation.pty_emulator"),
    "xvla_serial": (*GROUND, "drivers.xvla_serial", "drivers.emulation.pty_emulator"),
}


def room(path: Path, root: Path) -> str:
    """The room of a source file under ``root`` (drivers/): its sub-package, or "ground" for a top-level module."""
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else "ground"


def imported_modules(path: Path, root: Path) -> Iterator[str]:
    """Every module the file imports, top-level or inside a function; ``from drivers.x import y`` names
    ``drivers.x.y`` when ``y`` is a module under ``root``."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                module = root.parent.joinpath(*name.split("."))
                yield name if module.with_suffix(".py").is_file() or module.is_dir() else node.module


def violations(name: str, root: Path = DRIVERS) -> list[str]:
    allowed = ALLOWED[name]
    found = []
    for path in sorted(root.rglob("*.py")):
        if room(path, root) != name or path == root / "registry.py":
            continue
        found += [f"{path.relative_to(root.parent).as_posix()} imports {module}"
                  for module in sorted(set(imported_modules(path, root)))
                  if module.split(".")[0] == "drivers" and not any(module == a or module.startswith(a + ".")
                                                                   for a in allowed)]
    return found


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_each_room_imports_only_what_it_may(name):
    assert violations(name) == []


def test_every_room_has_its_rules():
    assert {room(path, DRIVERS) for path in DRIVERS.rglob("*.py")} == set(ALLOWED)


def test_the_checker_sees_modules_imported_by_name_and_inside_functions(tmp_path):
    for folder in ("control", "emulation"):
        (tmp_path / "drivers" / folder).mkdir(parents=True)
    (tmp_path / "drivers" / "emulation" / "sim_arm.py").write_text("")
    (tmp_path / "drivers" / "control" / "loop.py").write_text(
        "from drivers.arm import Arm\nfrom drivers.emulation import sim_arm\n"
        "def f():\n    import drivers.dynamixel.arm\n")
    assert violations("control", tmp_path / "drivers") == [
        "drivers/control/loop.py imports drivers.dynamixel.arm",
        "drivers/control/loop.py imports drivers.emulation.sim_arm"]
