"""Another bundle from one bundle's files (the fleet tests flash one after the other)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def variant(bundle: Path, out: Path, steps: int) -> Path:
    """The same files under another manifest (another default step count): another bundle id."""
    shutil.copytree(bundle, out)
    raw = json.loads((out / "manifest.json").read_text())
    raw["sampler"]["default_steps"] = steps
    (out / "manifest.json").write_text(json.dumps(raw, indent=2))
    return out
