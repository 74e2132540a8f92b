"""Optional dependencies of the commands: a missing one is one line naming the extra to install.

The robot install (``pip install xvla-edge``) has numpy, scipy, Pillow, tokenizers, pyserial and
prometheus_client; ONNX Runtime comes in the flavour the machine needs (``[onnxruntime]`` or
``[onnxruntime-gpu]``, or a wheel already there), the rest with an extra of ``setup.cfg``. A command imports
what an extra provides under :func:`needs`, so a missing package, or one that is installed but broken (a
torch whose shared libraries fail to load raises ``OSError``), becomes :class:`MissingDependency`, which the
CLI prints in one line with exit status 2 instead of a traceback. A missing ``onnxruntime`` module is named
as such whichever extra was asked for (export and quantization run ONNX Runtime too).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from xvla.errors import XVLAError

EXTRAS = {
    "torch": "the PyTorch model (torch, transformers, safetensors)",
    "export": "exporting checkpoints to bundles (torch, transformers, onnx, onnxscript)",
    "onnxruntime": "ONNX Runtime, CPU build (on NVIDIA machines install onnxruntime-gpu instead: both provide "
                   "the module onnxruntime)",
    "cuda12": "cuda-python 12.x for CUDA 12 drivers, JetPack 6 (TensorRT itself comes with JetPack or NVIDIA's "
              "wheels)",
    "cuda13": "cuda-python 13.x for CUDA 13 drivers, JetPack 7",
    "serve": "the policy server (fastapi, uvicorn, httptools, msgpack, websockets, json-numpy)",
    "fleet": "serving on Ray Serve, one machine or a cluster (ray[serve])",
    "remote": "RemotePolicy, a policy served by another machine (msgpack, websockets)",
    "cameras": "OpenCV cameras (on Jetson use JetPack's OpenCV instead)",
    "test": "tests, benchmarks and plots (pytest, pytest-benchmark, matplotlib)",
}


class MissingDependency(XVLAError, ImportError):
    """A command needs an optional package that is not installed (or does not import)."""

    def __init__(self, extra: str, cause: BaseException) -> None:
        super().__init__(f"needs the '{extra}' extra — {EXTRAS[extra]} — which does not import here "
                         f"({type(cause).__name__}: {cause}); install it with: pip install 'xvla-edge[{extra}]'")
        self.extra = extra


@contextlib.contextmanager
def needs(extra: str) -> Iterator[None]:
    """Wrap the imports of an extra's packages: their failure raises :class:`MissingDependency`."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; expected one of {', '.join(EXTRAS)}")
    try:
        yield
    except (ImportError, OSError) as exc:
        missing = getattr(exc, "name", None) or ""
        raise MissingDependency("onnxruntime" if missing.split(".")[0] == "onnxruntime" else extra, exc) from exc
