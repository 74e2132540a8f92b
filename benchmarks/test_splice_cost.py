"""What a splice costs the control loop: one new 30-waypoint chunk taken over between two ticks.

Not part of the test suite. Run::

    .venv/bin/python -m pytest benchmarks/test_splice_cost.py \
        --benchmark-json=benchmarks/results/<machine>/splice-cost.json

The loop process splices (and builds the sampler of the result) between two ticks, so the floor is the
control period: 5 ms at 200 Hz, 2 ms at 500 Hz; a splice that takes most of it delays the next tick. Each
case is one policy of ``[splice]``: ``replace`` / ``blend``, raw or smoothed over 9 waypoints (the sim task's
setting is blend + 9), and the costliest blend robot.toml allows (a 1 s window in 5 ms steps:
``MAX_BLEND_SAMPLES``). ``extra_info`` carries the median as a share of the 200 Hz period.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy

from drivers.arm import Target
from drivers.control.interpolation import TrajectorySampler
from drivers.control.safety import SafetyLimits
from drivers.control.splice import POLICY_RANGES, SplicePolicy, splice
from drivers.control.trajectory import Trajectory

PERIOD_200HZ_S = 0.005
IDENTITY = [0.0, 0.0, 0.0, 1.0]


def _chunk(t_obs: float) -> Trajectory:
    rng = np.random.default_rng(0)
    position = np.linspace([0.30, 0.0, 0.2], [0.40, 0.05, 0.15], 31)[1:] + rng.normal(0, 0.001, (30, 3))
    return Trajectory.from_chunk(t_obs, 1.0, position=position, rotation=np.tile(IDENTITY, (30, 1)),
                                 gripper=np.linspace(1.0, 0.0, 30))


LONGEST_BLEND = {"blend_window_s": POLICY_RANGES["blend_window_s"][1], "blend_step_s": POLICY_RANGES["blend_step_s"][0]}


@pytest.mark.parametrize("mode, window, blend", [("replace", 0, {}), ("replace", 9, {}), ("blend", 0, {}),
                                                 ("blend", 9, {}), ("blend", 9, LONGEST_BLEND)])
def test_splice_cost(benchmark, mode, window, blend):
    current = TrajectorySampler(_chunk(0.0), gripper="linear")
    command = Target.ee([[0.335, 0.01, 0.19]], [IDENTITY], [0.9])
    new, policy, limits = _chunk(0.4), SplicePolicy(mode=mode, smooth_window=window, **blend), SafetyLimits()

    def take_over() -> TrajectorySampler:
        result = splice(new, now=0.5, obs_timestamp=0.4, command=command, current=current, limits=limits,
                        policy=policy)
        return TrajectorySampler(result.trajectory, gripper="linear")

    sampler = benchmark(take_over)
    median = benchmark.stats.stats.median
    samples = policy.blend_samples if mode == "blend" else 0
    benchmark.extra_info.update(  # the machine itself is in the JSON's machine_info
        mode=mode, smooth_window=window, blend_samples=samples, floor_s=PERIOD_200HZ_S,
        share_of_200hz_period=round(median / PERIOD_200HZ_S, 3), numpy=np.__version__, scipy=scipy.__version__)
    print(f"\n{mode} (smooth {window}, {samples} blend samples): median {median * 1e3:.2f} ms = "
          f"{median / PERIOD_200HZ_S:.0%} of the 200 Hz period (floor {PERIOD_200HZ_S * 1e3:.0f} ms)")
    assert sampler.trajectory.start == pytest.approx(0.5)
