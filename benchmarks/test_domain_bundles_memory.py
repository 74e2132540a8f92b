"""Memory of one server bundle (``xvla-edge export --domains``) against the robots' bundles of the same domains,
one per domain: files on disk, and the resident memory of a process that loaded them and ran a chunk for each
domain.

Not part of the test suite. Run::

    XVLA_BENCH_SIZES=tiny,small .venv/bin/python -m pytest benchmarks/test_domain_bundles_memory.py -s \
        --benchmark-json=benchmarks/results/<machine>/domain-bundles-memory.json

Per size, the domains of :data:`DOMAINS` (``all``: every domain of the checkpoint; a list at the larger sizes,
where one robot's bundle per domain would take minutes each to export and GBs of disk), the cached random-weight
checkpoint of :mod:`benchmarks.harness`, fp32, three views. The server bundle of those domains and one robot's
bundle per domain are exported once into ``XVLA_BENCH_CACHE``. Then, in a fresh interpreter each, the server
bundle is loaded with ``Policy.load`` (ONNX Runtime on the CPU) and runs ``Policy.act`` once per domain, and the
robots' bundles are all loaded in one interpreter and each runs ``Policy.act`` once: as ``xvla-edge serve`` holds
them. Reported: bytes on disk (every file of the bundles), ``VmRSS`` after the chunks, ``VmHWM`` (the peak) and the
interpreter's RSS before loading (numpy, onnxruntime and the package imported). Memory figures hold on a shared
machine; the times pytest-benchmark records do not.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.harness import _xvla_edge, cache_dir, checkpoint, selected_sizes
from xvla.config import load_config

DOMAINS: dict[str, str | tuple[int, ...]] = {"tiny": "all", "small": (0, 3, 6, 17), "full": (0, 3)}
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
policies = [Policy.load(path, backend="onnxruntime") for path in sys.argv[1:]]
rng = np.random.default_rng(0)
for policy in policies:
    images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(policy.views)]
    for domain in policy.manifest.domain_ids:
        obs = Observation(images=images, instruction="pick up the red block",
                          proprio=np.zeros(policy.state_dim, np.float32))
        policy.act(obs, domain_id=domain)
print(json.dumps({"baseline": baseline, "rss": status("VmRSS"), "peak": status("VmHWM")}))
"""


def domain_ids(size: str) -> list[int]:
    listed = DOMAINS[size]
    return list(range(load_config(checkpoint(size)).num_domains)) if listed == "all" else list(listed)


def exported(size: str, name: str, *args: str) -> Path:
    """The cached fp32 bundle ``name`` of a size, exported with ``args`` on first use."""
    path = cache_dir() / size / name
    if not (path / "manifest.json").is_file():
        _xvla_edge("export", str(checkpoint(size)), *args, "--out", str(path), "--force")
    return path


def disk_bytes(paths: list[Path]) -> int:
    return sum(f.stat().st_size for path in paths for f in path.iterdir() if f.is_file())


def resident(paths: list[Path]) -> dict[str, int]:
    proc = subprocess.run([sys.executable, "-c", CHILD, *map(str, paths)], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("size", selected_sizes())
def test_domain_bundles_memory(benchmark, size):
    ids = domain_ids(size)
    listed = "all" if DOMAINS[size] == "all" else ",".join(map(str, ids))
    server = [exported(size, f"server-{listed.replace(',', '-')}", "--domains", listed)]
    robots = [exported(size, f"bundle-fp32-d{d}", "--domain-id", str(d)) for d in ids]
    measured: dict[str, dict[str, int]] = {}

    def run() -> None:
        measured["server"] = resident(server)
        measured["robots"] = resident(robots)

    benchmark.pedantic(run, rounds=1, iterations=1)
    disk = {"server": disk_bytes(server), "robots": disk_bytes(robots)}
    for kind in ("server", "robots"):
        benchmark.extra_info.update({f"{kind}_disk_bytes": disk[kind], f"{kind}_rss_bytes": measured[kind]["rss"],
                                     f"{kind}_peak_bytes": measured[kind]["peak"],
                                     f"{kind}_baseline_bytes": measured[kind]["baseline"]})
    benchmark.extra_info.update(size=size, domains=len(ids), domain_ids=ids)
    mib = 2 ** 20
    print(f"\n{size}, {len(ids)} domains: disk {disk['server'] / mib:.1f} MiB (server bundle) against "
          f"{disk['robots'] / mib:.1f} MiB ({len(ids)} robots' bundles); RSS {measured['server']['rss'] / mib:.0f} "
          f"against {measured['robots']['rss'] / mib:.0f} MiB (before loading "
          f"{measured['server']['baseline'] / mib:.0f} and {measured['robots']['baseline'] / mib:.0f} MiB; peaks {measured['server']['peak'] / mib:.0f} and "
          f"{measured['robots']['peak'] / mib:.0f} MiB)")
    assert measured["server"]["rss"] > measured["server"]["baseline"]
