"""runtime.backends.tensorrt.cuda_graph: checked calls, buffers and graph capture over a fake runtime; one GPU test."""

from __future__ import annotations

import ctypes
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pytest

from runtime.backends.tensorrt import cuda_graph
from runtime.backends.tensorrt.cuda_graph import (CaptureFailed, CudaError, CudaGraphs, DeviceBuffer, HostBuffer,
                                                  Stream, cuda_call)

from tests.support.fake_cuda_runtime import Err, FakeRuntime


@pytest.fixture
def rt(monkeypatch: pytest.MonkeyPatch) -> FakeRuntime:
    fake = FakeRuntime()
    monkeypatch.setattr(cuda_graph, "runtime", lambda: fake)
    return fake


# -- cuda_call ---------------------------------------------------------------------------------------------
def test_cuda_call_unpacks_values(rt: FakeRuntime) -> None:
    assert isinstance(cuda_call(rt.cudaMalloc, 16), int)
    stream = cuda_call(rt.cudaStreamCreateWithFlags, rt.cudaStreamNonBlocking)
    assert cuda_call(rt.cudaStreamSynchronize, stream) is None
    assert cuda_call(lambda: (Err.cudaSuccess, 1, 2)) == (1, 2)


def test_cuda_call_error_names_function_and_error(rt: FakeRuntime) -> None:
    rt.fail["cudaMalloc"] = Err.cudaErrorMemoryAllocation
    with pytest.raises(CudaError, match=r"cudaMalloc failed: cudaErrorMemoryAllocation \(2\)"):
        DeviceBuffer(1024)
    rt.fail["cudaStreamCreateWithFlags"] = Err.cudaErrorInsufficientDriver
    with pytest.raises(CudaError, match="cudaStreamCreateWithFlags failed: cudaErrorInsufficientDriver"):
        Stream()


def test_insufficient_driver_says_whether_there_is_no_driver_or_an_old_one(rt: FakeRuntime,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    rt.fail["cudaStreamCreateWithFlags"] = Err.cudaErrorInsufficientDriver
    monkeypatch.setattr(cuda_graph, "bindings_major", lambda: 13)
    monkeypatch.setattr(cuda_graph, "driver_version", lambda: None)
    with pytest.raises(CudaError, match=r"InsufficientDriver \(35\): no NVIDIA driver: libcuda.so.1 does not load"):
        Stream()
    monkeypatch.setattr(cuda_graph, "driver_version", lambda: 12060)  # JetPack 6 with cuda-python 13
    with pytest.raises(CudaError, match=r"supports CUDA 12\.6, older than cuda-python 13\.x needs: install "
                                        r"cuda-python 12\.x \(pip install 'xvla-edge\[cuda12\]'\)"):
        Stream()
    assert "no NVIDIA driver" not in cuda_graph.driver_problem(13000, 13)


def test_driver_version_reads_the_driver_library_when_there_is_one() -> None:
    version = cuda_graph.driver_version()  # None here (no driver); on a GPU machine the driver's CUDA version
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        assert version is None
    else:
        assert version is not None and version >= 11000


def test_missing_cuda_python_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)  # makes the import fail
    with pytest.raises(CudaError, match=r"pip install 'xvla-edge\[cuda12\]' for CUDA 12 drivers"):
        cuda_graph.runtime()
    assert cuda_graph.device_count() == 0


def test_device_count_is_zero_without_a_driver(rt: FakeRuntime) -> None:
    rt.cudaGetDeviceCount = lambda: (Err.cudaErrorInsufficientDriver, None)  # type: ignore[attr-defined]
    assert cuda_graph.device_count() == 0


def test_current_device_reads_name_and_compute_capability(rt: FakeRuntime) -> None:
    props = SimpleNamespace(name=b"Orin\0\0garbage", major=8, minor=7)
    rt.cudaGetDevice = lambda: (Err.cudaSuccess, 0)  # type: ignore[attr-defined]
    rt.cudaGetDeviceProperties = lambda i: (Err.cudaSuccess, props)  # type: ignore[attr-defined]
    assert cuda_graph.current_device() == cuda_graph.Device(0, "Orin", "8.7")


# -- buffers and streams -----------------------------------------------------------------------------------
def test_buffer_round_trip_and_explicit_free(rt: FakeRuntime) -> None:
    stream = Stream()
    buf = DeviceBuffer(4 * 6)
    host = np.arange(6, dtype=np.float32)
    buf.upload(host, stream)
    out = np.zeros_like(host)
    buf.download(out, stream)
    np.testing.assert_array_equal(out, host)
    buf.memset(stream)
    buf.download(out, stream)
    assert not out.any()
    buf.free()
    buf.free()  # idempotent
    stream.free()
    assert rt.memory == {} and rt.streams == set()
    assert rt.calls.count("cudaFree") == 1


def test_pinned_host_buffers_are_copied_without_staging(rt: FakeRuntime) -> None:
    stream, buf = Stream(), DeviceBuffer(4 * 6)
    host = HostBuffer((2, 3), np.float32)
    assert host.array.shape == (2, 3) and host.array.dtype == np.float32 and host.ptr in rt.pinned
    host.array[:] = np.arange(6, dtype=np.float32).reshape(2, 3)
    buf.upload(host.array, stream)
    back = HostBuffer((2, 3), np.float32)
    buf.download(back.array, stream)
    np.testing.assert_array_equal(back.array, host.array)
    assert rt.pageable_copies == 0
    buf.upload(np.zeros(6, np.float32), stream)  # a plain numpy array is pageable: counted
    assert rt.pageable_copies == 1
    host.free()
    host.free()  # idempotent
    back.free()
    assert rt.pinned == {} and rt.calls.count("cudaFreeHost") == 2
    with pytest.raises(ValueError, match="at least one byte"):
        HostBuffer((0, 3), np.float32)


def test_device_to_device_copy_from_an_offset(rt: FakeRuntime) -> None:
    stream, schedule, t = Stream(), DeviceBuffer(3 * 256), DeviceBuffer(4)
    rt.write(schedule.ptr + 512, np.array([0.25], np.float32))
    t.copy_from(schedule, 512, stream)
    np.testing.assert_array_equal(rt.read(t.ptr, (1,), np.float32), [0.25])
    with pytest.raises(ValueError, match="4 bytes at offset 766 do not fit a 768-byte buffer"):
        t.copy_from(schedule, 766, stream)


def test_buffer_refuses_a_host_array_of_another_size(rt: FakeRuntime) -> None:
    stream, buf = Stream(), DeviceBuffer(16)
    with pytest.raises(ValueError, match="12 bytes.*16-byte"):
        buf.upload(np.zeros(3, np.float32), stream)
    with pytest.raises(ValueError, match="contiguous: False"):
        buf.download(np.zeros((4, 2), np.float32)[:, 0], stream)


# -- graphs ------------------------------------------------------------------------------------------------
def _counter_workload(rt: FakeRuntime, stream: Stream) -> tuple[DeviceBuffer, DeviceBuffer, Callable[[int], None]]:
    """``record(v)``: memset a to v, copy a → b (what the GPU test captures too)."""
    a, b = DeviceBuffer(64), DeviceBuffer(64)

    def record(value: int) -> None:
        a.memset(stream, value)
        cuda_call(rt.cudaMemcpyAsync, b.ptr, a.ptr, 64, rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream.handle)

    return a, b, record


def test_capture_once_per_key_and_replay_per_call(rt: FakeRuntime) -> None:
    stream = Stream()
    _, b, record = _counter_workload(rt, stream)
    graphs = CudaGraphs(stream)
    recorded = []
    out = np.zeros(64, np.uint8)
    for _ in range(3):
        graphs.launch("k7", lambda: (recorded.append(7), record(7)))
        b.memset(stream)  # clear between launches: the replay must write b again
        graphs.launch("k7", lambda: (recorded.append(7), record(7)))
        b.download(out, stream)
        assert (out == 7).all()
    assert recorded == [7, 7]  # warm-up + capture, then replays only
    assert rt.calls.count("cudaStreamBeginCapture") == 1
    assert rt.calls.count("cudaGraphInstantiate") == 1
    assert rt.calls.count("cudaGraphLaunch") == 6
    assert rt.calls.count("cudaGraphDestroy") == 1  # the graph template, once instantiated
    assert graphs.keys == ("k7",)


def test_recapture_on_key_change_keeps_one_graph_per_key(rt: FakeRuntime) -> None:
    stream = Stream()
    _, b, record = _counter_workload(rt, stream)
    graphs = CudaGraphs(stream, capacity=2)
    out = np.zeros(64, np.uint8)
    for value in (1, 2, 1, 2):
        graphs.launch(value, lambda v=value: record(v))
        b.download(out, stream)
        assert (out == value).all()
    assert rt.calls.count("cudaStreamBeginCapture") == 2
    assert graphs.keys == (1, 2) and len(rt.execs) == 2
    graphs.launch(3, lambda: record(3))  # over capacity: the least recently launched graph (1) is freed
    assert graphs.keys == (2, 3) and len(rt.execs) == 2
    assert rt.calls.count("cudaGraphExecDestroy") == 1
    graphs.launch(1, lambda: record(1))
    assert rt.calls.count("cudaStreamBeginCapture") == 4
    graphs.clear()
    assert rt.execs == {} and graphs.keys == ()


def test_a_failure_inside_capture_ends_capture_and_keeps_no_graph(rt: FakeRuntime) -> None:
    stream = Stream()
    graphs = CudaGraphs(stream, warmup=0)

    def bad() -> None:
        raise RuntimeError("enqueue failed")

    with pytest.raises(CaptureFailed, match="capture failed while recording: RuntimeError: enqueue failed"):
        graphs.launch("k", bad)
    assert stream.handle not in rt.capturing  # the stream is usable again
    assert rt.graphs == {} and graphs.keys == ()
    assert rt.calls[-1] == "cudaGetLastError"  # the failed capture's error is cleared
    rt.fail["cudaStreamEndCapture"] = Err.cudaErrorStreamCaptureInvalidated
    with pytest.raises(CaptureFailed, match="cudaStreamEndCapture failed: cudaErrorStreamCaptureInvalidated"):
        graphs.launch("k", lambda: None)
    del rt.fail["cudaStreamEndCapture"]
    assert stream.handle not in rt.capturing and rt.calls[-1] == "cudaGetLastError"
    rt.fail["cudaGraphInstantiate"] = Err.cudaErrorStreamCaptureInvalidated
    with pytest.raises(CaptureFailed, match="cudaGraphInstantiate failed: cudaErrorStreamCaptureInvalidated"):
        graphs.launch("k", lambda: None)
    assert rt.graphs == {} and graphs.keys == ()  # the template was destroyed
    assert isinstance(CaptureFailed("x"), CudaError)


def test_the_warm_up_finishes_before_capture_begins(rt: FakeRuntime) -> None:
    stream = Stream()
    _, _, record = _counter_workload(rt, stream)
    CudaGraphs(stream).launch("k", lambda: record(1))
    begin = rt.calls.index("cudaStreamBeginCapture")
    assert rt.calls[begin - 1] == "cudaStreamSynchronize"
    assert "cudaMemsetAsync" in rt.calls[:begin - 1]  # the warm-up ran first


def test_capacity_must_be_positive(rt: FakeRuntime) -> None:
    with pytest.raises(ValueError, match="capacity"):
        CudaGraphs(Stream(), capacity=0)


# -- on a real GPU -----------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_graph_replay_matches_eager_on_a_gpu() -> None:
    if cuda_graph.device_count() == 0:
        pytest.skip("no CUDA device (needs cuda-python matching the driver and an NVIDIA GPU)")
    rt = cuda_graph.runtime()
    stream = Stream()
    a, b = DeviceBuffer(1 << 20), DeviceBuffer(1 << 20)
    graphs = CudaGraphs(stream, capacity=1)
    eager, replayed = np.empty(1 << 20, np.uint8), np.empty(1 << 20, np.uint8)

    def record(value: int) -> None:
        a.memset(stream, value)
        cuda_call(rt.cudaMemcpyAsync, b.ptr, a.ptr, b.nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice,
                  stream.handle)

    try:
        for value in (3, 250, 3):
            record(value)
            b.download(eager, stream)
            stream.synchronize()
            b.memset(stream)
            graphs.launch(value, lambda v=value: record(v))
            b.download(replayed, stream)
            stream.synchronize()
            np.testing.assert_array_equal(replayed, eager)
            assert (replayed == value).all()
        assert graphs.keys == (3,)  # capacity 1: each key change re-captured and freed the old graph
    finally:
        graphs.clear()
        a.free()
        b.free()
        stream.free()


@pytest.mark.gpu
def test_a_ping_pong_loop_of_graph_launches_matches_eager_on_a_gpu() -> None:
    """The TensorRT backend's loop shape: per step k, a device copy of slot k of a schedule into ``t`` outside any
    graph, then the graph of key k % 2, which reads ``t`` and x0[k % 2] and writes x0[1 - k % 2]; replayed over
    several chunks with new schedules, it leaves exactly what the same calls leave run eagerly."""
    if cuda_graph.device_count() == 0:
        pytest.skip("no CUDA device (needs cuda-python matching the driver and an NVIDIA GPU)")
    rt = cuda_graph.runtime()
    stream, slot = Stream(), 256
    t, x0 = DeviceBuffer(slot), [DeviceBuffer(2 * slot), DeviceBuffer(2 * slot)]
    schedule = DeviceBuffer(10 * slot)
    graphs = CudaGraphs(stream, capacity=2)

    def record(k: int) -> None:  # x0[1-k] = [t | x0[k]'s first half]
        d2d = rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        cuda_call(rt.cudaMemcpyAsync, x0[1 - k].ptr, t.ptr, slot, d2d, stream.handle)
        cuda_call(rt.cudaMemcpyAsync, x0[1 - k].ptr + slot, x0[k].ptr, slot, d2d, stream.handle)

    def chunk(steps: int, values: np.ndarray, graphed: bool) -> np.ndarray:
        schedule.upload(np.repeat(values, slot).astype(np.uint8), stream)
        x0[0].memset(stream)
        for k in range(steps):
            t.copy_from(schedule, k * slot, stream)
            if graphed:
                graphs.launch(k % 2, lambda key=k % 2: record(key))
            else:
                record(k % 2)
        out = np.empty((2, 2 * slot), np.uint8)
        x0[0].download(out[0], stream)
        x0[1].download(out[1], stream)
        stream.synchronize()
        return out

    try:
        rng = np.random.default_rng(0)
        for steps in (10, 3, 10):
            values = rng.integers(1, 255, 10)
            eager, replayed = chunk(steps, values, False), chunk(steps, values, True)
            np.testing.assert_array_equal(replayed, eager)
            assert (eager[steps % 2][:slot] == values[steps - 1]).all()  # the last step's t
        assert graphs.keys == (0, 1)  # two graphs captured once, replayed for every chunk
    finally:
        graphs.clear()
        for buf in (t, *x0, schedule):
            buf.free()
        stream.free()
