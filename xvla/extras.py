"""Optional dependencies: a missing one is one message naming what needs it, the package, why its import failed
and how to install it (standard library only, so every layer raises the same :class:`MissingDependency`).

The robot install (``pip install xvla-edge``) has numpy, scipy, Pillow, tokenizers, pyserial and
prometheus_client; ONNX Runtime comes in the flavour the machine needs (``[onnxruntime]`` or
``[onnxruntime-gpu]``, or a wheel already there), the rest with an extra of ``setup.cfg`` (:data:`EXTRAS`), and
TensorRT with the platform (:data:`PLATFORM`). A command imports what an extra provides under :func:`needs`, so
a missing package, or one that is installed but broken (a torch whose shared libraries fail to load raises
``OSError``), becomes :class:`MissingDependency`, which the CLI prints in one line with exit status 2 instead of
a traceback; the runtime raises it too (its backends' errors derive from it where a package is missing). A
missing ``onnxruntime`` module is named as such whichever extra was asked for (export and quantization run ONNX
Runtime too).
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
    "cameras": "OpenCV cameras (on Jetson use JetPack's OpenCV instead: it has GStreamer)",
    "piper": "the AgileX Piper arm over CAN (python-can)",
    "test": "tests, benchmarks and plots (pytest, pytest-benchmark, matplotlib)",
}
#: Optional packages that come with the platform, not with an extra: name → (what it is, how to install it).
PLATFORM = {
    "tensorrt": ("TensorRT", "its engines are built and run on the target",
                 "JetPack's TensorRT on a Jetson (python3-libnvinfer, or the TensorRT wheel from the Jetson AI Lab "
                 "index), `pip install tensorrt` from pypi.nvidia.com on an x86 GPU machine"),
}


class MissingDependency(XVLAError, ImportError):
    """Something needs an optional package that is not installed (or does not import); ``extra``: its key of
    :data:`EXTRAS` or :data:`PLATFORM`. Made by :meth:`of`, which words the message."""

    def __init__(self, message: str, extra: str = "") -> None:
        super().__init__(message)
        self.extra = extra

    @classmethod
    def of(cls, extra: str, cause: BaseException, *, needed_by: str = "", install: str = "",
           detail: str = "") -> MissingDependency:
        """The error for ``extra``, whose import failed with ``cause``. ``needed_by``: what needs it (default: the
        command the CLI names); ``install``: how to install it, where the extra's ``pip install`` needs more
        words; ``detail``: what else to know, appended."""
        if extra in PLATFORM:
            name, what, how = PLATFORM[extra]
        else:
            name, what, how = f"the '{extra}' extra", EXTRAS[extra], f"pip install 'xvla-edge[{extra}]'"
        who = f"{needed_by} needs" if needed_by else "needs"
        return cls(f"{who} {name} — {what} — which does not import here ({type(cause).__name__}: {cause}); "
                   f"install it with: {install or how}" + (f"; {detail}" if detail else ""), extra)


@contextlib.contextmanager
def needs(extra: str) -> Iterator[None]:
    """Wrap the imports of an extra's packages: their failure raises :class:`MissingDependency`."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; expected one of {', '.join(EXTRAS)}")
    try:
        yield
    except MissingDependency:  # raised below the command (a backend's package): already says what to install
        raise
    except (ImportError, OSError) as exc:
        missing = getattr(exc, "name", None) or ""
        raise MissingDependency.of("onnxruntime" if missing.split(".")[0] == "onnxruntime" else extra, exc) from exc
