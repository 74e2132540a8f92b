"""Every TensorRT call of xvla-edge: build an engine from ONNX, load it, bind tensors by address, enqueue.

``tensorrt`` is imported on first use, so this module imports anywhere. Written against the TensorRT
Python API of 10.3 (JetPack 6) and 10.13+ / 11.x (JetPack 7), from NVIDIA's documentation and binding
sources, and **not run here** (the development machine has neither TensorRT nor a GPU); only the code
around it is tested. Idioms: strongly typed networks (precision comes from the ONNX graph, no precision
flags: TRT 11 removed them), named I/O tensors with ``set_tensor_address`` and ``execute_async_v3``.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from runtime.backends.tensorrt import cuda_graph
from runtime.backends.base import BackendError
from xvla.extras import MissingDependency

Log = Callable[[str], None]


class TensorRTError(BackendError):
    """TensorRT failed to parse, build, load or run an engine."""


class TensorRTUnavailable(MissingDependency, TensorRTError):
    """``import tensorrt`` does not work in this environment."""


def tensorrt() -> ModuleType:
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailable.of("tensorrt", e) from None
    return trt


@functools.cache
def _logger() -> Any:
    """One logger for every builder and runtime (TensorRT warns when they are given different ones)."""
    trt = tensorrt()
    return trt.Logger(trt.Logger.WARNING)


def machine_stamp() -> dict[str, str]:
    """What an engine is tied to on this machine: TensorRT version, GPU name and compute capability."""
    trt = tensorrt()
    device = cuda_graph.current_device()
    return {"tensorrt": str(trt.__version__), "gpu": device.name, "compute_capability": device.compute_capability}


# -- build ------------------------------------------------------------------------------------------------
def build_engine(onnx_path: Path, profiles: Sequence[Mapping[str, tuple[int, ...]]], out: Path, *,
                 timing_cache: Path, workspace_bytes: int | None = None, log: Log = print) -> None:
    """Build ``onnx_path`` into a serialized engine at ``out``: one optimisation profile per entry of ``profiles``
    (the input shapes of one batch size, dynamic inputs pinned at min = opt = max), in that order.

    The timing cache at ``timing_cache`` is read when present and written back after the build.
    """
    trt = tensorrt()
    logger = _logger()
    builder = trt.Builder(logger)
    # STRONGLY_TYPED: tensor types come from the ONNX graph (TRT 11 is always strongly typed and ignores it).
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if strongly_typed is None else 1 << int(strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise TensorRTError(f"{onnx_path}: TensorRT's ONNX parser failed:\n  " + "\n  ".join(errors))
    config = builder.create_builder_config()
    # fp32 layers in fp32: TF32 (on by default, Ampere and newer) rounds their matmul and convolution inputs to 10
    # mantissa bits, outside an fp32 bundle's parity (1e-5) and what an fp16 bundle kept in fp32 for accuracy
    config.clear_flag(trt.BuilderFlag.TF32)
    if workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    for profile in _profiles(builder, network, profiles, onnx_path):
        config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    if not config.set_timing_cache(cache, False):
        log(f"timing cache {timing_cache} is from another GPU or TensorRT version; starting a new one")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    monitor = _progress_monitor(trt, log) if hasattr(trt, "IProgressMonitor") else None
    if monitor is not None:
        config.progress_monitor = monitor  # must outlive the build: held by ``monitor`` until we return
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise TensorRTError(f"{onnx_path}: TensorRT could not build an engine (its messages above say why)")
    out.write_bytes(plan)
    timing_cache.write_bytes(config.get_timing_cache().serialize())


def _parser_error(err: Any) -> str:
    return f"node {err.node()} ({err.node_name() or '?'}, {err.node_operator() or '?'}): {err.desc()}"


def _profiles(builder: Any, network: Any, profiles: Sequence[Mapping[str, tuple[int, ...]]], source: Path) -> list:
    """One profile per entry of ``profiles``, pinning every dynamic input at that entry's shape (none when every
    input is static: then ``profiles`` must be one entry)."""
    names, dynamic = set(), []
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        names.add(tensor.name)
        have = tuple(tensor.shape)
        for shapes in profiles:
            if tensor.name not in shapes:
                raise TensorRTError(f"{source}: input {tensor.name!r} is not in the manifest ({sorted(shapes)})")
            want = tuple(shapes[tensor.name])
            if len(have) != len(want) or any(h not in (-1, w) for h, w in zip(have, want, strict=True)):
                raise TensorRTError(f"{source}: input {tensor.name!r} has shape {have}; the manifest says {want}")
        if -1 in have:
            dynamic.append(tensor.name)
    missing = set().union(*profiles) - names
    if missing:
        raise TensorRTError(f"{source}: the manifest lists inputs {sorted(missing)} the graph lacks")
    if not dynamic:
        if len(profiles) > 1:
            raise TensorRTError(f"{source}: every input has a fixed shape, but the manifest lists {len(profiles)} "
                                "batch sizes")
        return []
    built = []
    for shapes in profiles:
        profile = builder.create_optimization_profile()
        for name in dynamic:
            profile.set_shape(name, tuple(shapes[name]), tuple(shapes[name]), tuple(shapes[name]))
        built.append(profile)
    return built


def _progress_monitor(trt: ModuleType, log: Log) -> Any:
    """A ``trt.IProgressMonitor`` logging the builder's top two phase levels with their durations."""

    class Progress(trt.IProgressMonitor):  # type: ignore[name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()  # TensorRT may call from several threads
            self._phases: dict[str, tuple[int, float]] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self._lock:
                depth = self._phases[parent_phase][0] + 1 if parent_phase in self._phases else 0
                self._phases[phase_name] = (depth, time.perf_counter())
                if depth <= 1:
                    log(f"{'  ' * (depth + 1)}{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                depth, t0 = self._phases.pop(phase_name, (0, time.perf_counter()))
                if depth == 0:
                    log(f"  {phase_name} done in {time.perf_counter() - t0:.1f} s")

    return Progress()


# -- execute ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorInfo:
    """One I/O tensor of an engine."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    is_input: bool


class Engine:
    """A deserialized engine with ``contexts`` execution contexts per optimisation profile (context index
    ``profile * contexts + k``); tensors are bound by name to device addresses, per context.

    Several contexts let one engine run with several fixed bindings: a CUDA graph captured from one context's
    enqueue keeps that context's addresses, so a context whose enqueue was captured is never rebound — the
    pattern of trtexec and of NVIDIA's TensorRT demos (one enqueue per captured graph, fixed bindings). Each
    context holds its own activation memory.
    """

    def __init__(self, path: Path, profiles: Sequence[Mapping[str, tuple[int, ...]]], contexts: int = 1,
                 stream: int = 0) -> None:
        """``profiles``: the input shapes of each optimisation profile, in the order they were built (one entry
        for an engine without profiles); ``stream``: where a context's profile is selected."""
        trt = tensorrt()
        self.path = Path(path)
        self._runtime = trt.Runtime(_logger())
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise TensorRTError(f"{self.path}: TensorRT could not deserialize this engine; "
                                "rebuild it on this machine with `xvla-edge build BUNDLE --force`")
        built = max(1, int(self._engine.num_optimization_profiles))
        if len(profiles) != built:
            raise TensorRTError(f"{self.path}: the engine has {built} optimisation profile(s), the manifest's batch "
                                f"sizes need {len(profiles)}; rebuild it with `xvla-edge build BUNDLE --force`")
        dynamic = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        dynamic = [n for n in dynamic if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT
                   and -1 in tuple(self._engine.get_tensor_shape(n))]
        self._contexts = []
        for index, shapes in enumerate(profiles):
            for _ in range(contexts):
                context = self._engine.create_execution_context()
                if context is None:
                    raise TensorRTError(f"{self.path}: TensorRT could not create an execution context (out of memory?)")
                if index and not context.set_optimization_profile_async(index, int(stream)):
                    raise TensorRTError(f"{self.path}: cannot select optimisation profile {index}")
                for name in dynamic:
                    if name not in shapes or not context.set_input_shape(name, tuple(shapes[name])):
                        raise TensorRTError(f"{self.path}: cannot set the shape of input {name!r} "
                                            f"to {shapes.get(name)} (profile {index})")
                self._contexts.append(context)
        self.tensors: dict[str, TensorInfo] = {}  # shapes at the first profile (batch 1)
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            self.tensors[name] = TensorInfo(name, tuple(self._contexts[0].get_tensor_shape(name)),
                                            np.dtype(trt.nptype(self._engine.get_tensor_dtype(name))), is_input)

    def set_address(self, name: str, ptr: int, context: int = 0) -> None:
        if name not in self.tensors:
            raise TensorRTError(f"{self.path.name}: no I/O tensor {name!r} (it has {sorted(self.tensors)})")
        if not self._contexts[context].set_tensor_address(name, int(ptr)):
            raise TensorRTError(f"{self.path.name}: set_tensor_address({name!r}, {int(ptr):#x}) failed "
                                f"(context {context})")

    def execute(self, stream: int, context: int = 0) -> None:
        """Enqueue one inference of ``context`` on the CUDA stream handle ``stream`` (capturable)."""
        if not self._contexts[context].execute_async_v3(int(stream)):
            raise TensorRTError(f"{self.path.name}: execute_async_v3 failed (context {context}; TensorRT's "
                                "messages above say why)")

    def close(self) -> None:
        """Release the contexts, then the engine, then the runtime."""
        self._contexts = []
        self._engine = None
        self._runtime = None
