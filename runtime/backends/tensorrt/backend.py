"""TensorRT backend: the bundle's engines (``BUNDLE/engines/``, built on this machine by ``xvla-edge build``).

Static memory plan, as in the ONNX Runtime backend: one device buffer per I/O tensor of the manifest, the
encoder's ``context`` output shared with the denoiser's input, two ping-pong ``x0`` buffers, one device ``t``,
and pinned host buffers for every copy in or out. The denoise engine has two execution contexts with fixed
bindings — context 0 reads ``prev`` from x0[0] and writes x0[1], context 1 the reverse, both read ``t`` —
bound once at load and never rebound. Each context's enqueue is captured once into its own CUDA graph (one
enqueue per graph, fixed bindings: the pattern of trtexec's inference loop and NVIDIA's TensorRT demos).

A batched bundle (``xvla-edge export --batch-sizes``) has one such plan per batch size, all made at load: the
engines have one optimisation profile per size (pinned, min = opt = max), the encoder one context per profile,
the denoiser two per profile (contexts ``2·i`` and ``2·i + 1`` for the i-th size), each with its own graph.

A chunk: copy ``x1`` and ``proprio`` (and a server bundle's ``domain_id``, one per row, and a real-time chunking
prefix, ``prefix`` and ``prefix_weights``, into the buffers every context reads: bound once like the others; a
chunk without a prefix zeroes them on the device, once after a chunk that had one) in, zero x0[0], then per
step k a device-to-device copy of ``t`` from slot k of a per-step-count schedule (filled once) and a launch of graph k % 2, then copy ``action`` out and
synchronise once. The host enqueues the whole loop without waiting for the device; nothing inside it comes
from the host. If capture fails (some engines are not capturable) the backend logs it once, records why in
:attr:`TensorRTBackend.graph_fallback` and enqueues the contexts directly from then on; ``cuda_graph=False``
does so from the start.

Engines are stamped in ``engines/engines.json`` (TensorRT version, GPU, compute capability, sha256 of the
ONNX files they were built from); an engine whose stamp does not match this machine and bundle is refused.
This module imports neither ``tensorrt`` nor cuda-python until an engine is loaded; the TensorRT calls
live in :mod:`runtime.backends.tensorrt.api` and have not run on the development machine (no TensorRT, no GPU).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from runtime.backends.tensorrt import api as trt_api, cuda_graph
from runtime.backends.tensorrt import cuda_graph as cuda  # the name inside TensorRTBackend.__init__, whose option is cuda_graph
from runtime.backends.base import Backend, BackendError
from runtime.manifest import ENGINES_DIR, GraphSpec, Manifest, TensorSpec
from runtime.manifest_schema import DOMAIN_INPUT, PREFIX_INPUTS

ENGINES_FILE = "engines.json"
TIMING_CACHE = "timing.cache"
ENGINES_SCHEMA = 1
GRAPHS = ("encoder", "denoise")
SLOT_BYTES = 256  # TensorRT wants I/O tensor addresses 256-byte aligned
MACHINE_KEYS = ("tensorrt", "gpu", "compute_capability")

log = logging.getLogger(__name__)


def engine_file(graph: str) -> str:
    return f"{graph}.engine"


def rebuild_hint(bundle_dir: Path) -> str:
    return f"rebuild them on this machine with `xvla-edge build {bundle_dir} --force`"


# -- engines.json ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineRecord:
    """One engine of ``engines.json``: its file and what it is tied to."""

    file: str
    bytes: int
    tensorrt: str
    gpu: str
    compute_capability: str
    onnx: dict[str, str]  # file → sha256 of the graph and its external data, as in the manifest

    def machine(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in MACHINE_KEYS}


def graph_sources(manifest: Manifest, graph: str) -> dict[str, str]:
    """sha256 of a graph's ONNX file and of its external data (``<file>.data``), from the manifest."""
    file = getattr(manifest, graph).file
    return {name: str(manifest.files[name]["sha256"]) for name in (file, file + ".data") if name in manifest.files}


def write_engines_json(directory: Path, records: Mapping[str, EngineRecord]) -> Path:
    path = directory / ENGINES_FILE
    path.write_text(json.dumps({"schema_version": ENGINES_SCHEMA,
                                "engines": {g: asdict(r) for g, r in records.items()}}, indent=2) + "\n")
    return path


def read_engines_json(bundle_dir: Path) -> dict[str, EngineRecord]:
    path = Path(bundle_dir) / ENGINES_DIR / ENGINES_FILE
    if not path.is_file():
        raise BackendError(f"{path}: not found: the bundle has no TensorRT engines; build them on this machine "
                           f"with `xvla-edge build {bundle_dir}`")
    try:
        d = json.loads(path.read_text())
        if d.get("schema_version") != ENGINES_SCHEMA:
            raise ValueError(f"schema_version {d.get('schema_version')!r}, this runtime reads {ENGINES_SCHEMA}")
        records = {g: EngineRecord(**d["engines"][g]) for g in GRAPHS}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise BackendError(f"{path}: unreadable ({type(e).__name__}: {e}); {rebuild_hint(bundle_dir)}") from None
    return records


def check_engines(bundle_dir: Path, manifest: Manifest, machine: Mapping[str, str]) -> dict[str, Path]:
    """Engine paths by graph, once each engine exists and its stamp matches ``machine`` and the bundle."""
    bundle_dir = Path(bundle_dir)
    paths = {}
    for graph, record in read_engines_json(bundle_dir).items():
        path = bundle_dir / ENGINES_DIR / record.file
        if not path.is_file():
            raise BackendError(f"{path}: listed in {ENGINES_FILE} but missing; {rebuild_hint(bundle_dir)}")
        if path.stat().st_size != record.bytes:
            raise BackendError(f"{path}: {path.stat().st_size} bytes, {ENGINES_FILE} records {record.bytes} "
                               f"(truncated or replaced); {rebuild_hint(bundle_dir)}")
        built, here = record.machine(), {k: str(machine[k]) for k in MACHINE_KEYS}
        if built != here:
            raise BackendError(f"{path} was built for {_describe(built)}; this machine has {_describe(here)}: "
                               f"TensorRT engines only run where they were built; {rebuild_hint(bundle_dir)}")
        if record.onnx != graph_sources(manifest, graph):
            raise BackendError(f"{path} was built from another {getattr(manifest, graph).file} than the bundle's "
                               f"(the bundle was re-exported); {rebuild_hint(bundle_dir)}")
        paths[graph] = path
    return paths


def _describe(machine: Mapping[str, str]) -> str:
    return f"TensorRT {machine['tensorrt']} on {machine['gpu']} (compute capability {machine['compute_capability']})"


# -- memory plan ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepBinding:
    """Denoising step k: the context that runs it (it reads ``prev`` from x0[context] and writes x0[1 -
    context]) and the byte offset of its ``t`` in the schedule."""

    context: int
    t_offset: int

    @property
    def prev(self) -> int:
        return self.context

    @property
    def out(self) -> int:
        return 1 - self.context


def step_bindings(steps: int) -> list[StepBinding]:
    """Step k runs context k % 2 (x0[0] starts as zeros) with ``t`` from slot k."""
    return [StepBinding(context=k % 2, t_offset=k * SLOT_BYTES) for k in range(steps)]


def t_schedule(steps: int, dtype: np.dtype) -> np.ndarray:
    """The per-step-count ``t`` buffer's contents: t = (steps - k) / steps at the start of slot k."""
    dtype = np.dtype(dtype)
    slots = np.zeros((steps, SLOT_BYTES // dtype.itemsize), dtype=dtype)
    slots[:, 0] = [(steps - k) / steps for k in range(steps)]
    return slots


def io_mismatches(graph: str, specs: Iterable[TensorSpec], inputs: Iterable[str],
                  tensors: Mapping[str, trt_api.TensorInfo]) -> list[str]:
    """How an engine's I/O tensors differ from the manifest's (names, direction, shapes, dtypes)."""
    by_name = {s.name: s for s in specs}
    input_names = set(inputs)
    problems = [f"{graph}: the manifest has {n!r}, the engine does not" for n in sorted(set(by_name) - set(tensors))]
    problems += [f"{graph}: the engine has {n!r}, the manifest does not" for n in sorted(set(tensors) - set(by_name))]
    for name in sorted(set(by_name) & set(tensors)):
        s, t = by_name[name], tensors[name]
        if t.is_input != (name in input_names):
            problems.append(f"{graph}: {name!r} is an {'input' if t.is_input else 'output'} of the engine")
        if tuple(t.shape) != s.at(1) or t.dtype != np.dtype(s.dtype):
            problems.append(f"{graph}: {name!r} is {t.dtype}{list(t.shape)} in the engine, "
                            f"{s.dtype}{list(s.at(1))} in the manifest")
    return problems


def profiles(spec: GraphSpec, sizes: Iterable[int]) -> list[dict[str, tuple[int, ...]]]:
    """The input shapes of each batch size: one optimisation profile each, in the manifest's order."""
    return [{s.name: s.at(batch) for s in spec.inputs} for batch in sizes]


def _nbytes(spec: TensorSpec, batch: int) -> int:
    return int(np.prod(spec.at(batch), dtype=np.int64)) * np.dtype(spec.dtype).itemsize


@dataclass
class _Plan:
    """The buffers of one batch size (profile ``index``): its encoder context is ``index``, its denoise contexts
    ``2·index`` and ``2·index + 1``."""

    index: int
    batch: int
    buffers: dict[str, cuda_graph.DeviceBuffer] = field(default_factory=dict)
    host: dict[str, cuda_graph.HostBuffer] = field(default_factory=dict)
    x0: list[cuda_graph.DeviceBuffer] = field(default_factory=list)
    prefixed: bool = True  # the prefix buffers may hold other than zeros (device memory starts undefined)

    def free(self) -> None:
        for buf in (*self.buffers.values(), *self.x0, *self.host.values()):
            buf.free()
        self.buffers, self.x0, self.host = {}, [], {}


# -- the backend ------------------------------------------------------------------------------------------
class TensorRTBackend(Backend):
    name = "tensorrt"

    _ENCODER_INPUTS = ("pixel_values", "image_mask", "input_ids")
    _HOST = (*_ENCODER_INPUTS, "x1", "proprio", "action")  # tensors copied to or from the host (pinned)
    _LOOP_TENSORS = ("prev", "x0", "t")  # bound per denoise context

    def __init__(self, manifest: Manifest, bundle_dir: str | Path, *, device: str = "cuda",
                 cuda_graph: bool = True) -> None:
        super().__init__(manifest)
        if device != "cuda":
            raise BackendError(f"the tensorrt backend runs on CUDA only; got device={device!r} (pass device='cuda')")
        self.bundle_dir = Path(bundle_dir)
        paths = check_engines(self.bundle_dir, manifest, trt_api.machine_stamp())
        m = manifest
        self.specs = {s.name: s for s in (*m.encoder.inputs, *m.encoder.outputs, *m.denoise.inputs, *m.denoise.outputs)}
        self.engines: dict[str, trt_api.Engine] = {}
        self.plans: dict[int, _Plan] = {}
        self.t_slots: dict[int, cuda.DeviceBuffer] = {}  # per step count
        self.graph_fallback: str | None = None if cuda_graph else "disabled (cuda_graph=False)"
        self.stream = cuda.Stream()
        self.graphs = cuda.CudaGraphs(self.stream, capacity=2 * len(manifest.batch_sizes))
        try:
            self._load(paths)
        except BaseException:
            self.close()
            raise
        self.plan = self.plans[1]
        self._encoded = False

    def _load(self, paths: Mapping[str, Path]) -> None:
        """Load both engines (a profile per batch size), check their I/O against the manifest, allocate and bind
        every buffer of every batch size."""
        problems = []
        sizes = self.manifest.batch_sizes
        for graph in GRAPHS:
            spec = getattr(self.manifest, graph)
            self.engines[graph] = engine = trt_api.Engine(paths[graph], profiles(spec, sizes),
                                                          contexts=2 if graph == "denoise" else 1,
                                                          stream=self.stream.ptr)
            problems += io_mismatches(graph, (*spec.inputs, *spec.outputs), (s.name for s in spec.inputs),
                                      engine.tensors)
        if problems:
            raise BackendError("the engines do not match the bundle's manifest:\n  " + "\n  ".join(problems)
                               + f"\n{rebuild_hint(self.bundle_dir)}")
        for index, batch in enumerate(sizes):
            self.plans[batch] = plan = _Plan(index, batch)
            for name, spec in self.specs.items():
                if name not in self._LOOP_TENSORS:
                    plan.buffers[name] = cuda_graph.DeviceBuffer(_nbytes(spec, batch))
            plan.x0 = [cuda_graph.DeviceBuffer(_nbytes(self.specs["x0"], batch)) for _ in range(2)]
            plan.buffers["t"] = cuda_graph.DeviceBuffer(_nbytes(self.specs["t"], batch))
            for name in (*self._HOST, *(name for name in (DOMAIN_INPUT, *PREFIX_INPUTS) if name in self.specs)):
                plan.host[name] = cuda_graph.HostBuffer(self.specs[name].at(batch), self.specs[name].dtype)
            for s in (*self.manifest.encoder.inputs, *self.manifest.encoder.outputs):
                self.engines["encoder"].set_address(s.name, plan.buffers[s.name].ptr, index)
            denoise = self.engines["denoise"]
            for k in (0, 1):  # fixed for the backend's lifetime: captured graphs keep these addresses
                context = 2 * index + k
                for s in (*self.manifest.denoise.inputs, *self.manifest.denoise.outputs):
                    if s.name not in self._LOOP_TENSORS:
                        denoise.set_address(s.name, plan.buffers[s.name].ptr, context)
                denoise.set_address("prev", plan.x0[k].ptr, context)
                denoise.set_address("x0", plan.x0[1 - k].ptr, context)
                denoise.set_address("t", plan.buffers["t"].ptr, context)

    def _upload(self, name: str, value: np.ndarray) -> None:
        plan = self.plan
        np.copyto(plan.host[name].array, value)
        plan.buffers[name].upload(plan.host[name].array, self.stream)

    def encode(self, pixel_values: np.ndarray, image_mask: np.ndarray, input_ids: np.ndarray) -> None:
        batch = int(pixel_values.shape[0])
        self.check_batch(batch)  # a profile per listed size only
        self.plan = self.plans[batch]
        for name, value in zip(self._ENCODER_INPUTS, (pixel_values, image_mask, input_ids), strict=True):
            self._upload(name, value)
        self.engines["encoder"].execute(self.stream.ptr, self.plan.index)
        self._encoded = True

    def _t_slots(self, steps: int) -> cuda_graph.DeviceBuffer:
        if steps not in self.t_slots:
            schedule = t_schedule(steps, np.dtype(self.specs["t"].dtype))
            staging = cuda_graph.HostBuffer(schedule.shape, schedule.dtype)
            try:
                np.copyto(staging.array, schedule)
                self.t_slots[steps] = buf = cuda_graph.DeviceBuffer(schedule.nbytes)
                buf.upload(staging.array, self.stream)
                self.stream.synchronize()  # the staging buffer is freed next
            finally:
                staging.free()
        return self.t_slots[steps]

    def _step(self, k: int) -> None:
        """One denoising step: the current plan's context ``k``'s enqueue, as a graph launch unless graphs fell
        back."""
        denoise, context = self.engines["denoise"], 2 * self.plan.index + k
        if self.graph_fallback is None:
            try:
                self.graphs.launch(context, lambda: denoise.execute(self.stream.ptr, context))
                return
            except cuda.CaptureFailed as exc:
                self.graph_fallback = f"capture of the denoise step failed: {exc}"
                log.warning("tensorrt backend: %s; running without CUDA graphs from now on", self.graph_fallback)
        denoise.execute(self.stream.ptr, context)

    def denoise(self, x1: np.ndarray, proprio: np.ndarray, steps: int, domain_ids: np.ndarray | None = None,
                prefix: np.ndarray | None = None, weights: np.ndarray | None = None) -> np.ndarray:
        if not self._encoded:
            raise BackendError("denoise() called before encode()")
        if steps < 1:
            raise BackendError(f"steps must be >= 1; got {steps}")
        plan = self.plan
        if x1.shape[0] != plan.batch:
            raise BackendError(f"denoise() of a batch of {x1.shape[0]} after encode() of {plan.batch}")
        self.check_domains(domain_ids, plan.batch)
        self.check_prefix(prefix, weights, plan.batch)
        self._upload("x1", x1)
        self._upload("proprio", proprio)
        if domain_ids is not None:  # a server bundle: read by every step from its own device buffer
            self._upload(DOMAIN_INPUT, domain_ids)
        if prefix is not None:  # read by every step from their own device buffers, like domain_id
            self._upload(PREFIX_INPUTS[0], prefix)
            self._upload(PREFIX_INPUTS[1], weights)
        elif self.manifest.supports_prefix and plan.prefixed:
            for name in PREFIX_INPUTS:
                plan.buffers[name].memset(self.stream)
        plan.prefixed = prefix is not None
        schedule = self._t_slots(steps)
        plan.x0[0].memset(self.stream)
        for b in step_bindings(steps):
            plan.buffers["t"].copy_from(schedule, b.t_offset, self.stream)
            self._step(b.context)
        plan.buffers["action"].download(plan.host["action"].array, self.stream)
        self.stream.synchronize()
        return plan.host["action"].array

    def close(self) -> None:
        """Graphs first (they use the contexts and buffers), then the contexts, the buffers and the stream."""
        if self.stream.handle is None:
            return
        self.stream.synchronize()
        self.graphs.clear()
        for engine in self.engines.values():
            engine.close()
        self.engines = {}
        for plan in self.plans.values():
            plan.free()
        for buf in self.t_slots.values():
            buf.free()
        self.plans, self.t_slots = {}, {}
        self.stream.free()


def engines_problem(bundle_dir: Path) -> str | None:
    """Why the bundle's engines cannot run here (None when they can): no tensorrt, no GPU, stale stamps..."""
    try:
        check_engines(bundle_dir, Manifest.load(bundle_dir), trt_api.machine_stamp())
    except (BackendError, ValueError, cuda_graph.CudaError) as e:  # BundleError is a ValueError
        return str(e)
    return None
