"""Control-loop timing: tick-interval error at 100/200/500 Hz, with and without a CPU-heavy neighbour.

Not part of the test suite (``pytest tests`` does not collect ``benchmarks/``). Run::

    .venv/bin/python -m pytest benchmarks/test_control_loop_timing.py --benchmark-json=timing.json
    .venv/bin/python -m pytest benchmarks/test_control_loop_timing.py -k "200 and busy" -s

Each case starts the control loop (its own process, SimArm inside) streaming a slow 30-waypoint chunk for
``XVLA_BENCH_SECONDS`` (default 5) s and reads its timing stats. **Interval error** = time since the
previous tick's wake-up minus the period (a skipped deadline counts one period); ``busy`` = wake-up to end
of the tick's work; an overrun is a tick whose work ended after the next deadline. The neighbour is one pure-Python busy process per core (what an inference
process does to the CPU). Figures go to ``benchmark.extra_info`` in microseconds, with the host, Python
and scheduler, and are printed with ``-s``.
"""

from __future__ import annotations

import functools
import os
import platform
import time

import numpy as np
import pytest

from benchmarks.load import CpuHog
from drivers.control.control_loop import LoopConfig
from drivers.control.loop_process import ControlLoopClient
from drivers.emulation.sim_arm import SimArm
from benchmarks.machine import cpu_model
from drivers.control.trajectory import Trajectory

SECONDS = float(os.environ.get("XVLA_BENCH_SECONDS", "5"))



def _measure(rate_hz: int, priority: int) -> dict:
    config = LoopConfig(rate_hz=rate_hz, realtime_priority=priority, stats_window_s=SECONDS + 5)
    with ControlLoopClient(functools.partial(SimArm), config) as client:
        t0 = time.monotonic()
        pos = np.linspace([0.3, 0.0, 0.3], [0.4, 0.1, 0.35], 31)[1:]
        traj = Trajectory.from_chunk(t0, SECONDS + 5, position=pos, rotation=np.tile([0, 0, 0, 1.0], (30, 1)),
                                     gripper=np.ones(30))
        client.submit(traj, t0)
        time.sleep(SECONDS)
        stats = client.stats()
    us = {k: round(v * 1e6, 1) for k, v in stats.timing.items() if k.startswith(("interval_error", "busy"))}
    return {
        **us,
        "ticks": stats.timing["ticks"],
        "overruns": stats.timing["overruns"],
        "missed_deadlines": stats.timing["missed_deadlines"],
        "scheduler": stats.scheduler,
        "mode": stats.mode,
    }


@pytest.mark.parametrize("scheduler", ["fifo", "other"])
@pytest.mark.parametrize("load", ["idle", "busy"])
@pytest.mark.parametrize("rate_hz", [100, 200, 500])
def test_tick_interval_error(benchmark, rate_hz, load, scheduler):
    priority = 80 if scheduler == "fifo" else 0

    def run() -> dict:
        if load == "busy":
            with CpuHog(os.cpu_count() or 1):
                time.sleep(0.5)  # let the neighbour spin up
                return _measure(rate_hz, priority)
        return _measure(rate_hz, priority)

    result = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    benchmark.extra_info.update(
        rate_hz=rate_hz,
        neighbour=f"{os.cpu_count()} busy processes" if load == "busy" else "none",
        seconds=SECONDS,
        host=platform.node(),
        cpu=cpu_model(),
        cores=os.cpu_count(),
        kernel=platform.release(),
        python=platform.python_version(),
        numpy=np.__version__,
    )
    print(f"\n{rate_hz} Hz, {load}, {result['scheduler']}: tick interval error p50/p99/max "
          f"{result['interval_error_p50']}/{result['interval_error_p99']}/{result['interval_error_max']} us, "
          f"busy p50/p99 {result['busy_p50']}/{result['busy_p99']} us, "
          f"overruns {result['overruns']}/{result['ticks']} ticks")
    assert result["ticks"] > 0
