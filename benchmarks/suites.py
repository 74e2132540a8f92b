"""Running the latency suite (:mod:`benchmarks.test_xvla_latency`) under pytest-benchmark in a child process.

The suite is found in this package, so an installed ``xvla-edge`` runs it as a source checkout does. The child
runs in the current directory: the suite's cache defaults to ``./benchmarks/.cache`` there, and pytest-benchmark
records the commit of the git checkout there, if any.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SUITE = Path(__file__).resolve().parent / "test_xvla_latency.py"
BUNDLE_SUITE = Path(__file__).resolve().parent / "test_bundle_latency.py"


def suite_environment(sizes: Sequence[str], backends: Sequence[str] | None = None, steps: int = 10,
                      rounds: int | None = None, threads: int | None = None,
                      official: tuple[str, str] | None = None) -> dict[str, str]:
    """The environment that selects the suite's cases (the ``XVLA_BENCH_*`` variables of the suite).

    ``backends`` None: all; ``rounds`` None: per size and stage; ``threads`` None: one per core (otherwise also
    the BLAS/OpenMP threads); ``official``: (official source directory, its python).
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "XVLA_BENCH_SIZES": ",".join(sizes), "XVLA_BENCH_STEPS": str(steps)}
    if backends:
        env["XVLA_BENCH_BACKENDS"] = ",".join(dict.fromkeys(backends))
    if rounds:
        env["XVLA_BENCH_ROUNDS"] = str(rounds)
    if threads:
        env.update({v: str(threads) for v in ("XVLA_BENCH_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                              "MKL_NUM_THREADS")})
    if official:
        src, python = official
        env.update(XVLA_OFFICIAL_SRC=str(Path(src).resolve()), XVLA_OFFICIAL_PYTHON=python)
    return env


def bundle_environment(bundle: Path, backend: str = "auto", device: str = "cpu", steps: int = 10,
                       rounds: int | None = None, threads: int | None = None) -> dict[str, str]:
    """The environment of the bundle suite (:mod:`benchmarks.test_bundle_latency`) for one bundle."""
    env = suite_environment([], None, steps, rounds, threads)
    del env["XVLA_BENCH_SIZES"]
    env.update(XVLA_BENCH_BUNDLE=str(Path(bundle).resolve()), XVLA_BENCH_BUNDLE_BACKEND=backend,
               XVLA_BENCH_DEVICE=device)
    return env


def run_latency_suite(env: dict[str, str], suite: Path = SUITE) -> tuple[dict[str, Any] | None, int]:
    """Run ``suite`` with ``env`` (:func:`suite_environment` / :func:`bundle_environment`); (pytest-benchmark's
    JSON or None, pytest's status)."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "benchmark.json"
        rc = subprocess.call([sys.executable, "-m", "pytest", str(suite), "-p", "no:cacheprovider", "-q", "-rs",
                              f"--benchmark-json={raw}"], env=env)
        return (json.loads(raw.read_text()) if raw.is_file() else None), rc
