"""Real-time chunking on the daemon's side (:mod:`xvla_edge.daemon.chunking`): the prefix built from a known
executing chunk (the bridge's round trip: network rows → the policy's output → the arm's trajectory → rows again),
the delay from the latency estimate, the horizon from the overlap, and the prefixes that cannot be built, refused
by name."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from drivers.control.interpolation import GripperPolicy
from drivers.control.splice import SplicePolicy
from runtime.types import PrefixUnsupported
from xvla.errors import InputError
from xvla_edge.daemon.bridge import chunk_to_trajectory
from xvla_edge.daemon.chunking import Chunking, PrefixUnavailable, build_prefix, check_supported

from tests.support.action_rows import SQUASHED, T, chunk_of, manifest_action, model_rows

ROW_S = 1.0 / T  # the chunks here: 30 rows over 1 s


def action_of(mode: str, arms: int, layout: str) -> dict:
    return {**manifest_action(mode, arms, layout), "chunk_length": T, "chunk_seconds": 1.0}


def soft_mask(delay: int, horizon: int) -> np.ndarray:
    """The RTC paper's weights written out for a 30-row chunk: 1 before ``delay``, c (e^c - 1) / (e - 1) with
    c = (horizon - i) / (horizon - delay + 1) up to ``horizon``, 0 after."""
    out = []
    for i in range(T):
        c = (horizon - i) / (horizon - delay + 1)
        out.append(1.0 if i < delay else c * (math.exp(c) - 1) / (math.e - 1) if i < horizon else 0.0)
    return np.array(out)


def assert_rows(got: np.ndarray, want: np.ndarray, mode: str) -> None:
    gripper = list(SQUASHED[mode])
    others = [c for c in range(want.shape[1]) if c not in gripper]
    np.testing.assert_allclose(got[:, others], want[:, others], atol=2e-6, rtol=0)
    np.testing.assert_allclose(got[:, gripper], want[:, gripper], atol=2e-4, rtol=0)  # logit of a float32 sigmoid


@pytest.mark.parametrize("mode,arms,layout", [("ee6d", 1, "rows"), ("ee6d", 2, "columns"), ("joint", 1, "rows"),
                                              ("agibot_ee6d", 1, "rows")])
@pytest.mark.parametrize("offset,latency,delay", [(15, 0.25, 8), (10, 0.1, 3), (12, 0.4, 12)])
def test_the_prefix_is_the_executing_chunk_at_the_new_rows(mode, arms, layout, offset, latency, delay):
    """Observed ``offset`` rows into the executing chunk, the new chunk's row i falls on the executing row
    offset + i (a continuous gripper: an open/close one holds each value up to the next row's time, and the two
    chunks' float times differ by an ulp): the prefix is those network rows again, weighted by the soft mask of the delay (the latency in
    rows, rounded up) and the overlap (30 - offset rows)."""
    action = action_of(mode, arms, layout)
    rows = model_rows(mode, arms, layout, seed=offset)
    executing = chunk_to_trajectory(chunk_of(rows, action, obs_time=100.0))
    planned = build_prefix(executing, 100.0 + offset * ROW_S, action, latency, gripper="linear")
    horizon = T - offset
    assert (planned.delay, planned.horizon, planned.latency_s) == (delay, horizon, latency)
    assert planned.prefix.rows.shape == (horizon, action["dim"]) and planned.prefix.rows.dtype == np.float32
    assert_rows(planned.prefix.rows, rows[offset:], mode)
    np.testing.assert_allclose(planned.prefix.weights, soft_mask(delay, horizon)[:horizon], atol=1e-6, rtol=0)


def test_rows_after_the_executing_chunk_hold_its_end():
    """A delay past the executing chunk's end: the arm holds its last command there, and so does the prefix."""
    action = action_of("ee6d", 1, "rows")
    rows = model_rows("ee6d", 1, "rows", seed=3)
    executing = chunk_to_trajectory(chunk_of(rows, action, obs_time=100.0))
    planned = build_prefix(executing, 100.0 + 25 * ROW_S, action, 0.3, gripper="linear")  # 9 rows; 5 inside
    assert (planned.delay, planned.horizon) == (9, 9)
    assert_rows(planned.prefix.rows[:5], rows[25:], "ee6d")
    assert_rows(planned.prefix.rows[5:], np.repeat(rows[-1:], 4, axis=0), "ee6d")
    np.testing.assert_array_equal(planned.prefix.weights, np.ones(9, np.float32))


def test_the_latency_estimate_is_a_bounded_p90_of_recent_chunks():
    action = action_of("ee6d", 1, "rows")
    chunking = Chunking("rtc", action, SplicePolicy(max_latency_s=1.0), GripperPolicy(mode="continuous"))
    rows = model_rows("ee6d", 1, "rows", seed=5)
    executing = chunk_to_trajectory(chunk_of(rows, action, obs_time=100.0))
    assert chunking.latency_estimate() is None and chunking.prefix(100.5, executing) is None  # no chunk yet
    for latency in [0.1] * 18 + [0.3, 0.5]:
        chunking.arrived(latency)
    assert chunking.latency_estimate() == pytest.approx(0.1 + 0.1 * (0.3 - 0.1))  # p90 of 20: 0.1·(0.3 - 0.1) above
    planned = chunking.prefix(100.5, executing)
    assert (planned.delay, planned.horizon) == (4, 15) and chunking.last is planned
    assert_rows(planned.prefix.rows, rows[15:], "ee6d")
    assert chunking.prefix(100.5, None) is None  # nothing executing (a hold): the next chunk starts from rest
    for _ in range(20):  # outliers: bounded by the splice's max_latency_s
        chunking.arrived(5.0)
    assert chunking.latency_estimate() == 1.0
    for _ in range(20):  # the window forgets
        chunking.arrived(0.2)
    assert chunking.latency_estimate() == pytest.approx(0.2)
    for mode in ("blend", "replace"):
        other = Chunking(mode, action, SplicePolicy(), GripperPolicy())
        other.arrived(0.2)
        assert other.prefix(100.5, executing) is None


@pytest.mark.parametrize("gripper", ["binary", "continuous"])
def test_the_loop_s_executing_trajectory_is_what_it_commands(gripper):
    """:meth:`ControlLoop.executing` is the chunk as the loop runs it (spliced from the command, smoothed, and
    shifted by the time the loop fell behind a clipped command): sampled as the prefix samples it, it gives the
    commands the loop's streamer sends (before the envelope and the gripper latch)."""
    from drivers.control.control_loop import ControlLoop, LoopConfig
    from drivers.control.interpolation import TrajectorySampler
    from drivers.emulation.sim_arm import SimArm
    from drivers.arm import Box

    action = action_of("ee6d", 1, "rows")
    rows = model_rows("ee6d", 1, "rows", seed=7)
    rows[:, :3] += 0.3 + np.random.default_rng(0).normal(0, 0.002, (T, 3))  # zig-zag, away from the arm: clipped
    now = [100.0]
    arm = SimArm(space="ee", workspaces=(Box((-2, -2, -2), (2, 2, 2)),), clock=lambda: now[0])
    loop = ControlLoop(arm, LoopConfig(rate_hz=200, splice=SplicePolicy(smooth_window=9),
                                       gripper=GripperPolicy(mode=gripper), realtime_priority=0))
    loop.start()
    assert loop.executing() is None
    assert loop.submit(chunk_to_trajectory(chunk_of(rows, action, obs_time=100.0)), 100.0, 100.05)
    for k in range(60):
        now[0] = 100.05 + k / 200
        loop.tick(now[0])
    assert loop.streamer.lag > 0.01  # the envelope clipped the start: the trajectory runs late
    executing = loop.executing()
    sampler = TrajectorySampler(executing, gripper=GripperPolicy(mode=gripper).sampling)
    for t in now[0] + np.linspace(0.0, 0.8, 17):
        want = loop.streamer.sample(t)  # what the streamer commands at t (before the envelope)
        position, quaternion, grip = sampler.parts(t)
        np.testing.assert_allclose(position, want.position, atol=1e-12)
        np.testing.assert_allclose(quaternion, want.quaternion, atol=1e-12)
        if gripper == "continuous":  # a binary gripper's latch turns the value into open or closed
            np.testing.assert_allclose(grip, want.gripper, atol=1e-12)
    loop.estop()
    assert loop.executing() is None  # stopped: nothing executes


def test_a_delay_longer_than_the_chunk_is_refused_by_name():
    action = action_of("ee6d", 1, "rows")
    executing = chunk_to_trajectory(chunk_of(model_rows("ee6d", 1, "rows", seed=1), action, obs_time=100.0))
    assert build_prefix(executing, 100.5, action, 1.0).delay == T  # a whole chunk: the last row still ahead
    with pytest.raises(PrefixUnavailable, match=r"delay of 36 rows \(1.200 s at 33.3 ms a row\) is longer than "
                                                r"the chunk's 30 rows") as info:
        build_prefix(executing, 100.5, action, 1.2)
    assert info.value.reason == "delay" and isinstance(info.value, InputError)


@pytest.mark.parametrize("field,where", [("position", (20, 0, 1)), ("quaternion", (22, 0, 2)), ("gripper", (17, 0))])
def test_a_non_finite_executing_trajectory_gives_no_prefix(field, where):
    """A trajectory that skipped its validation (say, unpickled) with a NaN where the prefix samples it."""
    action = action_of("ee6d", 1, "rows")
    executing = copy.copy(chunk_to_trajectory(chunk_of(model_rows("ee6d", 1, "rows", seed=2), action,
                                                       obs_time=100.0)))
    values = getattr(executing, field).copy()
    values[where] = np.nan
    object.__setattr__(executing, field, values)
    with pytest.raises(PrefixUnavailable, match="the executing trajectory gives no valid prefix") as info:
        build_prefix(executing, 100.5, action, 0.2)
    assert info.value.reason == "invalid"


@pytest.mark.parametrize("latency", [math.nan, math.inf, -0.1])
def test_a_non_finite_latency_gives_no_prefix(latency):
    action = action_of("ee6d", 1, "rows")
    executing = chunk_to_trajectory(chunk_of(model_rows("ee6d", 1, "rows", seed=2), action, obs_time=100.0))
    with pytest.raises(PrefixUnavailable, match="latency_s") as info:
        build_prefix(executing, 100.5, action, latency)
    assert info.value.reason == "invalid"


def test_rtc_needs_a_bundle_with_prefix_inputs():
    check_supported("rtc", True, "b")
    for mode in ("blend", "replace"):
        check_supported(mode, False, "b")
    with pytest.raises(PrefixUnsupported, match='chunking = "rtc": the bundle /robot/old was exported without'):
        check_supported("rtc", False, "/robot/old")
    with pytest.raises(InputError, match="chunking = 'fade'"):
        Chunking("fade", action_of("ee6d", 1, "rows"), SplicePolicy(), GripperPolicy())
