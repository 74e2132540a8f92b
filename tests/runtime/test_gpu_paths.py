"""The GPU paths on a real NVIDIA GPU: what ``make gpu-check`` (tools/gpu_check.py) runs, step by step.

Every test here skips, naming what is missing, without CUDA (a CUDA build of torch and a GPU; onnxruntime-gpu's
CUDA provider; TensorRT), so the suite runs everywhere; on a lent GPU machine ``make gpu-check`` selects them by
name (its steps), each with its own timeout. References are independent of the path under test: the eager loop
for a captured graph, the CPU provider for ONNX Runtime's CUDA provider, the batch-1 chunk of each observation
for a batch, the fp32 bundle on the CPU for the accuracy gate.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest

from runtime.types import Observation

pytestmark = [pytest.mark.gpu, pytest.mark.model, pytest.mark.subprocess]  # exports run `xvla-edge export`

SIZES = ("tiny", "small")
TORCH_ATOL = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 2e-2}  # graph vs eager, same dtype, same GPU
FP32_ATOL = 1e-5  # ONNX Runtime CUDA vs CPU on an fp32 bundle (the fp32 gate's max_abs)


def torch_cuda_missing() -> str | None:
    """Why torch cannot run on a GPU here (None: it can)."""
    try:
        import torch
    except ImportError:
        return "needs torch (the [export] extra)"
    if not torch.cuda.is_available():
        return (f"needs a CUDA device: torch {torch.__version__} sees none (torch.version.cuda = "
                f"{torch.version.cuda}; a CPU build has None)")
    return None


def ort_cuda_missing() -> str | None:
    """Why ONNX Runtime's CUDA provider cannot run here (None: it can)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "needs onnxruntime-gpu"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return (f"needs onnxruntime-gpu: onnxruntime {ort.__version__} has no CUDAExecutionProvider "
                f"({ort.get_available_providers()})")
    from runtime.backends.tensorrt import cuda_graph

    if cuda_graph.driver_version() is None:
        return "needs an NVIDIA GPU: " + cuda_graph.driver_problem(None, None)
    return None


def tensorrt_missing() -> str | None:
    """Why TensorRT engines cannot be built and run here (None: they can)."""
    import importlib.util

    from runtime.backends.tensorrt import cuda_graph

    if importlib.util.find_spec("tensorrt") is None:
        return "needs TensorRT (`import tensorrt`): JetPack's, or a wheel from the index where one installs"
    if cuda_graph.device_count() == 0:
        return "needs a CUDA device visible to cuda-python (cuda-python of the driver's CUDA major)"
    return None


def need(reason: str | None) -> None:
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory):
    """``bundle(size, precision, batch_sizes=(1,))``: the benchmarks' cached bundle of the size's random checkpoint
    (:func:`benchmarks.harness.bundle`: domain 0, every view slot, exported by ``xvla-edge export``), so every step
    of ``make gpu-check`` and its timings export each bundle once (into ``XVLA_BENCH_CACHE``, which it sets; else a
    temporary directory); ``bundle.checkpoint(size)`` the checkpoint, ``bundle.engines(...)`` the bundle with
    TensorRT engines built here."""
    from benchmarks import harness

    with pytest.MonkeyPatch.context() as mp:
        if not os.environ.get("XVLA_BENCH_CACHE"):
            mp.setenv("XVLA_BENCH_CACHE", str(tmp_path_factory.mktemp("gpu")))
        get = functools.partial(harness.bundle)
        get.checkpoint = harness.checkpoint  # type: ignore[attr-defined]
        get.engines = harness.engines  # type: ignore[attr-defined]
        yield get


def observation(manifest, seed: int) -> Observation:
    """A camera-sized observation for the bundle, with its own fixed noise."""
    rng = np.random.default_rng(seed)
    views = int(manifest.inputs["views"])
    return Observation(images=[rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(views)],
                       instruction="pick up the cup",
                       proprio=rng.normal(0, 0.2, int(manifest.inputs["proprio_dim"])).astype(np.float32),
                       noise=rng.standard_normal((int(manifest.action["chunk_length"]), int(manifest.action["dim"])),
                                                 dtype=np.float32))


def gate_errors(manifest, reference: np.ndarray, candidate: np.ndarray) -> list[str]:
    """Failures of ``candidate`` against ``reference`` under the bundle's own accuracy tolerance."""
    from calibration.check import compare, tolerance_for

    arms, _ = compare(reference, candidate, manifest.action, tolerance_for(manifest))
    return [f for a in arms for f in a.failures]


# -- torch: one CUDA graph per step count against the eager loop -----------------------------------------------
@pytest.mark.parametrize("dtype", tuple(TORCH_ATOL))
@pytest.mark.parametrize("size", SIZES)
def test_torch_cuda_graph_equals_eager(bundle, size: str, dtype: str) -> None:
    need(torch_cuda_missing())
    from runtime.policy import Policy

    path, ckpt = bundle(size, "fp32"), bundle.checkpoint(size)
    with Policy.load(path, backend="torch", device="cuda", checkpoint=ckpt, dtype=dtype) as eager, \
            Policy.load(path, backend="torch", device="cuda", checkpoint=ckpt, dtype=dtype, cuda_graph=True) as graph:
        for seed, steps in ((0, 10), (1, 3), (2, 10)):  # a second step count captures a second graph
            obs = observation(eager.manifest, seed)
            want, got = eager.act(obs, steps=steps).actions, graph.act(obs, steps=steps).actions
            assert np.isfinite(got).all()
            np.testing.assert_allclose(got, want, rtol=0, atol=TORCH_ATOL[dtype])
        assert graph.backend.graph_fallback is None, graph.backend.graph_fallback
        assert sorted(graph.backend.graphs) == [3, 10]


# -- ONNX Runtime: the CUDA provider with device buffers and CUDA graphs against the CPU provider ---------------
@pytest.mark.parametrize("precision", ("fp32", "fp16"))
@pytest.mark.parametrize("size", SIZES)
def test_onnxruntime_cuda_graphs_match_cpu(bundle, size: str, precision: str) -> None:
    need(ort_cuda_missing())
    from runtime.policy import Policy

    path = bundle(size, precision)
    with Policy.load(path, backend="onnxruntime", device="cpu") as cpu, \
            Policy.load(path, backend="onnxruntime", device="cuda") as gpu:
        assert gpu.backend.on_device and gpu.backend.graphed, gpu.backend.graph_fallback
        want, got = [], []
        for seed, steps in ((0, 10), (1, 10), (2, 3)):  # replays of the captured graphs, then another step count
            obs = observation(cpu.manifest, seed)
            want.append(cpu.act(obs, steps=steps).actions)
            got.append(gpu.act(obs, steps=steps).actions)
        assert gpu.backend.graph_fallback is None, gpu.backend.graph_fallback
        assert gpu.backend.denoiser.get_providers()[0] == "CUDAExecutionProvider"
        if precision == "fp32":
            np.testing.assert_allclose(np.stack(got), np.stack(want), rtol=0, atol=FP32_ATOL)
        else:
            assert gate_errors(gpu.manifest, np.stack(want), np.stack(got)) == []


# -- batched bundles on every backend at hand ---------------------------------------------------------------------
@pytest.mark.parametrize("backend", ("torch", "onnxruntime", "tensorrt"))
def test_batched_bundle_on_the_gpu_matches_one_by_one(bundle, backend: str) -> None:
    """act_batch of three observations (a batch of 3: ONNX Runtime and torch run it as is, TensorRT pads it to its
    profile of 4) equals each observation's own chunk on the CPU within the bundle's batch tolerance."""
    need({"torch": torch_cuda_missing, "onnxruntime": ort_cuda_missing, "tensorrt": tensorrt_missing}[backend]())
    from runtime.policy import Policy

    path = (bundle.engines if backend == "tensorrt" else bundle)("tiny", "fp32", (1, 2, 4))
    options = {"checkpoint": bundle.checkpoint("tiny")} if backend == "torch" else {}
    with Policy.load(path, backend="onnxruntime", device="cpu") as cpu, \
            Policy.load(path, backend=backend, device="cuda", **options) as gpu:
        observations = [observation(cpu.manifest, seed) for seed in range(3)]
        want = np.stack([cpu.act(obs).actions for obs in observations])
        got = np.stack([chunk.actions for chunk in gpu.act_batch(observations)])
        tolerance = float(cpu.manifest.raw["parity"]["batch"].get("tolerance", FP32_ATOL))
        np.testing.assert_allclose(got, want, rtol=0, atol=max(tolerance, FP32_ATOL))


# -- the accuracy gate on the GPU ---------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ("onnxruntime", "tensorrt"))
def test_accuracy_gate_passes_the_fp16_bundle_on_the_gpu(bundle, backend: str) -> None:
    """``calibrate check`` of the fp16 bundle on its GPU backend against the fp32 bundle on the CPU."""
    need(ort_cuda_missing() if backend == "onnxruntime" else tensorrt_missing())
    from calibration.capture import synthetic
    from calibration.check import run_gate
    from runtime.manifest import Manifest

    path = (bundle.engines if backend == "tensorrt" else bundle)("small", "fp16")
    report = run_gate(path, synthetic(Manifest.load(path), 8), reference_bundle=bundle("small", "fp32"),
                      backend=backend, device="cuda")
    assert report.backend == f"{backend}-cuda"
    assert report.passed, report.to_dict()
