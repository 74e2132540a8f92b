"""CUDA through cuda-python: checked calls, owned device buffers and streams, and captured CUDA graphs.

The TensorRT backend allocates every device buffer and every pinned host buffer (:class:`HostBuffer`,
``cudaMallocHost``: copies from pageable memory are staged and synchronous, from pinned memory truly
asynchronous) once, and replays each TensorRT enqueue as a CUDA graph (:class:`CudaGraphs`): recorded by stream
capture (``cudaStreamBeginCapture`` → ``cudaStreamEndCapture`` → ``cudaGraphInstantiate``) after an eager
warm-up and a stream synchronisation, then launched with ``cudaGraphLaunch``. A capture that fails ends the
capture, clears the error (``cudaGetLastError``) and raises :class:`CaptureFailed`, so the caller can run
without graphs, as trtexec does.

Written against cuda-python 12.6+ and 13.x (``cuda.bindings.runtime``; older 12.x ``cuda.cudart`` has the
same calls). On the development machine only the CPU tests ran, over a fake runtime module; the GPU test
(``tests/runtime/test_cuda_graph.py``) needs a CUDA device. cuda-python must match the driver's CUDA major
version: 12.x on JetPack 6, 13.x on JetPack 7 (the ``cuda12`` / ``cuda13`` extras).

The CUDA runtime answers "insufficient driver" both when there is no NVIDIA driver at all and when the driver
is older than cuda-python; :func:`driver_problem` tells them apart by asking the driver library itself
(``libcuda.so.1``'s ``cuDriverGetVersion``, through ctypes: it has to work when cuda-python is what is wrong).
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Hashable, Optional

import numpy as np

from xvla.errors import XVLAError
from xvla.extras import MissingDependency


class CudaError(XVLAError, RuntimeError):
    """A CUDA runtime call failed, or cuda-python is missing."""


class CudaPythonMissing(MissingDependency, CudaError):
    """cuda-python is not installed here, or does not import."""


class CaptureFailed(CudaError):
    """Recording a CUDA graph failed; the stream is out of capture mode and the error cleared."""


def runtime() -> ModuleType:
    """The cuda-python runtime module (imported on first use, so importing this module needs no CUDA)."""
    try:
        from cuda.bindings import runtime as rt
    except ImportError:
        try:
            from cuda import cudart as rt  # cuda-python 12.x before the cuda.bindings layout
        except ImportError as exc:
            raise CudaPythonMissing.of("cuda12", exc, needed_by="the TensorRT backend",
                                       install="pip install 'xvla-edge[cuda12]' for CUDA 12 drivers (JetPack 6), "
                                               "'xvla-edge[cuda13]' for CUDA 13 (JetPack 7)") from None
    return rt


def driver_version() -> Optional[int]:
    """The CUDA version the installed NVIDIA driver supports (e.g. 12060 for 12.6), or None when no driver
    library loads."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return int(version.value)


def bindings_major() -> Optional[int]:
    """cuda-python's major version (the CUDA major it was built for), or None if it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    for name in ("cuda-bindings", "cuda-python"):
        try:
            return int(version(name).split(".")[0])
        except (PackageNotFoundError, ValueError):
            continue
    return None


def driver_problem(driver: Optional[int], bindings: Optional[int]) -> str:
    """Why the CUDA runtime reports an insufficient driver: no driver, or one older than cuda-python."""
    if driver is None:
        return ("no NVIDIA driver: libcuda.so.1 does not load (no GPU, the driver is not installed, or this "
                "container was started without the GPU)")
    have = f"{driver // 1000}.{driver % 1000 // 10}"
    if bindings is not None and driver // 1000 < bindings:
        return (f"the NVIDIA driver supports CUDA {have}, older than cuda-python {bindings}.x needs: install "
                f"cuda-python {driver // 1000}.x (pip install 'xvla-edge[cuda{driver // 1000}]') or update the driver")
    return f"the NVIDIA driver supports CUDA {have}; cuda-python {bindings}.x still finds it insufficient"


def cuda_call(fn: Callable[..., tuple[Any, ...]], *args: Any) -> Any:
    """Call a cuda-python function, unpack its ``(err, *values)`` and raise :class:`CudaError` on failure.

    Returns None, the single value, or the tuple of values.
    """
    err, *values = fn(*args)
    if int(err) != 0:  # cudaSuccess
        name = getattr(err, "name", str(err))
        hint = (f": {driver_problem(driver_version(), bindings_major())}"
                if name == "cudaErrorInsufficientDriver" else "")
        raise CudaError(f"{fn.__name__} failed: {name} ({int(err)}){hint}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


@dataclass(frozen=True)
class Device:
    index: int
    name: str
    compute_capability: str  # "8.7" (Orin), "11.0" (Thor)


def current_device() -> Device:
    rt = runtime()
    index = cuda_call(rt.cudaGetDevice)
    props = cuda_call(rt.cudaGetDeviceProperties, index)
    name = props.name.split(b"\0", 1)[0].decode() if isinstance(props.name, bytes) else str(props.name)
    return Device(int(index), name, f"{props.major}.{props.minor}")


def device_count() -> int:
    """CUDA devices visible to this process; 0 without cuda-python or a driver."""
    try:
        rt = runtime()
        return int(cuda_call(rt.cudaGetDeviceCount))
    except CudaError:
        return 0


class Stream:
    """One non-blocking CUDA stream; ``free()`` destroys it."""

    def __init__(self) -> None:
        self._rt = runtime()
        self.handle: Any = cuda_call(self._rt.cudaStreamCreateWithFlags, self._rt.cudaStreamNonBlocking)

    @property
    def ptr(self) -> int:
        """The handle as an integer (what TensorRT's ``execute_async_v3`` takes)."""
        return int(self.handle)

    def synchronize(self) -> None:
        cuda_call(self._rt.cudaStreamSynchronize, self.handle)

    def free(self) -> None:
        if self.handle is not None:
            cuda_call(self._rt.cudaStreamDestroy, self.handle)
            self.handle = None


class DeviceBuffer:
    """``nbytes`` of device memory (``cudaMalloc``, so 256-byte aligned); ``free()`` releases it."""

    def __init__(self, nbytes: int) -> None:
        self._rt = runtime()
        self.nbytes = int(nbytes)
        self.ptr: int = int(cuda_call(self._rt.cudaMalloc, self.nbytes))

    def _check(self, host: np.ndarray) -> None:
        if host.nbytes != self.nbytes or not host.flags.c_contiguous:
            raise ValueError(f"host array of {host.nbytes} bytes (contiguous: {host.flags.c_contiguous}) "
                             f"does not fit a {self.nbytes}-byte device buffer")

    def upload(self, host: np.ndarray, stream: Stream) -> None:
        """Copy a contiguous host array of exactly ``nbytes`` to the device, ordered on ``stream`` (truly
        asynchronous only from pinned memory, :class:`HostBuffer`)."""
        self._check(host)
        cuda_call(self._rt.cudaMemcpyAsync, self.ptr, host.ctypes.data, self.nbytes,
                  self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.handle)

    def download(self, host: np.ndarray, stream: Stream) -> None:
        """Copy the buffer into ``host``; valid once ``stream`` is synchronized."""
        self._check(host)
        cuda_call(self._rt.cudaMemcpyAsync, host.ctypes.data, self.ptr, self.nbytes,
                  self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.handle)

    def memset(self, stream: Stream, value: int = 0) -> None:
        cuda_call(self._rt.cudaMemsetAsync, self.ptr, value, self.nbytes, stream.handle)

    def copy_from(self, source: DeviceBuffer, offset: int, stream: Stream) -> None:
        """Fill this buffer from ``source`` at byte ``offset`` (device to device, ordered on ``stream``)."""
        if offset < 0 or offset + self.nbytes > source.nbytes:
            raise ValueError(f"{self.nbytes} bytes at offset {offset} do not fit a {source.nbytes}-byte buffer")
        cuda_call(self._rt.cudaMemcpyAsync, self.ptr, source.ptr + offset, self.nbytes,
                  self._rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream.handle)

    def free(self) -> None:
        if self.ptr:
            cuda_call(self._rt.cudaFree, self.ptr)
            self.ptr = 0


class HostBuffer:
    """A pinned (page-locked) host array of ``shape`` and ``dtype`` (``cudaMallocHost``); ``free()`` releases it.

    ``array`` is a numpy view of the pinned memory: write inputs into it, read outputs from it.
    """

    def __init__(self, shape: tuple[int, ...], dtype: Any) -> None:
        self._rt = runtime()
        dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if self.nbytes < 1:
            raise ValueError(f"a pinned buffer needs at least one byte; got shape {shape} of {dtype}")
        self.ptr: int = int(cuda_call(self._rt.cudaMallocHost, self.nbytes))
        raw = (ctypes.c_uint8 * self.nbytes).from_address(self.ptr)
        self.array: np.ndarray = np.frombuffer(raw, dtype=np.uint8).view(dtype).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            self.array = np.empty(0)
            cuda_call(self._rt.cudaFreeHost, self.ptr)
            self.ptr = 0


class CudaGraphs:
    """Replays a callable's launches on ``stream`` as CUDA graphs, one instantiated graph per key.

    ``launch(key, record)`` captures ``record()`` the first time ``key`` is seen (after ``warmup`` eager
    runs, which TensorRT needs before capture, and a stream synchronisation) and launches the graph. A
    captured graph freezes every address and argument ``record`` used: inputs must be written in place into
    the buffers it reads, and nothing it used may be rebound afterwards — a different binding is another key
    (for TensorRT, another execution context). ``record`` must be idempotent: the warm-up runs it for real.
    At most ``capacity`` graphs are kept; the least recently launched one is freed first.
    """

    def __init__(self, stream: Stream, *, capacity: int = 4, warmup: int = 1) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1; got {capacity}")
        self._rt = runtime()
        self.stream = stream
        self.capacity = capacity
        self.warmup = warmup
        self._execs: OrderedDict[Hashable, Any] = OrderedDict()

    @property
    def keys(self) -> tuple[Hashable, ...]:
        """Keys with a captured graph, least recently launched first."""
        return tuple(self._execs)

    def launch(self, key: Hashable, record: Callable[[], None]) -> None:
        """Launch the graph for ``key`` on the stream, capturing ``record`` first if there is none."""
        if key in self._execs:
            self._execs.move_to_end(key)
        else:
            while len(self._execs) >= self.capacity:
                _, old = self._execs.popitem(last=False)
                cuda_call(self._rt.cudaGraphExecDestroy, old)
            self._execs[key] = self._capture(record)
        cuda_call(self._rt.cudaGraphLaunch, self._execs[key], self.stream.handle)

    def _capture(self, record: Callable[[], None]) -> Any:
        rt, handle = self._rt, self.stream.handle
        for _ in range(self.warmup):
            record()
        self.stream.synchronize()  # the warm-up's work is done before capture begins
        cuda_call(rt.cudaStreamBeginCapture, handle, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal)
        try:
            record()
        except Exception as exc:
            err, graph = rt.cudaStreamEndCapture(handle)  # leave the stream out of capture mode
            if int(err) == 0 and graph is not None:
                rt.cudaGraphDestroy(graph)
            rt.cudaGetLastError()  # clear the error the failed capture left
            raise CaptureFailed(f"capture failed while recording: {type(exc).__name__}: {exc}") from exc
        err, graph = rt.cudaStreamEndCapture(handle)
        if int(err) != 0:
            rt.cudaGetLastError()
            raise CaptureFailed(f"cudaStreamEndCapture failed: {getattr(err, 'name', err)} ({int(err)}) — an "
                                "operation in the recorded work is not capturable")
        try:
            return cuda_call(rt.cudaGraphInstantiate, graph, 0)
        except CudaError as exc:
            rt.cudaGetLastError()
            raise CaptureFailed(str(exc)) from exc
        finally:
            cuda_call(rt.cudaGraphDestroy, graph)

    def clear(self) -> None:
        """Free every instantiated graph (before the buffers and TensorRT contexts they use)."""
        while self._execs:
            _, graph_exec = self._execs.popitem()
            cuda_call(self._rt.cudaGraphExecDestroy, graph_exec)
