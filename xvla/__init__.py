"""X-VLA in PyTorch: config, network, checkpoint loading, preprocessing and the reference sampler.

``import xvla`` is cheap: torch is imported only when a torch-backed name is first used, so the
on-robot runtime can use :mod:`xvla.preprocessing` and :mod:`xvla.rotations` without torch installed.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "load_checkpoint": "xvla.checkpoint",
    "XVLA": "xvla.model",
    "write_random_checkpoint": "xvla.random_checkpoint",
    "XVLAConfig": "xvla.config",
    "load_config": "xvla.config",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'xvla' has no attribute {name!r}")
