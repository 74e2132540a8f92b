"""What real-time chunking's prefix inputs cost a denoise step: the graph with the mix (zero weights, as a chunk
without a prefix runs it) against the same checkpoint's graph exported without the inputs
(``ExportOptions(prefix_inputs=False)``, the graph of bundles made before real-time chunking). Target: at most
2 % more per step (issue 36).

Not part of the test suite. Run::

    XVLA_BENCH_SIZES=tiny,small .venv/bin/python -m pytest benchmarks/test_prefix_cost.py -s \
        --benchmark-json=benchmarks/results/<machine>/prefix-cost.json

Per size: the cached random-weight checkpoint of :mod:`benchmarks.harness`, two fp32 bundles (domain 0, three
views) exported once into ``XVLA_BENCH_CACHE``, both loaded in this process on ONNX Runtime (CPU,
``XVLA_BENCH_THREADS`` threads) with the same observation encoded. Then :data:`ROUNDS` interleaved rounds, A B A
B: in each, one side's ``backend.denoise(x1, proprio, 1)`` (one step, through the backend's bound buffers) timed
:data:`CALLS` times, then the other's; a round's ratio is the median step with the mix over the median without.
Reported: the median of the per-round ratios and their min–max spread, each side's median step, the CPU.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.harness import cache_dir, checkpoint, selected_sizes, threads
from benchmarks.machine import cpu_model

ROUNDS = int(os.environ.get("XVLA_BENCH_ROUNDS") or 15)
CALLS = {"tiny": 100, "small": 20, "full": 3}  # timed steps per side and round
TARGET = 1.02  # issue 36: the extra inputs add at most 2 % to a denoise step


def exported(size: str, prefix: bool) -> Path:
    """The cached fp32 bundle of a size with (or without) the prefix inputs, exported on first use."""
    from export.bundle import ExportOptions, export_bundle

    path = cache_dir() / size / ("bundle-fp32-prefix" if prefix else "bundle-fp32-no-prefix")
    if not (path / "manifest.json").is_file():
        export_bundle(checkpoint(size), path, ExportOptions(domain_id=0, prefix_inputs=prefix, force=True),
                      progress=lambda line: None)
    return path


def median_step(policy, x1: np.ndarray, proprio: np.ndarray, calls: int) -> float:
    """The median time of one denoise step over ``calls`` steps (the context encoded before)."""
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        policy.backend.denoise(x1, proprio, 1)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@pytest.mark.parametrize("size", selected_sizes())
def test_prefix_inputs_cost_per_denoise_step(benchmark, size):
    from runtime.policy import Policy
    from runtime.types import Observation

    policies = {"mix": Policy.load(exported(size, True), backend="onnxruntime", threads=threads()),
                "none": Policy.load(exported(size, False), backend="onnxruntime", threads=threads())}
    assert policies["mix"].manifest.supports_prefix and not policies["none"].manifest.supports_prefix
    rng = np.random.default_rng(0)
    first = policies["mix"]
    obs = Observation(images=[rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(first.views)],
                      instruction="pick up the red block", proprio=np.zeros(first.state_dim, np.float32),
                      noise=rng.standard_normal(first.chunk_shape[1:], dtype=np.float32))
    inputs = {}
    for name, policy in policies.items():
        pixels, mask, ids, proprio, x1 = inputs[name] = policy.preprocess(obs)
        policy.backend.encode(pixels, mask, ids)
        policy.backend.denoise(x1, proprio, 1)  # warm-up
    assert np.array_equal(policies["mix"].backend.denoise(inputs["mix"][4], inputs["mix"][3], 4),
                          policies["none"].backend.denoise(inputs["none"][4], inputs["none"][3], 4))
    calls = CALLS[size]
    medians: dict[str, list[float]] = {"mix": [], "none": []}

    def rounds() -> None:
        for _ in range(ROUNDS):
            for name in ("mix", "none"):  # A B A B ...
                medians[name].append(median_step(policies[name], inputs[name][4], inputs[name][3], calls))

    benchmark.pedantic(rounds, rounds=1, iterations=1)
    ratios = [a / b for a, b in zip(medians["mix"], medians["none"])]
    ratio = statistics.median(ratios)
    benchmark.extra_info.update(
        size=size, cpu=cpu_model(), cores=os.cpu_count(), threads=threads(), rounds=ROUNDS, calls_per_round=calls,
        ratio=ratio, ratio_min=min(ratios), ratio_max=max(ratios), ratios=ratios,
        median_step_with_mix_s=statistics.median(medians["mix"]),
        median_step_without_s=statistics.median(medians["none"]), target=TARGET, loadavg=list(os.getloadavg()))
    print(f"\n{size} on {cpu_model()} ({threads()} threads): step with the mix "
          f"{statistics.median(medians['mix']) * 1e3:.3f} ms, without {statistics.median(medians['none']) * 1e3:.3f} "
          f"ms; ratio {ratio:.4f} (rounds {min(ratios):.4f} ... {max(ratios):.4f}; target <= {TARGET})")
    for policy in policies.values():
        policy.close()
    assert ratio <= TARGET
