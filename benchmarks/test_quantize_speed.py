"""INT8 against fp32 on the CPU: ``Policy.act`` of a quantized bundle next to the fp32 bundle it was made from.

Not part of the test suite. Run::

    .venv/bin/python -m pytest benchmarks/test_quantize_speed.py --benchmark-json=quantize.json
    XVLA_BENCH_SIZES=small .venv/bin/python -m pytest benchmarks/test_quantize_speed.py

Per size (``XVLA_BENCH_SIZES``, default tiny and small): the cached fp32 bundle of the latency suites, a
synthetic calibration set of 32 observations beside it, and the INT8 bundle ``xvla-edge quantize`` makes from
them (kept in the cache; it passed its gate or the case is skipped). Both bundles run the same observation with
the same noise and ``XVLA_BENCH_STEPS`` steps; ``extra_info`` holds the size, precision, steps and, for INT8,
the blocks kept in fp32. Compare the two medians of one run: the machine may be shared.
"""

from __future__ import annotations

import json

import pytest

from benchmarks import harness
from calibration.sets import load_set
from runtime.policy import Policy

ROUNDS = {"tiny": 30, "small": 8, "full": 2}
SET_SIZE = 32


def int8_bundle(size: str):
    """(fp32 bundle, INT8 bundle, set) of a size, built on first use."""
    fp32 = harness.bundle(size, "fp32")
    root = harness.cache_dir() / size
    calib, int8 = root / "calibration-set", root / "bundle-int8"
    try:
        if not (calib / "calibration.json").is_file():
            harness._xvla_edge("calibrate", "capture", "--synthetic", str(SET_SIZE), "--bundle", str(fp32),
                               "--out", str(calib), "--force")
        if not (int8 / "manifest.json").is_file():
            harness._xvla_edge("quantize", str(fp32), "--set", str(calib), "--out", str(int8), "--force",
                               "--speed-observations", "0")
    except harness.BuildError as e:
        pytest.skip(str(e))
    return fp32, int8, calib


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("size", harness.selected_sizes())
def test_act(benchmark, size: str, precision: str) -> None:
    fp32, int8, calib = int8_bundle(size)
    bundle = int8 if precision == "int8" else fp32
    steps = harness.steps()
    cset = load_set(calib)
    with Policy.load(bundle, "onnxruntime", "cpu", threads=harness.threads()) as policy:
        action = policy.manifest.action
        obs = cset.observation(0, (int(action["chunk_length"]), int(action["dim"])))
        policy.act(obs, steps=steps)
        benchmark.extra_info.update(size=size, precision=precision, steps=steps, threads=harness.threads())
        if precision == "int8":
            quantization = json.loads((int8 / "manifest.json").read_text())["quantization"]
            benchmark.extra_info["excluded_blocks"] = quantization["excluded_blocks"]
        benchmark.pedantic(policy.act, args=(obs,), kwargs={"steps": steps}, rounds=ROUNDS[size], warmup_rounds=1)
