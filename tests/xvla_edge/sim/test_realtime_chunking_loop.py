"""Real-time chunking closed loop, in virtual time (:func:`xvla_edge.sim.evaluate.run_scene`): at 0.4 s of inference
latency, with a policy whose successive chunks disagree (each heads for a new goal), chunks computed to continue the
executing one hand over with a far smaller seam than chunks switched to (``replace``), and the daemon's prefix
carries what the arm executes.

The policy is a test double of the contract (:meth:`runtime.policy.Policy.act` with ``prefix=``): a smooth plan
towards a new goal at :data:`SPEED` from where it starts (from rest at the observed position: an observation has
no velocity); given a prefix it starts where the prefix's frozen rows (weight 1) end, at their time and velocity,
and mixes the prefix in row by row as the sampler does (``w * prefix + (1 - w) * own``): what a network steered by
inpainting produces, a continuation of the prefix. So the seams measure the daemon's side: the
rows, times and delay it freezes. The same with the trained model: ``tests/xvla_edge/sim/test_trained_policy.py``
and the benchmark ``benchmarks/test_realtime_chunking.py``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import numpy as np

from runtime.decode import chunk_timestamps, decode_arms
from runtime.types import ActionChunk, Observation
from xvla.realtime_chunking import Prefix
from xvla_edge.sim.evaluate import episode_spec, run_scene, sim_config

SPEED = 0.15  # m/s
TURN_S = 0.3  # the plan turns from its first velocity to the goal's over this long
ACTION = {"mode": "ee6d", "arms": 1, "dim": 20, "chunk_length": 30, "chunk_seconds": 1.0, "rot6d_layout": "rows"}


class GoalHopper:
    """Each chunk: towards a new random goal above the table at :data:`SPEED`, turning smoothly from the velocity it
    starts with (module docstring)."""

    def __init__(self, seed: int) -> None:
        self.manifest = SimpleNamespace(action=ACTION, inputs={"proprio_dim": 20, "views": 2})
        self.chunk_shape = (1, 30, 20)
        self.rng = np.random.default_rng(seed)
        self.prefixes: list[Prefix] = []

    def act(self, obs: Observation, *, steps: Optional[int] = None, prefix: Optional[Prefix] = None) -> ActionChunk:
        times = chunk_timestamps(obs.timestamp, 1.0, 30)
        goal = np.array([self.rng.uniform(0.30, 0.50), self.rng.uniform(-0.12, 0.12), self.rng.uniform(0.12, 0.25)])
        start, t0, v0 = np.asarray(obs.proprio[:3], float), obs.timestamp, np.zeros(3)  # an observation has no speed
        rows = np.zeros((30, 20))
        rows[:, 3:9], rows[:, 9] = obs.proprio[3:9], 4.0  # the grasp orientation held; the gripper open (a logit)
        if prefix is not None:
            self.prefixes.append(prefix)
            held, weights = prefix.padded(30)
            frozen = int(np.count_nonzero(weights >= 1.0))
            if frozen >= 2:  # continue from where and how fast the frozen rows end
                start, t0 = held[frozen - 1, :3].astype(float), times[frozen - 1]
                v0 = (held[frozen - 1, :3] - held[frozen - 2, :3]) / (times[frozen - 1] - times[frozen - 2])
        v1 = SPEED * (goal - start) / max(np.linalg.norm(goal - start), 1e-9)
        fine = np.linspace(0.0, 1.0, 1001)  # integrate v0 -> v1 over TURN_S (smoothstep) on a 1 ms grid
        s = np.clip(fine / TURN_S, 0.0, 1.0)
        path = start + np.cumsum((v0 + (v1 - v0) * (s * s * (3 - 2 * s))[:, None]) * 1e-3, axis=0) - v0 * 1e-3
        rows[:, :3] = path[np.clip(np.round((times - t0) * 1e3).astype(int), 0, 1000)]
        if prefix is not None:
            rows = weights[:, None] * held + (1 - weights[:, None]) * rows
        out = rows.astype(np.float32)
        out[:, 9] = 1 / (1 + np.exp(-out[:, 9]))  # the output transform
        return ActionChunk(out, times, decode_arms(out, ACTION), obs.timestamp)


def seams(chunking: str, latency: float) -> tuple[np.ndarray, list[GoalHopper]]:
    loop = sim_config(Path("bundle")).loop_config()  # the sim robot's loop: 200 Hz, chunks smoothed over 9 rows
    values, policies = [], []
    for seed in range(3):
        scene, start = episode_spec(seed, "random")
        policy = GoalHopper(seed)
        result = run_scene(policy, scene, start, loop, seed=seed, latency_s=latency, timeout_s=3.0,  # type: ignore[arg-type]
                           chunking=chunking)
        values += result.seams[1:]  # the first chunk starts the arm from rest, without a prefix, in every mode
        policies.append(policy)
    return np.array(values), policies


def test_rtc_at_0_4_s_hands_over_with_a_fraction_of_replace_s_seam():
    rtc, policies = seams("rtc", 0.4)
    replace, _ = seams("replace", 0.4)
    assert len(rtc) >= 12 and len(replace) >= 12  # a hand-over every 0.5 s
    assert np.percentile(replace, 50) > 0.05, replace  # the plans disagree: switching to a new one jerks
    assert np.percentile(rtc, 99) < 0.25 * np.percentile(replace, 50), (rtc, replace)
    # the daemon froze the rows executed during 0.4 s of latency (12 rows of 33 ms; 13 when a chunk arrived a tick
    # later, at 0.405 s) and guided the overlap (half a chunk: 15 rows, 14 when inference started a tick late; up to
    # 18 for the first chunk, which the splice postponed to start from rest within the speed limits)
    prefixes = [p for policy in policies for p in policy.prefixes]
    assert prefixes and all(int(np.count_nonzero(p.weights == 1.0)) in (12, 13) for p in prefixes)
    assert all(14 <= len(p.weights) <= 18 for p in prefixes)
    assert sum(len(p.weights) in (14, 15) for p in prefixes) >= len(prefixes) - len(policies)


def test_with_a_real_bundle_the_frozen_rows_come_back_exactly(tiny_batch_bundle):
    """The whole chain with an exported bundle (the tiny random model, two views, ONNX Runtime) at 0.4 s: the daemon's
    prefix from the loop's executing trajectory, the mix inside the denoise graph, the decoding and the arm's
    trajectory again: every chunk after the first holds the executing commands over its frozen rows (a float32
    round trip), and its time stamps are the rows the prefix was sampled at."""
    from runtime.policy import Policy
    from xvla_edge.daemon.bridge import chunk_to_trajectory, trajectory_to_rows

    policy = Policy.load(tiny_batch_bundle, backend="onnxruntime")
    seen = []
    act = policy.act

    def spy(obs, **options):
        chunk = act(obs, **options)
        seen.append((options.get("prefix"), chunk))
        return chunk

    policy.act = spy  # type: ignore[method-assign]
    scene, start = episode_spec(0, "random")
    loop = sim_config(Path("bundle")).loop_config()
    run_scene(policy, scene, start, loop, seed=0, latency_s=0.4, timeout_s=2.0, chunking="rtc")  # type: ignore[arg-type]
    policy.close()
    assert seen[0][0] is None and len(seen) >= 3
    for prefix, chunk in seen[1:]:
        frozen = int(np.count_nonzero(prefix.weights == 1.0))
        assert frozen in (12, 13)
        rows = trajectory_to_rows(chunk_to_trajectory(chunk), policy.manifest.action)
        np.testing.assert_allclose(rows[:frozen, :9], prefix.rows[:frozen, :9], atol=2e-5, rtol=0)
        np.testing.assert_allclose(rows[:frozen, 9], prefix.rows[:frozen, 9], atol=2e-3, rtol=0)  # a logit
