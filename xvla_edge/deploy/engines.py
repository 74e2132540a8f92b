"""TensorRT engines built at install, on the robot (an engine belongs to its GPU and TensorRT version)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from runtime.backends.tensorrt.backend import TIMING_CACHE
from runtime.manifest import ENGINES_DIR, Manifest


def active_timing_cache(active: Optional[Path]) -> Optional[Path]:
    """The timing cache of the active bundle ``active`` (None: there is none), which a build starts from."""
    return None if active is None else active / ENGINES_DIR / TIMING_CACHE


def build_engines(staged: Path, timing_cache: Optional[Path] = None) -> Optional[str]:
    """Build TensorRT engines in ``staged`` when TensorRT is installed (starting from ``timing_cache``, the active
    bundle's, when there is one); otherwise return why not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed here: no engines built (the bundle will run on ONNX Runtime)"
    from runtime.backends.tensorrt import build

    manifest = Manifest.load(staged)
    if manifest.precision not in build.BUILDABLE_PRECISIONS:
        return f"a {manifest.precision} bundle: no TensorRT engines built (it runs on ONNX Runtime)"
    build.build_engines(staged, build.check_buildable(staged, force=True), timing_cache=timing_cache)
    return None
