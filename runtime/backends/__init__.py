"""Inference backends: each runs a bundle's encoder once and its N-step denoising loop per chunk."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path


def tensorrt_available(bundle_dir: Path) -> bool:
    """True when ``import tensorrt`` works and ``BUNDLE/engines`` holds engines stamped for this machine and bundle.

    Engines that exist but cannot run here (another GPU or TensorRT version, a re-exported bundle, no CUDA
    device) give a warning saying why.
    """
    if importlib.util.find_spec("tensorrt") is None or not (Path(bundle_dir) / "engines").is_dir():
        return False
    from runtime.backends.tensorrt.backend import engines_problem

    problem = engines_problem(Path(bundle_dir))
    if problem is not None:
        warnings.warn(f"not using the TensorRT engines of {bundle_dir}: {problem}", stacklevel=2)
    return problem is None
