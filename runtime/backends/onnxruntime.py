"""ONNX Runtime backend: CPU by default, CUDA where ``onnxruntime-gpu`` and a GPU are present.

Static memory plan: every input and output of both graphs is a buffer allocated once and bound by
address (IO binding), so a chunk allocates nothing per step. The denoise loop ping-pongs two x0 buffers:
step i reads ``prev`` from one and writes ``x0`` into the other; ``t`` is written in place.

ONNX Runtime silently falls back to the CPU when a requested provider fails to load; the providers a
session actually uses are checked after creation and a mismatch is an error.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from runtime.backends.base import Backend, BackendError
from runtime.manifest import GraphSpec, Manifest

#: Both wheels provide the module ``onnxruntime``; xvla-edge depends on neither, so that installing it never
#: replaces a GPU build with the CPU one (see setup.cfg's extras).
NOT_INSTALLED = ("ONNX Runtime is not installed: neither onnxruntime (CPU) nor onnxruntime-gpu (CUDA) imports "
                 "here. Install one: pip install 'xvla-edge[onnxruntime]' on CPU-only machines; on NVIDIA "
                 "machines onnxruntime-gpu (on Jetson the wheel built for your JetPack)")
try:
    import onnxruntime as ort
except ImportError as exc:
    raise BackendError(f"{NOT_INSTALLED} ({exc})") from exc

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def session_options(threads: int | None) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or (os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return opts


def create_session(path: Path, device: str, threads: int | None) -> ort.InferenceSession:
    """A session on exactly the requested device, or :class:`BackendError` naming what is available."""
    if device not in _PROVIDERS:
        raise BackendError(f"device {device!r} is not supported by the onnxruntime backend; expected one of {sorted(_PROVIDERS)}")
    wanted = _PROVIDERS[device]
    available = ort.get_available_providers()
    if wanted not in available:
        raise BackendError(f"onnxruntime has no {wanted} in this install (available: {available}); "
                           "for CUDA install onnxruntime-gpu instead of onnxruntime")
    providers = [wanted] if device == "cpu" else [wanted, "CPUExecutionProvider"]
    try:
        sess = ort.InferenceSession(str(path), sess_options=session_options(threads), providers=providers)
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        raise BackendError(f"{path}: onnxruntime could not load the graph ({e})") from None
    used = sess.get_providers()
    if used[0] != wanted:
        raise BackendError(f"{path}: asked for {wanted} but onnxruntime runs it on {used} (provider failed to load; "
                           "check CUDA/cuDNN libraries)")
    return sess


_ORT_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)", "int64": "tensor(int64)",
              "int32": "tensor(int32)", "bool": "tensor(bool)"}


def check_io(sess: ort.InferenceSession, graph: GraphSpec, path: Path) -> None:
    """The graph file must declare exactly the inputs and outputs the manifest promises (name, shape, type)."""
    declared = {t.name: (tuple(t.shape), t.type) for t in (*sess.get_inputs(), *sess.get_outputs())}
    promised = {s.name: (s.shape, _ORT_TYPES[s.dtype]) for s in (*graph.inputs, *graph.outputs)}
    wrong = [f"{name}: the graph declares {declared.get(name, 'nothing')}, the manifest {promised[name]}"
             for name in promised if declared.get(name) != promised[name]]
    wrong += [f"{name}: declared by the graph, not in the manifest" for name in declared.keys() - promised.keys()]
    if wrong:
        raise BackendError(f"{path} does not match manifest.json: " + "; ".join(sorted(wrong)))


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, manifest: Manifest, bundle_dir: str | Path, *, device: str = "cpu",
                 threads: int | None = None) -> None:
        super().__init__(manifest)
        bundle_dir = Path(bundle_dir)
        self.device = device
        self.encoder = create_session(bundle_dir / manifest.encoder.file, device, threads)
        self.denoiser = create_session(bundle_dir / manifest.denoise.file, device, threads)
        for sess, graph in ((self.encoder, manifest.encoder), (self.denoiser, manifest.denoise)):
            check_io(sess, graph, bundle_dir / graph.file)
        spec = {s.name: s for s in (*manifest.encoder.inputs, *manifest.encoder.outputs,
                                    *manifest.denoise.inputs, *manifest.denoise.outputs)}
        buf = {name: np.zeros(s.shape, dtype=np.dtype(s.dtype)) for name, s in spec.items()}
        self.buffers = buf
        self.x0 = [np.zeros_like(buf["x0"]), np.zeros_like(buf["x0"])]  # ping-pong
        self.enc_binding = self._bind(self.encoder, {n: buf[n] for n in ("pixel_values", "image_mask", "input_ids")},
                                      {"context": buf["context"]})
        common = {n: buf[n] for n in ("context", "x1", "proprio", "t")}
        # binding[k] reads prev from x0[k] and writes x0 into x0[1 - k]
        self.den_bindings = [
            self._bind(self.denoiser, {**common, "prev": self.x0[k]}, {"x0": self.x0[1 - k], "action": buf["action"]})
            for k in (0, 1)
        ]

    def _bind(self, sess: ort.InferenceSession, inputs: dict[str, np.ndarray],
              outputs: dict[str, np.ndarray]) -> ort.IOBinding:
        binding = sess.io_binding()
        for name, arr in inputs.items():
            binding.bind_input(name, "cpu", 0, arr.dtype, list(arr.shape), arr.ctypes.data)
        for name, arr in outputs.items():
            binding.bind_output(name, "cpu", 0, arr.dtype, list(arr.shape), arr.ctypes.data)
        return binding

    def encode(self, pixel_values: np.ndarray, image_mask: np.ndarray, input_ids: np.ndarray) -> None:
        b = self.buffers
        np.copyto(b["pixel_values"], pixel_values)
        np.copyto(b["image_mask"], image_mask)
        np.copyto(b["input_ids"], input_ids)
        self.encoder.run_with_iobinding(self.enc_binding)

    def denoise(self, x1: np.ndarray, proprio: np.ndarray, steps: int) -> np.ndarray:
        b = self.buffers
        np.copyto(b["x1"], x1)
        np.copyto(b["proprio"], proprio)
        self.x0[0].fill(0.0)
        for k, i in enumerate(range(steps, 0, -1)):
            b["t"][0] = i / steps
            self.denoiser.run_with_iobinding(self.den_bindings[k % 2])
        return b["action"]

    def close(self) -> None:
        self.encoder = self.denoiser = None  # type: ignore[assignment]
