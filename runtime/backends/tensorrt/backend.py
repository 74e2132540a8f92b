"""TensorRT backend: the bundle's engines (``BUNDLE/engines/``, built on this machine by ``xvla-edge build``).

Static memory plan, as in the ONNX Runtime backend: one device buffer per I/O tensor of the manifest, the
encoder's ``context`` output shared with the denoiser's input, and two ping-pong ``x0`` buffers. A chunk
is: copy ``x1`` and ``proprio`` in, launch one CUDA graph holding the whole N-step loop, copy ``action``
out. The graph is captured once per step count: step k reads ``prev`` from one x0 buffer, writes ``x0``
into the other and reads ``t`` from its own 256-byte slot of a per-step-count buffer filled before
capture, so the host writes nothing inside the loop.

Engines are stamped in ``engines/engines.json`` (TensorRT version, GPU, compute capability, sha256 of the
ONNX files they were built from); an engine whose stamp does not match this machine and bundle is refused.
This module imports neither ``tensorrt`` nor cuda-python until an engine is loaded; the TensorRT calls
live in :mod:`runtime.backends.tensorrt.api` and have not run on the development machine (no TensorRT, no GPU).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from runtime.backends.tensorrt import api as trt_api, cuda_graph
from runtime.backends.base import Backend, BackendError
from runtime.manifest import ENGINES_DIR, Manifest, TensorSpec

ENGINES_FILE = "engines.json"
TIMING_CACHE = "timing.cache"
ENGINES_SCHEMA = 1
GRAPHS = ("encoder", "denoise")
SLOT_BYTES = 256  # TensorRT wants I/O tensor addresses 256-byte aligned
MACHINE_KEYS = ("tensorrt", "gpu", "compute_capability")


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
    """Where denoising step k reads ``prev``, writes ``x0`` (indices of the ping-pong pair) and reads ``t``."""

    prev: int
    out: int
    t_offset: int


def step_bindings(steps: int) -> list[StepBinding]:
    """Step k reads x0[k % 2] and writes x0[1 - k % 2]; x0[0] starts as zeros. ``t`` is slot k."""
    return [StepBinding(prev=k % 2, out=1 - k % 2, t_offset=k * SLOT_BYTES) for k in range(steps)]


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
        if tuple(t.shape) != tuple(s.shape) or t.dtype != np.dtype(s.dtype):
            problems.append(f"{graph}: {name!r} is {t.dtype}{list(t.shape)} in the engine, "
                            f"{s.dtype}{list(s.shape)} in the manifest")
    return problems


def _nbytes(spec: TensorSpec) -> int:
    return int(np.prod(spec.shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize


# -- the backend ------------------------------------------------------------------------------------------
class TensorRTBackend(Backend):
    name = "tensorrt"

    _ENCODER_INPUTS = ("pixel_values", "image_mask", "input_ids")
    _LOOP_TENSORS = ("prev", "x0", "t")  # bound per step inside the captured loop

    def __init__(self, manifest: Manifest, bundle_dir: str | Path, *, device: str = "cuda",
                 graph_capacity: int = 4) -> None:
        super().__init__(manifest)
        if device != "cuda":
            raise BackendError(f"the tensorrt backend runs on CUDA only; got device={device!r} (pass device='cuda')")
        self.bundle_dir = Path(bundle_dir)
        paths = check_engines(self.bundle_dir, manifest, trt_api.machine_stamp())
        m = manifest
        self.specs = {s.name: s for s in (*m.encoder.inputs, *m.encoder.outputs, *m.denoise.inputs, *m.denoise.outputs)}
        self.host = {name: np.zeros(self.specs[name].shape, np.dtype(self.specs[name].dtype))
                     for name in (*self._ENCODER_INPUTS, "x1", "proprio", "action")}
        self.engines: dict[str, trt_api.Engine] = {}
        self.buffers: dict[str, cuda_graph.DeviceBuffer] = {}
        self.x0: list[cuda_graph.DeviceBuffer] = []
        self.t_slots: dict[int, cuda_graph.DeviceBuffer] = {}  # per step count; kept when its graph is evicted
        self.stream = cuda_graph.Stream()
        self.graphs = cuda_graph.CudaGraphs(self.stream, capacity=graph_capacity)
        try:
            self._load(paths)
        except BaseException:
            self.close()
            raise
        self._encoded = False

    def _load(self, paths: Mapping[str, Path]) -> None:
        """Load both engines, check their I/O against the manifest, allocate and bind every buffer."""
        problems = []
        for graph in GRAPHS:
            spec = getattr(self.manifest, graph)
            self.engines[graph] = engine = trt_api.Engine(paths[graph], {s.name: s.shape for s in spec.inputs})
            problems += io_mismatches(graph, (*spec.inputs, *spec.outputs), (s.name for s in spec.inputs),
                                      engine.tensors)
        if problems:
            raise BackendError("the engines do not match the bundle's manifest:\n  " + "\n  ".join(problems)
                               + f"\n{rebuild_hint(self.bundle_dir)}")
        for name, spec in self.specs.items():
            if name not in self._LOOP_TENSORS:
                self.buffers[name] = cuda_graph.DeviceBuffer(_nbytes(spec))
        self.x0 = [cuda_graph.DeviceBuffer(_nbytes(self.specs["x0"])) for _ in range(2)]
        for graph, engine in self.engines.items():
            spec = getattr(self.manifest, graph)
            for s in (*spec.inputs, *spec.outputs):
                if s.name not in self._LOOP_TENSORS:
                    engine.set_address(s.name, self.buffers[s.name].ptr)

    def _upload(self, name: str, value: np.ndarray) -> None:
        np.copyto(self.host[name], value)
        self.buffers[name].upload(self.host[name], self.stream)

    def encode(self, pixel_values: np.ndarray, image_mask: np.ndarray, input_ids: np.ndarray) -> None:
        for name, value in zip(self._ENCODER_INPUTS, (pixel_values, image_mask, input_ids), strict=True):
            self._upload(name, value)
        self.engines["encoder"].execute(self.stream.ptr)
        self._encoded = True

    def _t_slots(self, steps: int) -> cuda_graph.DeviceBuffer:
        if steps not in self.t_slots:
            schedule = t_schedule(steps, np.dtype(self.specs["t"].dtype))
            self.t_slots[steps] = buf = cuda_graph.DeviceBuffer(schedule.nbytes)
            buf.upload(schedule, self.stream)
            self.stream.synchronize()  # ``schedule`` is a temporary
        return self.t_slots[steps]

    def _loop(self, steps: int, t: cuda_graph.DeviceBuffer) -> None:
        """The N-step loop's launches on the stream (run eagerly once, then captured)."""
        engine = self.engines["denoise"]
        self.x0[0].memset(self.stream)
        for b in step_bindings(steps):
            engine.set_address("prev", self.x0[b.prev].ptr)
            engine.set_address("x0", self.x0[b.out].ptr)
            engine.set_address("t", t.ptr + b.t_offset)
            engine.execute(self.stream.ptr)

    def denoise(self, x1: np.ndarray, proprio: np.ndarray, steps: int) -> np.ndarray:
        if not self._encoded:
            raise BackendError("denoise() called before encode()")
        if steps < 1:
            raise BackendError(f"steps must be >= 1; got {steps}")
        self._upload("x1", x1)
        self._upload("proprio", proprio)
        t = self._t_slots(steps)
        self.graphs.launch(steps, lambda: self._loop(steps, t))
        self.buffers["action"].download(self.host["action"], self.stream)
        self.stream.synchronize()
        return self.host["action"]

    def close(self) -> None:
        """Graphs first (they use the contexts and buffers), then the contexts, the buffers and the stream."""
        if self.stream.handle is None:
            return
        self.stream.synchronize()
        self.graphs.clear()
        for engine in self.engines.values():
            engine.close()
        self.engines = {}
        for buf in (*self.buffers.values(), *self.x0, *self.t_slots.values()):
            buf.free()
        self.buffers, self.x0, self.t_slots = {}, [], {}
        self.stream.free()


def engines_problem(bundle_dir: Path) -> str | None:
    """Why the bundle's engines cannot run here (None when they can): no tensorrt, no GPU, stale stamps..."""
    try:
        check_engines(bundle_dir, Manifest.load(bundle_dir), trt_api.machine_stamp())
    except (BackendError, ValueError, cuda_graph.CudaError) as e:  # BundleError is a ValueError
        return str(e)
    return None
