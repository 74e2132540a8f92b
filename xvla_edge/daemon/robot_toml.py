"""The configuration of an emulated robot, as a value, and a configuration's ``robot.toml`` text.

:func:`emulated_robot` is the mapping (the data of a ``robot.toml``) of a synthetic camera, an emulated
xvla-serial arm and health off: the set-up the demo, the simulated task, the daemon tests and the benchmarks
run, with their own rates, sizes and settings. :meth:`RobotConfig.from_dict
<xvla_edge.daemon.config.RobotConfig.from_dict>` validates such a mapping as the daemon's configuration;
:func:`toml_text` writes it out for a daemon started from a file (:func:`robot_toml`: both in one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping

RATE_HZ = 200
DEFAULT_INSTRUCTION = "pick up the red block"


def emulated_robot(bundle: Path, port: str, recordings: Path, instruction: str = DEFAULT_INSTRUCTION,
                   **sections: Any) -> Dict[str, Any]:
    """The configuration of a synthetic camera, an emulated xvla-serial arm on ``port``, health off.

    ``sections`` add or override keys per table, e.g. ``control={"rate_hz": 100}``; a list for ``cameras``
    replaces the camera tables, a mapping updates the first.
    """
    tables: Dict[str, Dict[str, Any]] = {
        "bundle": {"path": str(bundle), "backend": "onnxruntime"},
        "arm": {"driver": "xvla-serial", "port": port, "space": "ee", "timeout_ms": 500},
        "control": {"rate_hz": RATE_HZ},
        "inference": {"start_fraction": 0.5},
        "health": {"port": 0},
        "recorder": {"directory": str(recordings)},
    }
    cameras: List[Dict[str, Any]] = [
        {"slot": 0, "source": "synthetic", "width": 320, "height": 240, "fps": 30, "max_age_s": 0.5}]
    for name, values in sections.items():
        if name == "cameras" and isinstance(values, list):
            cameras = [dict(camera) for camera in values]
        elif name == "cameras":
            cameras[0].update(values)
        else:
            tables.setdefault(name, {}).update(values)
    return {"instruction": instruction, "cameras": cameras, **tables}


def toml_text(config: Mapping[str, Any]) -> str:
    """``config`` (top-level scalars, tables of scalars and arrays, ``cameras`` an array of tables) as a
    ``robot.toml``."""
    tables = [(f"[[{name}]]", table) for name, value in config.items() if name == "cameras" for table in value]
    tables += [(f"[{name}]", value) for name, value in config.items() if isinstance(value, dict)]
    values = {name: value for name, value in config.items() if name != "cameras" and not isinstance(value, dict)}
    lines = ["# written by xvla-edge", *_assignments(values)]  # top-level keys come before the first table
    for header, table in tables:
        lines += ["", header, *_assignments(table)]
    return "\n".join(lines) + "\n"


def _assignments(values: Mapping[str, Any]) -> List[str]:
    """``key = value`` lines: JSON's strings, numbers, true/false and arrays of them are TOML's."""
    return [f"{key} = {json.dumps(value)}" for key, value in values.items()]


def robot_toml(bundle: Path, port: str, recordings: Path, instruction: str = DEFAULT_INSTRUCTION,
               **sections: Any) -> str:
    """The ``robot.toml`` of :func:`emulated_robot` (same arguments)."""
    return toml_text(emulated_robot(bundle, port, recordings, instruction, **sections))
