"""Command start-up: ``xvla-edge --help`` and ``xvla-edge config check`` in a fresh interpreter.

Not part of the test suite. Run::

    .venv/bin/python -m pytest benchmarks/test_cli_startup.py --benchmark-json=startup.json -s

Each round starts a new ``python -m xvla_edge ...`` process with torch installed in the environment (the
commands must not load it: the suite checks that) and times it to exit. The floor is the same interpreter
starting and exiting with nothing imported (``python -c pass``), measured in the same run; the goal is
≤ 2 s per command on the project's 2-core machines. Figures (median seconds, the floor, the ratio, peak RSS)
go to ``benchmark.extra_info`` and are printed with ``-s``.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "xvla_edge" / "daemon" / "robot.example.toml"
ROUNDS = 7
CASES = {
    "help": ["-m", "xvla_edge", "--help"],
    "config-check": ["-m", "xvla_edge", "config", "check", str(EXAMPLE)],
}


def _run(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, capture_output=True, cwd=REPO)
    return time.perf_counter() - t0


@pytest.fixture(scope="module")
def floor_s() -> float:
    return statistics.median(_run(["-c", "pass"]) for _ in range(ROUNDS))


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_startup(benchmark, case, floor_s):
    benchmark.pedantic(_run, args=(CASES[case],), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    median = benchmark.stats.stats.median
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest child so far
    benchmark.extra_info.update(command=" ".join(["xvla-edge", *CASES[case][2:]]), median_s=median,
                                floor_s=floor_s, ratio=median / floor_s, goal_s=2.0, max_child_rss_mb=rss_mb)
    print(f"\n{case}: median {median:.3f} s, floor (python -c pass) {floor_s:.3f} s, ratio {median / floor_s:.1f}, "
          f"goal 2 s; peak child RSS so far {rss_mb:.0f} MB")
