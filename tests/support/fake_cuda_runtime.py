"""A fake CUDA runtime for the TensorRT backend's tests: :class:`FakeRuntime` stands in for
``cuda.bindings.runtime`` (tests/runtime/test_cuda_graph.py, tests/runtime/test_tensorrt_seam.py)."""

from __future__ import annotations

import ctypes
import enum
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np


class Err(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorStreamCaptureInvalidated = 901


class FakeRuntime:
    """A stand-in for ``cuda.bindings.runtime`` that records calls and simulates what the helpers rely on.

    Device memory is bytearrays at fake 256-aligned addresses; host memory is real (numpy pointers), pinned
    memory from ``cudaMallocHost`` real ctypes buffers. Work on a stream runs at once, except while the stream
    is capturing: then it is recorded, and a graph launch replays the recording. Kernels (a TensorRT enqueue,
    in the backend tests) go through :meth:`enqueue`. ``fail[name] = Err.x`` makes the next calls of ``name``
    return that error. Rules of the CUDA runtime API documentation it enforces: a host copy (pageable or not)
    may not be captured here, synchronising a capturing stream is illegal, and copies between the host and the
    device are counted in ``pageable_copies`` when the host side is not pinned memory (those are staged and
    synchronous, "Memcpy behaviour" in the CUDA runtime API documentation).
    """

    cudaStreamNonBlocking = 1
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2, cudaMemcpyDeviceToDevice=3)
    cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeThreadLocal=1)

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail: dict[str, Err] = {}
        self.memory: dict[int, bytearray] = {}
        self.streams: set[int] = set()
        self.capturing: dict[int, list[Callable[[], None]]] = {}
        self.graphs: dict[int, list[Callable[[], None]]] = {}
        self.execs: dict[int, list[Callable[[], None]]] = {}
        self.pinned: dict[int, Any] = {}  # address → the ctypes buffer behind it
        self.pageable_copies = 0
        self._next = 0x10000

    # -- helpers for the tests -----------------------------------------------------------------------------
    def _handle(self) -> int:
        self._next += 0x10000
        return self._next

    def _failed(self, name: str, values: int) -> tuple[Any, ...] | None:
        self.calls.append(name)
        return (self.fail[name], *([None] * values)) if name in self.fail else None

    def _locate(self, ptr: int, count: int) -> tuple[bytearray, int]:
        for base, mem in self.memory.items():
            if base <= ptr and ptr + count <= base + len(mem):
                return mem, ptr - base
        raise AssertionError(f"{ptr:#x}+{count} is not inside any device allocation")

    def read(self, ptr: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        dtype = np.dtype(dtype)
        count = int(np.prod(shape)) * dtype.itemsize
        mem, offset = self._locate(ptr, count)
        return np.frombuffer(bytes(mem[offset:offset + count]), dtype=dtype).reshape(shape).copy()

    def write(self, ptr: int, value: np.ndarray) -> None:
        data = np.ascontiguousarray(value).tobytes()
        mem, offset = self._locate(ptr, len(data))
        mem[offset:offset + len(data)] = data

    def enqueue(self, stream: int, op: Callable[[], None]) -> None:
        assert stream in self.streams, f"unknown stream {stream:#x}"
        if stream in self.capturing:
            self.capturing[stream].append(op)
        else:
            op()

    # -- the runtime API used by runtime.backends.tensorrt.cuda_graph ----------------------------------------------
    def cudaMalloc(self, size: int) -> tuple[Any, ...]:
        if r := self._failed("cudaMalloc", 1):
            return r
        ptr = self._handle()
        self.memory[ptr] = bytearray(b"\xff" * size)  # cudaMalloc does not clear memory: NaN as float32
        return Err.cudaSuccess, ptr

    def cudaMallocHost(self, size: int) -> tuple[Any, ...]:
        if r := self._failed("cudaMallocHost", 1):
            return r
        buffer = (ctypes.c_uint8 * size)()
        self.pinned[ctypes.addressof(buffer)] = buffer
        return Err.cudaSuccess, ctypes.addressof(buffer)

    def cudaFreeHost(self, ptr: int) -> tuple[Any, ...]:
        self.calls.append("cudaFreeHost")
        del self.pinned[ptr]
        return (Err.cudaSuccess,)

    def cudaGetLastError(self) -> tuple[Any, ...]:
        self.calls.append("cudaGetLastError")
        return (Err.cudaSuccess,)

    def _is_pinned(self, ptr: int, count: int) -> bool:
        return any(base <= ptr and ptr + count <= base + len(buf) for base, buf in self.pinned.items())

    def cudaFree(self, ptr: int) -> tuple[Any, ...]:
        if r := self._failed("cudaFree", 0):
            return r
        del self.memory[ptr]
        return (Err.cudaSuccess,)

    def cudaStreamCreateWithFlags(self, flags: int) -> tuple[Any, ...]:
        if r := self._failed("cudaStreamCreateWithFlags", 1):
            return r
        assert flags == self.cudaStreamNonBlocking
        handle = self._handle()
        self.streams.add(handle)
        return Err.cudaSuccess, handle

    def cudaStreamDestroy(self, stream: int) -> tuple[Any, ...]:
        self.calls.append("cudaStreamDestroy")
        self.streams.remove(stream)
        return (Err.cudaSuccess,)

    def cudaStreamSynchronize(self, stream: int) -> tuple[Any, ...]:
        if r := self._failed("cudaStreamSynchronize", 0):
            return r
        assert stream not in self.capturing, "synchronize during capture is illegal"
        return (Err.cudaSuccess,)

    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: int, stream: int) -> tuple[Any, ...]:
        if r := self._failed("cudaMemcpyAsync", 0):
            return r
        k = self.cudaMemcpyKind
        if kind in (k.cudaMemcpyHostToDevice, k.cudaMemcpyDeviceToHost):
            self.pageable_copies += not self._is_pinned(src if kind == k.cudaMemcpyHostToDevice else dst, count)
        if kind == k.cudaMemcpyHostToDevice:
            assert stream not in self.capturing, "a pageable host copy inside a captured graph"
            op = lambda: self.write(dst, np.frombuffer(ctypes.string_at(src, count), np.uint8))  # noqa: E731
        elif kind == k.cudaMemcpyDeviceToHost:
            assert stream not in self.capturing, "a pageable host copy inside a captured graph"
            op = lambda: ctypes.memmove(dst, bytes(self.read(src, (count,), np.uint8)), count)  # noqa: E731
        else:
            op = lambda: self.write(dst, self.read(src, (count,), np.uint8))  # noqa: E731
        self.enqueue(stream, op)
        return (Err.cudaSuccess,)

    def cudaMemsetAsync(self, ptr: int, value: int, count: int, stream: int) -> tuple[Any, ...]:
        if r := self._failed("cudaMemsetAsync", 0):
            return r
        self.enqueue(stream, lambda: self.write(ptr, np.full(count, value, np.uint8)))
        return (Err.cudaSuccess,)

    def cudaStreamBeginCapture(self, stream: int, mode: int) -> tuple[Any, ...]:
        if r := self._failed("cudaStreamBeginCapture", 0):
            return r
        assert stream not in self.capturing
        self.capturing[stream] = []
        return (Err.cudaSuccess,)

    def cudaStreamEndCapture(self, stream: int) -> tuple[Any, ...]:
        ops = self.capturing.pop(stream)  # capture ends even when the call reports an error
        if r := self._failed("cudaStreamEndCapture", 1):
            return r
        graph = self._handle()
        self.graphs[graph] = ops
        return Err.cudaSuccess, graph

    def cudaGraphInstantiate(self, graph: int, flags: int) -> tuple[Any, ...]:
        if r := self._failed("cudaGraphInstantiate", 1):
            return r
        graph_exec = self._handle()
        self.execs[graph_exec] = list(self.graphs[graph])
        return Err.cudaSuccess, graph_exec

    def cudaGraphDestroy(self, graph: int) -> tuple[Any, ...]:
        self.calls.append("cudaGraphDestroy")
        del self.graphs[graph]
        return (Err.cudaSuccess,)

    def cudaGraphExecDestroy(self, graph_exec: int) -> tuple[Any, ...]:
        self.calls.append("cudaGraphExecDestroy")
        del self.execs[graph_exec]
        return (Err.cudaSuccess,)

    def cudaGraphLaunch(self, graph_exec: int, stream: int) -> tuple[Any, ...]:
        if r := self._failed("cudaGraphLaunch", 0):
            return r
        for op in self.execs[graph_exec]:
            self.enqueue(stream, op)
        return (Err.cudaSuccess,)
