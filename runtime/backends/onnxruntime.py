"""ONNX Runtime backend: CPU by default, CUDA where ``onnxruntime-gpu`` and a GPU are present.

Static memory plan: every input and output of both graphs is a buffer allocated once and bound by
address (IO binding), so a chunk allocates nothing per step; a bundle with batch sizes gets one such plan per
size, made on first use. The denoise loop ping-pongs two x0 buffers:
step i reads ``prev`` from one and writes ``x0`` into the other; ``t`` is written in place. A bundle that supports
real-time chunking binds ``prefix`` and ``prefix_weights`` like the other inputs: written once per chunk, read by
every step; zeros when a chunk has no prefix (the buffers are zeroed in place, once, after a chunk that had one).

On CPU the buffers are numpy arrays (zero copy). With ``device_buffers`` (the default on CUDA) they are
``OrtValue``s on the session's device: inputs are copied in with ``update_inplace``, the loop's ``context``,
``x0`` pair and ``t`` stay on the device, only ``action`` comes back. On CUDA the denoise session also replays
CUDA graphs (the CUDA execution provider's ``enable_cuda_graph``, one graph per ping-pong binding through the
``gpu_graph_id`` run option), which its rules allow here: static shapes, every input and output bound to a
device OrtValue that keeps its address. If ONNX Runtime refuses graphs for the session (a node not on the CUDA
provider) or the first graphed run fails, the denoise session is made again without graphs (logged once,
:attr:`OnnxRuntimeBackend.graph_fallback`); ``cuda_graph=False`` runs without.
The device path is tested on CPU (device OrtValues on the CPU); on CUDA it has not run (no GPU with
onnxruntime-gpu has been available to this project).

ONNX Runtime silently falls back to the CPU when a requested provider fails to load; the providers a
session actually uses are checked after creation and a mismatch is an error.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from runtime.backends.base import Backend, BackendError, BackendUnavailable
from runtime.manifest import GraphSpec, Manifest
from runtime.manifest_schema import DOMAIN_INPUT, PREFIX_INPUTS

#: Both wheels provide the module ``onnxruntime``; xvla-edge depends on neither, so that installing it never
#: replaces a GPU build with the CPU one (see setup.cfg's extras).
NOT_INSTALLED = ("neither onnxruntime (CPU) nor onnxruntime-gpu (CUDA) imports here: install the first on "
                 "CPU-only machines, the second on NVIDIA machines (on Jetson the wheel built for your JetPack)")
try:
    import onnxruntime as ort
except ImportError as exc:
    raise BackendUnavailable.of("onnxruntime", exc, needed_by="the onnxruntime backend", detail=NOT_INSTALLED) from exc

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
log = logging.getLogger(__name__)


def session_options(threads: int | None, spinning: bool = False) -> ort.SessionOptions:
    """``spinning``: the intra-op threads busy-wait for work after each run (ONNX Runtime's default). Off
    here: the encoder's and the denoiser's thread pools then spin against each other — after the encoder ran,
    its threads keep spinning on the cores the denoiser's first steps need. On the 2-core Xeon, small
    checkpoint, 2 threads, one process alternating both settings: a chunk took 398 ms spinning against 364 ms
    not, which is exactly encoder + 10 single steps (99 + 10 × 26.6 ms): the per-chunk overhead of issue 20
    was the spinning."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or (os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return opts


def create_session(path: Path, device: str, threads: int | None, *, cuda_graph: bool = False,
                   spinning: bool = False) -> ort.InferenceSession:
    """A session on exactly the requested device, or :class:`BackendError` naming what is available
    (``cuda_graph``: the CUDA provider replays CUDA graphs; ``spinning``: see :func:`session_options`)."""
    if device not in _PROVIDERS:
        raise BackendError(f"device {device!r} is not supported by the onnxruntime backend; expected one of {sorted(_PROVIDERS)}")
    wanted = _PROVIDERS[device]
    available = ort.get_available_providers()
    if wanted not in available:
        raise BackendError(f"onnxruntime has no {wanted} in this install (available: {available}); "
                           "for CUDA install onnxruntime-gpu instead of onnxruntime")
    options = {"enable_cuda_graph": "1"} if cuda_graph and device == "cuda" else {}
    providers = [wanted] if device == "cpu" else [(wanted, options), "CPUExecutionProvider"]
    try:
        sess = ort.InferenceSession(str(path), sess_options=session_options(threads, spinning), providers=providers)
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


class _Plan:
    """The static memory plan of one batch size: every tensor's buffer, the x0 ping-pong pair, both graphs'
    bindings, and the run options naming this plan's two captured CUDA graphs."""

    def __init__(self, buffers: dict[str, np.ndarray], graph_ids: tuple[int, int]) -> None:
        self.buffers = buffers
        self.batch = int(buffers["x0"].shape[0])
        self.x0 = [np.zeros_like(buffers["x0"]), np.zeros_like(buffers["x0"])]  # ping-pong
        self.prefixed = False  # the prefix buffers hold a prefix (else zeros)
        self.values: dict[str, ort.OrtValue] = {}
        self.x0_values: list[ort.OrtValue] = []
        self.enc_binding: ort.IOBinding | None = None
        self.den_bindings: list[ort.IOBinding] = []
        self.run_options = [ort.RunOptions() for _ in graph_ids]
        for options, graph_id in zip(self.run_options, graph_ids):  # one captured graph per ping-pong binding;
            options.add_run_config_entry("gpu_graph_id", str(graph_id))  # ONNX Runtime reserves 0, -1 skips capture


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    any_batch = True  # the graphs' batch dimension is dynamic: a plan for whichever size comes

    def __init__(self, manifest: Manifest, bundle_dir: str | Path, *, device: str = "cpu",
                 threads: int | None = None, device_buffers: bool | None = None, cuda_graph: bool = True,
                 spinning: bool = False) -> None:
        super().__init__(manifest)
        self.bundle_dir = bundle_dir = Path(bundle_dir)
        self.device, self.threads, self.spinning = device, threads, spinning
        self.on_device = device == "cuda" if device_buffers is None else bool(device_buffers)
        graphs = cuda_graph and device == "cuda" and self.on_device
        if device == "cuda" and not graphs:
            self.graph_fallback = ("disabled (cuda_graph=False)" if not cuda_graph
                                   else "disabled (device_buffers=False: graphs need device-resident buffers)")
        self.encoder = create_session(bundle_dir / manifest.encoder.file, device, threads, spinning=spinning)
        try:
            self.denoiser = create_session(bundle_dir / manifest.denoise.file, device, threads, cuda_graph=graphs,
                                           spinning=spinning)
        except BackendError as exc:  # e.g. a node not on the CUDA provider: ONNX Runtime refuses graph capture
            if not graphs:
                raise
            self._fall_back(f"the denoise session refused CUDA graphs: {exc}")
            graphs = False
            self.denoiser = create_session(bundle_dir / manifest.denoise.file, device, threads, spinning=spinning)
        self.graphed = graphs
        for sess, graph in ((self.encoder, manifest.encoder), (self.denoiser, manifest.denoise)):
            check_io(sess, graph, bundle_dir / graph.file)
        self.specs = {s.name: s for s in (*manifest.encoder.inputs, *manifest.encoder.outputs,
                                          *manifest.denoise.inputs, *manifest.denoise.outputs)}
        self.plans: dict[int, _Plan] = {}
        self.plan = self._plan(1)

    def _plan(self, batch: int) -> _Plan:
        """The static memory plan for ``batch`` observations (made on first use, then kept)."""
        if batch not in self.plans:
            self.check_batch(batch)
            plan = _Plan({name: np.zeros(s.at(batch), dtype=np.dtype(s.dtype)) for name, s in self.specs.items()},
                         graph_ids=(2 * len(self.plans) + 1, 2 * len(self.plans) + 2))
            self._bind_plan(plan)
            self.plans[batch] = plan
        return self.plans[batch]

    def _bind_plan(self, plan: _Plan) -> None:
        """Bind both graphs to ``plan``'s buffers: numpy arrays on CPU, device OrtValues with ``device_buffers``."""
        if self.on_device:
            where = "cuda" if self.device == "cuda" else "cpu"
            plan.values = {name: ort.OrtValue.ortvalue_from_numpy(arr, where, 0) for name, arr in plan.buffers.items()}
            plan.x0_values = [ort.OrtValue.ortvalue_from_numpy(x, where, 0) for x in plan.x0]
        plan.enc_binding = self._bind(plan, self.encoder, {n: n for n in ("pixel_values", "image_mask", "input_ids")},
                                      {"context": "context"})
        plan.den_bindings = self._denoise_bindings(plan)

    def _denoise_bindings(self, plan: _Plan) -> list[ort.IOBinding]:
        """binding[k] reads ``prev`` from x0[k] and writes ``x0`` into x0[1 - k] (a server bundle's also read
        ``domain_id``, a bundle's with real-time chunking the prefix inputs)."""
        common = {n: n for n in ("context", "x1", "proprio", "t", DOMAIN_INPUT, *PREFIX_INPUTS) if n in plan.buffers}
        return [self._bind(plan, self.denoiser, {**common, "prev": k}, {"action": "action", "x0": 1 - k})
                for k in (0, 1)]

    def _bind(self, plan: _Plan, sess: ort.InferenceSession, inputs: dict[str, str | int],
              outputs: dict[str, str | int]) -> ort.IOBinding:
        """``inputs``/``outputs``: graph tensor → buffer (a tensor name, or the index of an x0 buffer)."""
        binding = sess.io_binding()
        for table, by_value, by_address in ((inputs, binding.bind_ortvalue_input, binding.bind_input),
                                            (outputs, binding.bind_ortvalue_output, binding.bind_output)):
            for name, key in table.items():
                if self.on_device:
                    by_value(name, plan.x0_values[key] if isinstance(key, int) else plan.values[key])
                else:
                    arr = plan.x0[key] if isinstance(key, int) else plan.buffers[key]
                    by_address(name, "cpu", 0, arr.dtype, list(arr.shape), arr.ctypes.data)
        return binding

    def _put(self, name: str, value: np.ndarray | None = None) -> None:
        """Copy ``value`` into the current plan's buffer ``name`` (and to the device); None: the host buffer is
        already set."""
        plan = self.plan
        if value is not None:
            np.copyto(plan.buffers[name], value)
        if self.on_device:
            plan.values[name].update_inplace(plan.buffers[name])

    def encode(self, pixel_values: np.ndarray, image_mask: np.ndarray, input_ids: np.ndarray) -> None:
        self.plan = self._plan(int(pixel_values.shape[0]))
        for name, value in zip(("pixel_values", "image_mask", "input_ids"), (pixel_values, image_mask, input_ids)):
            self._put(name, value)
        self.encoder.run_with_iobinding(self.plan.enc_binding)

    def denoise(self, x1: np.ndarray, proprio: np.ndarray, steps: int, domain_ids: np.ndarray | None = None,
                prefix: np.ndarray | None = None, weights: np.ndarray | None = None) -> np.ndarray:
        plan = self.plan
        if x1.shape[0] != plan.batch:
            raise BackendError(f"denoise() of a batch of {x1.shape[0]} after encode() of {plan.batch}")
        self.check_domains(domain_ids, plan.batch)
        self.check_prefix(prefix, weights, plan.batch)
        self._put("x1", x1)
        self._put("proprio", proprio)
        if domain_ids is not None:
            self._put(DOMAIN_INPUT, domain_ids)
        if prefix is not None or plan.prefixed:
            for name, value in zip(PREFIX_INPUTS, (prefix, weights)):
                if value is None:
                    plan.buffers[name].fill(0.0)
                self._put(name, value)
            plan.prefixed = prefix is not None
        plan.x0[0].fill(0.0)
        if self.on_device:
            plan.x0_values[0].update_inplace(plan.x0[0])
        t = plan.buffers["t"]
        for k, i in enumerate(range(steps, 0, -1)):
            t[0] = i / steps
            self._put("t")
            self._run_step(k % 2)
        return plan.values["action"].numpy() if self.on_device else plan.buffers["action"]

    def _run_step(self, k: int) -> None:
        plan = self.plan
        try:
            self.denoiser.run_with_iobinding(plan.den_bindings[k], plan.run_options[k])
        except Exception as exc:  # onnxruntime raises its own Fail types
            if not self.graphed:
                raise
            self._fall_back(f"CUDA-graph run of the denoise step failed: {exc}")
            self.graphed = False
            self.denoiser = create_session(self.bundle_dir / self.manifest.denoise.file, self.device, self.threads,
                                           spinning=self.spinning)
            for other in self.plans.values():
                other.den_bindings = self._denoise_bindings(other)
            self.denoiser.run_with_iobinding(plan.den_bindings[k], plan.run_options[k])

    def _fall_back(self, why: str) -> None:
        self.graph_fallback = why
        log.warning("onnxruntime backend: %s; running without CUDA graphs from now on", why)

    def close(self) -> None:
        self.encoder = self.denoiser = None  # type: ignore[assignment]
