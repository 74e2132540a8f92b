"""Inference backends: each runs a bundle's encoder once and its N-step denoising loop per chunk."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def tensorrt_available(bundle_dir: Path) -> bool:
    """True when ``import tensorrt`` can work and the bundle has engines built for this machine."""
    return importlib.util.find_spec("tensorrt") is not None and (Path(bundle_dir) / "engines").is_dir()
