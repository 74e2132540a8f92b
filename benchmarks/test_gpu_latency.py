"""X-VLA on a CUDA GPU: a chunk and one denoising step of every GPU variant, next to that GPU's floor, and the
variants side by side. Run by ``make gpu-check`` (tools/gpu_check.py); by hand::

    XVLA_BENCH_SIZES=tiny,small XVLA_GPU_BENCH_INFO=gpu.json \\
        python -m pytest benchmarks/test_gpu_latency.py --benchmark-json=out.json

Variants ``<backend>-<mode>-<precision>``: torch (the checkpoint on the GPU; eager, or the whole loop as one CUDA
graph per step count), onnxruntime (the CUDA provider with device buffers; without or with CUDA graphs) and
tensorrt (the bundle's engines, built here; each step's enqueue direct or replayed as a CUDA graph), in fp32 and
fp16 (torch also bf16). ``XVLA_GPU_BENCH_VARIANTS`` (comma-separated) selects some; a variant whose library or
engines are missing is skipped with the reason. Every case times with pytest-benchmark and records its floor:
max(FLOPs / the GPU's measured matmul rate at the variant's precision, weight bytes / its measured copy bandwidth)
(:func:`benchmarks.floor.measure_cuda`). ``test_side_by_side`` runs every variant of a size round by round
(A B A B ..., same inputs) and reports, for each pair differing in one thing only (mode, precision or backend),
the median of the per-round ratios with its min–max (:mod:`benchmarks.interleave`). The GPU's details, floors and
those ratios go to the JSON file ``XVLA_GPU_BENCH_INFO`` names. A chunk that differs from the eager fp32 chunk of
torch beyond its precision's tolerance fails its case.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from benchmarks import floor, harness, interleave

pytestmark = pytest.mark.gpu

BACKENDS = ("torch", "onnxruntime", "tensorrt")  # a ratio's denominator comes first in each of these orders
MODES = ("eager", "graph")
PRECISIONS = ("fp32", "fp16", "bf16")
VARIANTS = ("torch-eager-fp32", "torch-graph-fp32", "torch-eager-fp16", "torch-graph-fp16", "torch-graph-bf16",
            "onnxruntime-eager-fp32", "onnxruntime-graph-fp32", "onnxruntime-graph-fp16",
            "tensorrt-eager-fp16", "tensorrt-graph-fp32", "tensorrt-graph-fp16")
REFERENCE = "torch-eager-fp32"
ROUNDS = {"tiny": {"step": (100, 10), "chunk": (50, 5)}, "small": {"step": (50, 5), "chunk": (30, 3)},
          "full": {"step": (10, 2), "chunk": (5, 1)}}
AGREEMENT = {"fp32": 1e-3, "fp16": 5e-2, "bf16": 1e-1}  # max |Δaction| against the torch eager fp32 chunk

INFO: dict[str, Any] = {"device": {}, "floors": {}, "side_by_side": []}
CHUNKS: dict[tuple[str, str], np.ndarray] = {}


def selected_variants() -> list[str]:
    return harness.selected("XVLA_GPU_BENCH_VARIANTS", VARIANTS, VARIANTS, "variants")


def missing() -> str | None:
    """Why this suite cannot run here (None: it can)."""
    try:
        import torch
    except ImportError:
        return "needs torch with CUDA"
    return None if torch.cuda.is_available() else f"needs a CUDA device (torch {torch.__version__} sees none)"


@dataclass
class GpuCase:
    size: str
    variant: str
    runner: harness.OursRunner
    encoder: floor.Work
    step: floor.Work


def gpu_machine(precision: str) -> floor.Machine:
    """The GPU's measured roofline at ``precision`` (bf16 and fp16 share the tensor-core rate), once a session."""
    key = "fp32" if precision == "fp32" else "fp16"
    if key not in INFO["floors"]:
        import torch

        m = floor.measure_cuda(key)
        INFO["floors"][key] = {"tflops": m.flops_per_s / 1e12, "gbps": m.bytes_per_s / 1e9, "method": m.source}
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        INFO["device"] = {"name": props.name, "compute_capability": f"{props.major}.{props.minor}",
                          "sms": props.multi_processor_count, "memory_gib": props.total_memory / 2**30,
                          "torch": torch.__version__, "torch_cuda": torch.version.cuda}
    f = INFO["floors"][key]
    return floor.Machine("this GPU (measured)", f["tflops"] * 1e12, f["gbps"] * 1e9, f["method"], key)


LOADED: dict[tuple[str, str], GpuCase] = {}


def load_case(size: str, variant: str) -> GpuCase:
    """A loaded variant of a size with its inputs bound (one size's variants kept loaded at a time)."""
    from xvla.config import load_config
    from xvla.sizes import size_config

    need = missing()
    if need:
        pytest.skip(need)
    if (size, variant) in LOADED:
        return LOADED[(size, variant)]
    for key in [k for k in LOADED if k[0] != size]:
        LOADED.pop(key).runner.close()
    backend, mode, precision = variant.split("-")
    if backend == "tensorrt":
        import importlib.util

        if importlib.util.find_spec("tensorrt") is None:
            pytest.skip("needs TensorRT (`import tensorrt`)")
    try:
        runner = harness.OursRunner(size, f"{backend}-{precision}", "cuda", cuda_graph=mode == "graph")
    except harness.BuildError as e:
        pytest.skip(str(e))
    cfg, image_size = load_config(harness.checkpoint(size)), size_config(size)[1]
    shapes = floor.Shapes.from_manifest(runner.manifest)
    shapes = floor.Shapes(shapes.image_size, shapes.views, shapes.text_tokens, precision)
    runner.prepare(harness.Inputs.make(cfg, image_size, views=shapes.views))
    LOADED[(size, variant)] = GpuCase(size, variant, runner, floor.encoder_work(cfg, shapes),
                                      floor.step_work(cfg, shapes))
    return LOADED[(size, variant)]


@pytest.fixture(scope="session", autouse=True)
def _session():
    yield
    while LOADED:
        LOADED.popitem()[1].runner.close()
    if os.environ.get("XVLA_GPU_BENCH_INFO"):
        Path(os.environ["XVLA_GPU_BENCH_INFO"]).write_text(json.dumps(INFO, indent=2))


@pytest.fixture(scope="session", params=[(s, v) for s in harness.selected_sizes() for v in selected_variants()],
                ids=lambda p: f"{p[0]}-{p[1]}")
def case(request: pytest.FixtureRequest) -> GpuCase:
    return load_case(*request.param)


def measure(benchmark, case: GpuCase, stage: str, fn: Callable[[], object]) -> None:
    rounds, warmup = ROUNDS[case.size][stage]
    if os.environ.get("XVLA_BENCH_ROUNDS"):
        rounds = int(os.environ["XVLA_BENCH_ROUNDS"])
    benchmark.group = f"{stage}-{case.size}"
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup, iterations=1)  # every call ends in a host sync
    machine = gpu_machine(case.variant.rsplit("-", 1)[1])
    steps = harness.steps()
    floor_s = floor.stage_floor(machine, case.encoder, case.step, stage, steps)
    n_enc, n_step = floor.stage_calls(stage, steps)
    work = case.encoder * n_enc + case.step * n_step
    benchmark.extra_info.update({"stage": stage, "size": case.size, "variant": case.variant, "steps": n_step,
                                 "flops": work.flops, "weight_bytes": work.weight_bytes, "floor_s": floor_s,
                                 "machine_tflops": machine.flops_per_s / 1e12,
                                 "machine_gbps": machine.bytes_per_s / 1e9})


def test_step(benchmark, case: GpuCase) -> None:
    """One denoising step (``denoise`` of 1 step: copies in, the step, the action back)."""
    measure(benchmark, case, "step", case.runner.step)


def test_chunk(benchmark, case: GpuCase) -> None:
    """The encoder and the whole N-step loop (the action back on the host)."""
    measure(benchmark, case, "chunk", lambda: case.runner.chunk(harness.steps()))
    actions = case.runner.actions()
    CHUNKS[(case.size, case.variant)] = actions
    reference = CHUNKS.get((case.size, REFERENCE))
    assert np.isfinite(actions).all(), f"{case.variant}: non-finite actions"
    if reference is not None:
        diff = float(np.max(np.abs(actions - reference)))
        benchmark.extra_info["max_abs_diff_vs_reference"] = diff
        limit = AGREEMENT[case.variant.rsplit("-", 1)[1]]
        assert diff <= limit, f"{case.variant} differs from {REFERENCE} by {diff:.2e} (at most {limit:g})"


def pairs(variants: list[str]) -> list[tuple[str, str]]:
    """(numerator, denominator) for every two variants that differ in exactly one of backend, mode and precision;
    the denominator is the earlier in that part's order (eager before graph, fp32 before fp16, torch first)."""
    orders = (BACKENDS, MODES, PRECISIONS)
    out = []
    for a in variants:
        for b in variants:
            pa, pb = a.split("-"), b.split("-")
            differ = [i for i in range(3) if pa[i] != pb[i]]
            if len(differ) == 1 and orders[differ[0]].index(pa[differ[0]]) > orders[differ[0]].index(pb[differ[0]]):
                out.append((a, b))
    return out


@pytest.mark.parametrize("stage", ("step", "chunk"))
@pytest.mark.parametrize("size", harness.selected_sizes())
def test_side_by_side(size: str, stage: str) -> None:
    cases = {}
    for variant in selected_variants():
        try:
            cases[variant] = load_case(size, variant)
        except pytest.skip.Exception:
            continue
    if len(cases) < 2:
        pytest.skip(f"fewer than two GPU variants run at {size}")
    steps = harness.steps()
    calls = {v: (c.runner.step if stage == "step" else (lambda r=c.runner: r.chunk(steps))) for v, c in cases.items()}
    rounds, warmup = ROUNDS[size][stage]
    if os.environ.get("XVLA_BENCH_ROUNDS"):
        rounds = int(os.environ["XVLA_BENCH_ROUNDS"])
    times = interleave.interleaved(calls, rounds, warmup)
    INFO["side_by_side"].append({"size": size, "stage": stage, "order": list(calls), "rounds": rounds,
                                 "median_s": {v: statistics.median(t) for v, t in times.items()},
                                 "ratios": [interleave.ratio(times, a, b).to_dict() for a, b in pairs(list(calls))]})
