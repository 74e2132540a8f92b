"""Memory of the runtime process: resident set after steady-state chunks against the bundle's weight bytes.

Not part of the test suite. Run::

    XVLA_BENCH_SIZES=tiny,small,full .venv/bin/python -m pytest benchmarks/test_runtime_memory.py -s \
        --benchmark-json=benchmarks/results/<machine>/runtime-memory.json

For each size, a fresh interpreter loads the cached fp32 bundle with ``Policy.load`` (ONNX Runtime on the
CPU, one intra-op thread per core), runs ``Policy.act`` on three 480×640 camera images five times and reports
``VmRSS`` (steady state, after the chunks) and ``VmHWM`` (the peak) from ``/proc/self/status``, and the same
interpreter's RSS before loading (numpy, onnxruntime and the package imported). The floor is the bundle's
weight bytes (its graph and external-data files); the target (issue 20) is steady-state RSS ≤ 1.15× the
weight bytes at full size.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.harness import bundle, selected_sizes

TARGET_RATIO = 1.15
CHILD = r"""
import json, sys
import numpy as np

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)

from runtime.policy import Policy
from runtime.types import Observation
baseline = status("VmRSS")
policy = Policy.load(sys.argv[1])
rng = np.random.default_rng(0)
images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(policy.manifest.inputs["views"])]
obs = Observation(images=images, instruction="pick up the red block",
                  proprio=np.zeros(policy.manifest.inputs["proprio_dim"], np.float32))
for _ in range(5):
    policy.act(obs)
print(json.dumps({"baseline": baseline, "rss": status("VmRSS"), "peak": status("VmHWM")}))
"""


def _weight_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.suffix in (".onnx", ".data"))


@pytest.mark.parametrize("size", selected_sizes())
def test_runtime_memory(benchmark, size):
    path = bundle(size, "fp32")
    measured: dict = {}

    def run() -> None:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True)
        measured.update(json.loads(proc.stdout.strip().splitlines()[-1]))

    benchmark.pedantic(run, rounds=1, iterations=1)
    weights = _weight_bytes(path)
    ratio = measured["rss"] / weights
    benchmark.extra_info.update(size=size, weight_bytes=weights, rss_bytes=measured["rss"],
                                peak_bytes=measured["peak"], baseline_bytes=measured["baseline"],
                                rss_over_weights=round(ratio, 3), target_ratio=TARGET_RATIO)
    mib = 2 ** 20
    print(f"\n{size}: steady RSS {measured['rss'] / mib:.0f} MiB, peak {measured['peak'] / mib:.0f} MiB, before loading "
          f"{measured['baseline'] / mib:.0f} MiB; weights {weights / mib:.0f} MiB (floor); RSS / weights {ratio:.2f} "
          f"(target {TARGET_RATIO} at full size)")
    assert measured["rss"] > measured["baseline"]
