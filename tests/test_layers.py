"""Imports run downward only: each package's sources are parsed and every import (top-level, inside a function
or under ``TYPE_CHECKING``) is checked against the layer rules of the design card, the room rules inside the
packages, and for cycles between the project's modules."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator

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
# Modules a package may import although RULES forbid their package, one line each (the stdlib-only kits).
ALLOWED: dict[str, tuple[str, ...]] = {"drivers": ("xvla.validation",)}

DRIVERS_GROUND = ("drivers.arm", "drivers.errors", "drivers.transport", "drivers.stream_parser",
                  "drivers.physical_ranges", "drivers.quaternion", "drivers.serial_bus", "drivers.servo_arm",
                  "drivers.lerobot_calibration")
DRIVERS_ROOMS = ("drivers.control", "drivers.emulation", "drivers.system", "drivers.dynamixel", "drivers.xvla_serial",
                 "drivers.feetech", "drivers.piper", "drivers.registry")
ARM_ROOMS = ("drivers.dynamixel", "drivers.xvla_serial", "drivers.feetech", "drivers.piper")  # one arm each

# Rooms inside the packages, one rule a line: room (a module or sub-package, dotted) → rooms it may not import.
ROOMS_APART: dict[str, tuple[str, ...]] = {
    "xvla_edge.serve": ("xvla_edge.daemon", "xvla_edge.sim"),
    "xvla_edge.daemon": ("xvla_edge.serve", "xvla_edge.sim", "xvla_edge.deploy"),
    "xvla_edge.sim": ("xvla_edge.serve", "xvla_edge.deploy"),
    "xvla_edge.deploy": ("xvla_edge.daemon", "xvla_edge.serve", "xvla_edge.sim"),
    "xvla_edge.deploy.install": ("xvla_edge.deploy.fleet",),
    "xvla_edge.web": ("xvla_edge.daemon", "xvla_edge.serve", "xvla_edge.sim", "xvla_edge.deploy"),
    "xvla_edge.daemon.state": ("xvla_edge.daemon.supervisor", "xvla_edge.daemon.operator", "xvla_edge.daemon.views"),
    "xvla_edge.daemon.operator": ("xvla_edge.daemon.supervisor", "xvla_edge.daemon.views"),
    "xvla_edge.daemon.views": ("xvla_edge.daemon.supervisor", "xvla_edge.daemon.operator"),
    # drivers/: each room stands on the ground floor (DRIVERS_GROUND); arms reach the control path as factories
    "drivers.control": (*ARM_ROOMS, "drivers.emulation", "drivers.registry"),
    "drivers.emulation": ("drivers.control", *ARM_ROOMS, "drivers.registry"),
    **{arm: ("drivers.control", *(other for other in ARM_ROOMS if other != arm), "drivers.emulation.sim_arm",
             "drivers.registry") for arm in ARM_ROOMS},
    "drivers.system": (*DRIVERS_GROUND, *DRIVERS_ROOMS),
    **{ground: DRIVERS_ROOMS for ground in DRIVERS_GROUND},
}

# Rooms with one way in, one rule a line: room → the modules that may import it (besides the room itself).
ROOM_ENTRANCES: dict[str, tuple[str, ...]] = {
    "xvla_edge.commands": ("xvla_edge.cli",),
}


def is_under(module: str, room: str) -> bool:
    """Whether ``module`` is ``room`` or inside it (``a.bc`` is not inside ``a.b``)."""
    return module == room or module.startswith(room + ".")


def module_name(rel: str) -> str:
    """The dotted name of the module in the file ``rel`` (a package's ``__init__.py``: the package)."""
    name = rel[:-3].replace("/", ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def imported_names(source: str, module: str, is_package: bool = False) -> set[str]:
    """Dotted names of everything ``source`` imports, wherever the import is (``module``: its dotted name, for
    relative imports; ``from a import b`` gives ``a.b``, which may be a module or a name in ``a``)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                parts = module.split(".")
                base = ".".join(parts[: len(parts) - node.level + is_package])
                base = ".".join(filter(None, (base, node.module)))
            else:
                base = node.module or ""
            names.update(f"{base}.{alias.name}" if base else alias.name for alias in node.names)
    return names


def imported_roots(source: str, module: str) -> set[str]:
    """Top-level names of every module ``source`` imports (``module``: its dotted name, for relative ones)."""
    return {name.split(".")[0] for name in imported_names(source, module)}


def sources(root: Path = REPO, packages: tuple[str, ...] = PROJECT) -> Iterator[tuple[str, Path]]:
    """(dotted module name, path) of every project source; test suites (``test_*.py``, ``conftest.py``) are
    left out: like tests/, a suite exercises the layers above it."""
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if not (path.name.startswith("test_") or path.name == "conftest.py"):
                yield module_name(path.relative_to(root).as_posix()), path


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    """Module → the project modules it imports (``from a import b``: ``a.b`` if that is a module, else ``a``)."""
    found = dict(sources(root))
    graph: dict[str, set[str]] = {}
    for module, path in found.items():
        edges = set()
        for name in imported_names(path.read_text(), module, path.name == "__init__.py"):
            while name and name not in found:
                name = name.rpartition(".")[0]
            if name and name != module:
                edges.add(name)
        graph[module] = edges
    return graph


def violations(package: str, root: Path = REPO) -> list[str]:
    forbidden, third_party, exempt = RULES[package]
    found = []
    for module, path in sources(root, (package,)):
        rel = path.relative_to(root).as_posix()
        names = [n for n in imported_names(path.read_text(), module)
                 if not any(is_under(n, allowed) for allowed in ALLOWED.get(package, ()))]
        for name in sorted({n.split(".")[0] for n in names}):
            if name in forbidden or (name in third_party and rel not in exempt):
                found.append(f"{rel} imports {name}")
    return found


def room_violations(root: Path = REPO) -> list[str]:
    """Imports that cross a wall of :data:`ROOMS_APART` or enter a room of :data:`ROOM_ENTRANCES` elsewhere."""
    found = []
    for module, imports in sorted(import_graph(root).items()):
        for name in sorted(imports):
            walls = [wall for room, walls in ROOMS_APART.items() if is_under(module, room)
                     for wall in walls if is_under(name, wall)]
            doors = [room for room, entrances in ROOM_ENTRANCES.items() if is_under(name, room)
                     and not is_under(module, room) and not any(is_under(module, e) for e in entrances)]
            found += [f"{module} imports {name} ({room} is apart)" for room in walls]
            found += [f"{module} imports {name} (only {', '.join(ROOM_ENTRANCES[room])} may)" for room in doors]
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle: one per set of modules that import each other round (Tarjan's strongly connected
    components), as the modules of one cycle through them, in import order, the first repeated at the end."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(node: str) -> None:  # recursion depth: the longest import chain, a few dozen modules
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: set[str] = set()
            while node not in component:
                component.add(stack.pop())
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_through(graph, component) for component in components]


def _cycle_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One cycle inside ``component`` (a strongly connected set of modules), from its first module round."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:  # breadth first, so the cycle shown is a shortest one through ``start``
        node = frontier.pop(0)
        for target in sorted(graph[node] & component):
            if target == start:
                return paths[node] + [start]
            if target not in paths:
                paths[target] = paths[node] + [target]
                frontier.append(target)
    raise AssertionError(f"{sorted(component)} is not strongly connected")


@pytest.mark.parametrize("package", sorted(RULES))
def test_imports_run_downward_only(package):
    assert violations(package) == []


def test_nothing_below_the_application_layer_imports_it():
    users = [f"{p.relative_to(REPO)}" for pkg in PROJECT if pkg != "xvla_edge" and (REPO / pkg).is_dir()
             for p in (REPO / pkg).rglob("*.py")
             if not p.name.startswith("test_") and "xvla_edge" in imported_roots(p.read_text(), "x")]
    assert users == []


def test_rooms_keep_their_walls():
    assert room_violations() == []


def test_no_import_cycle():
    assert [" → ".join(cycle) for cycle in cycles(import_graph())] == []


def test_the_rules_name_rooms_that_exist():
    """A rule about a room that was moved or renamed would pass forever: each names an existing module."""
    modules = set(import_graph())
    named = {name for rule in (ROOMS_APART, ROOM_ENTRANCES) for room, others in rule.items()
             for name in (room, *others)}
    assert sorted(room for room in named if room not in modules) == []



def test_every_room_and_ground_module_of_drivers_has_its_rule():
    """A new room (or a module on the ground floor) of drivers/ gets a rule before it gets code."""
    found = {f"drivers.{p.parent.name}" for p in (REPO / "drivers").glob("*/__init__.py")}
    found |= {f"drivers.{p.stem}" for p in (REPO / "drivers").glob("*.py") if p.stem not in ("__init__", "registry")}
    assert sorted(found - set(ROOMS_APART)) == []

def test_python_can_stays_in_the_piper_room_and_inside_functions():
    """python-can is the [piper] extra: only drivers/piper imports it, and only inside functions, so the registry
    (which names every driver) and the robot install load without it."""
    outside = [module for module, path in sources() if "can" in imported_roots(path.read_text(), module)
               and not is_under(module, "drivers.piper")]
    top_level = [module for module, path in sources(packages=("drivers",)) if is_under(module, "drivers.piper")
                 for node in ast.parse(path.read_text()).body if isinstance(node, (ast.Import, ast.ImportFrom))
                 and "can" in imported_roots(ast.unparse(node), module)]
    assert (outside, top_level) == ([], [])


def test_the_checker_sees_imports_inside_functions_and_relative_ones(tmp_path):
    """The rules above are only worth something if a violation is found wherever the import hides; a module
    :data:`ALLOWED` lets in is that module only, not the rest of its package."""
    (tmp_path / "drivers" / "sub").mkdir(parents=True)
    (tmp_path / "drivers" / "ok.py").write_text("import numpy\nfrom drivers import arm\n"
                                                "from xvla.validation import Field\nfrom xvla import validation\n")
    (tmp_path / "drivers" / "sub" / "late.py").write_text("def f():\n    from runtime.policy import Policy\n")
    (tmp_path / "drivers" / "uses_model.py").write_text("from xvla import model\n")
    (tmp_path / "runtime").mkdir()
    (tmp_path / "runtime" / "a.py").write_text("from . import b\nimport torch.nn as nn\n")
    assert violations("drivers", tmp_path) == ["drivers/sub/late.py imports runtime",
                                               "drivers/uses_model.py imports xvla"]
    assert violations("runtime", tmp_path) == ["runtime/a.py imports torch"]


def test_the_checker_finds_rooms_crossed_and_cycles(tmp_path):
    """A sub-package crossing a wall (in a function, relatively), a room entered by the wrong module, and a
    cycle of three modules (one edge under TYPE_CHECKING) are all found and named."""
    app = tmp_path / "xvla_edge"
    for room in ("serve", "daemon", "commands", "sim"):
        (app / room).mkdir(parents=True)
        (app / room / "__init__.py").write_text("")
    (app / "__init__.py").write_text("")
    (app / "cli.py").write_text("from xvla_edge.commands import run\n")
    (app / "commands" / "run.py").write_text("from xvla_edge.daemon import service\n")
    (app / "daemon" / "service.py").write_text("def f():\n    from ..serve.app import create\n")
    (app / "serve" / "app.py").write_text("import json\n")
    (app / "sim" / "a.py").write_text("from xvla_edge.sim import b\nfrom xvla_edge.commands.run import x\n")
    (app / "sim" / "b.py").write_text("from . import c\n")
    (app / "sim" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import xvla_edge.sim.a\n")
    for package in PROJECT:
        (tmp_path / package).mkdir(exist_ok=True)
    assert room_violations(tmp_path) == [
        "xvla_edge.daemon.service imports xvla_edge.serve.app (xvla_edge.serve is apart)",
        "xvla_edge.sim.a imports xvla_edge.commands.run (only xvla_edge.cli may)",
    ]
    assert cycles(import_graph(tmp_path)) == [["xvla_edge.sim.a", "xvla_edge.sim.b", "xvla_edge.sim.c",
                                               "xvla_edge.sim.a"]]
