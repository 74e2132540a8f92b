"""A fake ``tensorrt`` module: :class:`FakeTensorRT` holds the parts runtime.backends.tensorrt.api uses, to test
its control flow (what it asks of TensorRT, not what TensorRT does) without TensorRT."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np


class FakeTensorRT(ModuleType):
    """The parts of the ``tensorrt`` module trt_api uses. Dtypes are numpy dtypes (``nptype`` is identity).

    Where it follows the real API (TensorRT 10 Python API reference and ``NvInfer.h``): the network creation
    flags are a bit mask of ``NetworkDefinitionCreationFlag`` values (``kSTRONGLY_TYPED = 1``);
    ``build_serialized_network`` returns an ``IHostMemory`` (a buffer, not ``bytes``) or None; each execution
    context has its own bindings and input shapes; ``set_tensor_address`` takes an integer address.
    """

    __version__ = "10.3.0.30"

    def __init__(self, inputs: dict[str, tuple[int, ...]], tensors: dict[str, tuple[tuple[int, ...], str, bool]]):
        super().__init__("tensorrt")
        fake = self
        self.log: list[Any] = []
        self.fail_build = False
        self.profiles = 1  # optimisation profiles of the engines it deserializes
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, severity: None})
        self.NetworkDefinitionCreationFlag = SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1)
        self.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
        self.TensorIOMode = SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
        self.nptype = lambda dtype: dtype
        self.IProgressMonitor = type("IProgressMonitor", (), {"__init__": lambda self: None})

        class Cache:
            def __init__(self, data: bytes) -> None:
                self.data = bytes(data)

            def serialize(self) -> bytes:
                return self.data + b"+tuned;"

        class Config:
            progress_monitor: Any = None

            def set_memory_pool_limit(self, pool: str, size: int) -> None:
                fake.log.append(("pool", pool, size))

            def add_optimization_profile(self, profile: Any) -> None:
                fake.log.append(("profile", profile.shapes))

            def create_timing_cache(self, data: bytes) -> Cache:
                return Cache(data)

            def set_timing_cache(self, cache: Cache, ignore_mismatch: bool) -> bool:
                fake.log.append(("cache", cache.data, ignore_mismatch))
                self.cache = cache
                return cache.data != b"from another GPU"

            def get_timing_cache(self) -> Cache:
                return self.cache

        class Builder:
            def __init__(self, logger: Any) -> None:
                pass

            def create_network(self, flags: int) -> Any:
                fake.log.append(("flags", flags))
                return SimpleNamespace(num_inputs=len(inputs), get_input=lambda i: SimpleNamespace(
                    name=list(inputs)[i], shape=list(inputs.values())[i]))

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> Any:
                profile = SimpleNamespace(shapes={})
                profile.set_shape = lambda name, lo, opt, hi: profile.shapes.__setitem__(name, (lo, opt, hi))
                return profile

            def build_serialized_network(self, network: Any, config: Config) -> HostMemory | None:
                monitor = config.progress_monitor
                monitor.phase_start("Building engine", None, 2)
                monitor.phase_start("Tactic selection", "Building engine", 7)
                assert monitor.step_complete("Tactic selection", 0) is True
                monitor.phase_finish("Tactic selection")
                monitor.phase_finish("Building engine")
                return None if fake.fail_build else HostMemory(b"serialized plan")

        def parser_error(i: int) -> Any:
            return SimpleNamespace(node=lambda: i, node_name=lambda: f"/blocks.{i}/Mul", node_operator=lambda: "Mul",
                                   desc=lambda: "unsupported data type")

        class OnnxParser:
            def __init__(self, network: Any, logger: Any) -> None:
                self.num_errors = 0

            def parse_from_file(self, path: str) -> bool:
                self.num_errors = 2 if Path(path).read_bytes() == b"bad" else 0
                return self.num_errors == 0

            def get_error(self, i: int) -> Any:
                return parser_error(i)

        class HostMemory(np.ndarray):
            """``IHostMemory``: the plan behind the buffer protocol (with ``nbytes``), not ``bytes``; an ndarray
            subclass because a pure-Python class exposes a buffer only from Python 3.12."""

            def __new__(cls, data: bytes) -> HostMemory:
                return np.frombuffer(data, np.uint8).view(cls)

        class Context:
            made = 0

            def __init__(self) -> None:
                self.shapes = {n: s for n, (s, _, _) in tensors.items()}
                self.index = Context.made
                Context.made += 1

            def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
                # the engine's static dimensions must match; only its -1 dimensions take the given sizes
                declared = tensors[name][0]
                if len(shape) != len(declared) or any(d not in (-1, g) for d, g in zip(declared, shape)):
                    return False
                self.shapes[name] = tuple(shape)
                return True

            def get_tensor_shape(self, name: str) -> tuple[int, ...]:
                return self.shapes[name]

            def set_optimization_profile_async(self, index: int, stream: int) -> bool:
                fake.log.append(("select profile", self.index, index, stream))
                return 0 <= index < fake.profiles

            def set_tensor_address(self, name: str, ptr: int) -> bool:
                assert isinstance(ptr, int), f"set_tensor_address takes an int address; got {type(ptr).__name__}"
                fake.log.append(("address", self.index, name, ptr))
                return ptr != 0 and name in tensors  # False for a tensor the engine does not have

            def execute_async_v3(self, stream: int) -> bool:
                assert isinstance(stream, int), f"execute_async_v3 takes an int stream handle; got {type(stream)}"
                fake.log.append(("execute", self.index, stream))
                return stream != 0

        class CudaEngine:
            num_io_tensors = len(tensors)
            num_optimization_profiles = property(lambda self: fake.profiles)
            get_tensor_name = staticmethod(lambda i: list(tensors)[i])
            get_tensor_mode = staticmethod(lambda n: "INPUT" if tensors[n][2] else "OUTPUT")
            get_tensor_shape = staticmethod(lambda n: tensors[n][0])
            get_tensor_dtype = staticmethod(lambda n: tensors[n][1])
            create_execution_context = staticmethod(Context)

        class Runtime:
            def __init__(self, logger: Any) -> None:
                pass

            def deserialize_cuda_engine(self, data: bytes) -> Any:
                return CudaEngine() if data == b"serialized plan" else None

        self.Builder, self.OnnxParser, self.Runtime = Builder, OnnxParser, Runtime
