"""The backends by name, and the subsets each command offers (standard library only: the command-line parsers
import it when ``xvla-edge --help`` builds them).

``auto`` is no backend of its own: :func:`runtime.policy.create_backend` picks TensorRT on CUDA when the
bundle's engines are there and the ``tensorrt`` module imports, else ONNX Runtime. Every subset below is
derived from :data:`BACKENDS` and the properties that set its members apart, so a new backend is named once.
"""

from __future__ import annotations

AUTO = "auto"
ONNXRUNTIME = "onnxruntime"
TENSORRT = "tensorrt"
TORCH = "torch"
BACKENDS = (ONNXRUNTIME, TENSORRT, TORCH)
DEVICES = ("cpu", "cuda")

CUDA_ONLY = (TENSORRT,)  # runs on the GPU only
NEEDS_CHECKPOINT = (TORCH,)  # runs the bundle's source PyTorch checkpoint, not the bundle's graphs

CHOICES = (AUTO, *BACKENDS)  # ``Policy.load``, ``[bundle].backend``, ``xvla-edge serve``
BUNDLE_CHOICES = (AUTO, *(b for b in BACKENDS if b not in NEEDS_CHECKPOINT))  # the bundle alone: flash, check, bench
SIM_CHOICES = tuple(b for b in BACKENDS if b not in CUDA_ONLY)  # ``sim eval``: the bundle or its checkpoint, on CPU
