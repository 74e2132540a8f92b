"""Splicing a new chunk into the executing trajectory: continuity, latency, rejections, policies."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from drivers.arm import ArmConfigError, Box, JointLimit, Target
from drivers.control.interpolation import GripperPolicy, TrajectorySampler
from drivers.control.safety import SafetyLimits
from drivers.control.splice import MAX_BLEND_SAMPLES, POLICY_RANGES, SplicePolicy, SpliceRejected, min_duration, splice
from drivers.control.streamer import Streamer
from drivers.control.trajectory import Trajectory

IDENTITY = [0.0, 0.0, 0.0, 1.0]
LIMITS = SafetyLimits(max_linear_speed=0.5, max_angular_speed=1.5, workspaces=(Box((-1, -1, -1), (1, 1, 1)),))
SPAN = 1.0  # s for 30 waypoints: 33 ms apart


def chunk(t_obs: float, start=(0.0, 0.0, 0.3), end=(0.1, 0.0, 0.3), grip=None) -> Trajectory:
    pos = np.linspace(start, end, 31)[1:]
    return Trajectory.from_chunk(t_obs, SPAN, position=pos, rotation=np.tile(IDENTITY, (30, 1)),
                                 gripper=np.ones(30) if grip is None else grip)


def command(pos=(0.0, 0.0, 0.3), grip=1.0) -> Target:
    return Target.ee([pos], [IDENTITY], [grip])


def run(new, *, now, obs, cmd=None, current=None, **policy):
    return splice(new, now=now, obs_timestamp=obs, command=cmd or command(), current=current, limits=LIMITS,
                  policy=SplicePolicy(**policy))


def test_replace_starts_at_the_command_and_drops_past_waypoints():
    new = chunk(10.0, end=(0.03, 0.0, 0.3))
    res = run(new, now=10.1, obs=10.0)  # 100 ms of inference: waypoints 1..3 are past
    traj = res.trajectory
    assert res.latency == pytest.approx(0.1) and res.dropped == 3 and res.delay == 0.0
    assert traj.start == 10.1
    np.testing.assert_array_equal(traj.position[0], [[0.0, 0.0, 0.3]])
    np.testing.assert_allclose(traj.times[1:], new.times[3:])  # anchored to the observation
    np.testing.assert_allclose(TrajectorySampler(traj).position(10.1), [[0.0, 0.0, 0.3]])


def test_late_chunk_is_shifted_by_its_latency_with_arrival_anchor():
    new = chunk(10.0)
    res = run(new, now=10.25, obs=10.0, anchor="arrival")
    assert res.dropped == 0
    np.testing.assert_allclose(res.trajectory.times[1:], new.times + 0.25)


@pytest.mark.parametrize(
    "now, obs, policy, reason",
    [
        (12.0, 10.0, {}, "too_late"),  # latency 2 s > max_latency_s 1 s
        (10.0, 10.5, {}, "future_observation"),
        (11.5, 10.0, {"max_latency_s": 5.0}, "stale"),  # the whole chunk ended at 11.0
    ],
)
def test_rejections(now, obs, policy, reason):
    with pytest.raises(SpliceRejected) as err:
        run(chunk(10.0), now=now, obs=obs, **policy)
    assert err.value.reason == reason


def test_shape_mismatch_is_rejected():
    joint = Trajectory.joint([1.0, 2.0], np.zeros((2, 6)), [1.0, 1.0])
    with pytest.raises(SpliceRejected, match="chunk is 'joint' with 1 arm\\(s\\) and 6 joint\\(s\\)") as err:
        run(joint, now=0.9, obs=0.9)
    assert err.value.reason == "shape"


def test_far_first_waypoint_is_delayed_to_respect_the_speed_limit():
    new = chunk(10.0, start=(0.3, 0.0, 0.3), end=(0.4, 0.0, 0.3))  # first waypoint 0.3 m away, 33 ms later
    res = run(new, now=10.0, obs=10.0)
    need = 1.5 * np.linalg.norm([0.3 + 0.1 / 30, 0, 0]) / 0.5
    assert res.delay == pytest.approx(10.0 + need - new.start)
    assert res.trajectory.times[1] == pytest.approx(10.0 + need)
    np.testing.assert_allclose(res.trajectory.times[2:] - res.trajectory.times[1], new.times[1:] - new.start)


def test_min_duration_uses_the_slowest_axis():
    a, b = command(), Target.ee([[0.1, 0, 0.3]], [Rotation.from_rotvec([0, 0, 0.3]).as_quat()], [1.0])
    assert min_duration(a, b, LIMITS) == pytest.approx(max(0.1 / 0.5, 0.3 / 1.5))
    lim = SafetyLimits(joint_limits=(JointLimit(-3, 3, 1.0), JointLimit(-3, 3, 0.1)))
    assert min_duration(Target.joint([0, 0], [1]), Target.joint([0.5, 0.1], [1]), lim) == pytest.approx(1.0)


def test_switch_continues_the_executing_velocity():
    old = TrajectorySampler(run(chunk(10.0), now=10.0, obs=10.0).trajectory)
    now = 10.5
    cmd = Target.ee(old.position(now), old.quaternion(now), [1.0])
    new = chunk(10.4, start=tuple(old.position(10.4)[0]), end=(0.2, 0.0, 0.3))
    traj = run(new, now=now, obs=10.4, cmd=cmd, current=old).trajectory
    sampler = TrajectorySampler(traj)
    np.testing.assert_allclose(sampler.position(now), old.position(now))
    np.testing.assert_allclose(sampler.velocity(now), old.velocity(now), atol=1e-9)


def test_blend_goes_from_old_to_new_without_jumps():
    old_traj = run(chunk(10.0), now=10.0, obs=10.0).trajectory  # x: 0 -> 0.1 over 1 s
    old = TrajectorySampler(old_traj)
    now = 10.3
    cmd = Target.ee(old.position(now), old.quaternion(now), [1.0])
    new = chunk(10.3, start=(0.03, 0.02, 0.3), end=(0.03, 0.12, 0.3), grip=np.zeros(30))  # turns to +y
    res = run(new, now=now, obs=10.3, cmd=cmd, current=old, mode="blend", blend_window_s=0.2)
    blended = TrajectorySampler(res.trajectory)
    replaced = TrajectorySampler(run(new, now=now, obs=10.3, cmd=cmd, current=old).trajectory)
    np.testing.assert_allclose(blended.position(now), cmd.position)
    for t in (10.5, 10.7, 11.2):  # after the window: the new chunk only
        np.testing.assert_allclose(blended.position(t), replaced.position(t), atol=1e-12)
    # mid-window: a mix of both, and the gripper switched at alpha = 0.5
    mid = blended.position(10.4)[0]
    a, b = old.position(10.4)[0], replaced.position(10.4)[0]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    assert np.all(mid >= lo - 1e-3) and np.all(mid <= hi + 1e-3)
    assert blended.gripper(10.35)[0] == 1.0 and blended.gripper(10.45)[0] == 0.0
    # no step larger than the speed limit allows at 500 Hz
    ts = np.arange(now, now + 0.4, 0.002)
    steps = np.linalg.norm(np.diff([blended.position(t)[0] for t in ts], axis=0), axis=1)
    assert steps.max() <= LIMITS.max_linear_speed * 0.002


def test_blend_without_executing_trajectory_is_replace():
    a = run(chunk(10.0), now=10.05, obs=10.0, mode="blend").trajectory
    b = run(chunk(10.0), now=10.05, obs=10.0).trajectory
    np.testing.assert_array_equal(a.times, b.times)


def test_joint_blend():
    limits = SafetyLimits(joint_limits=(JointLimit(-3, 3, 2.0),) * 2)
    old = Trajectory.joint(np.linspace(0.1, 1.0, 10), np.outer(np.linspace(0.1, 1.0, 10), [1, -1]), np.ones(10))
    new = Trajectory.joint(np.linspace(0.5, 1.5, 10), np.zeros((10, 2)) + 0.3, np.ones(10))
    cmd = Target.joint(TrajectorySampler(old).position(0.5), [1.0])
    res = splice(new, now=0.5, obs_timestamp=0.45, command=cmd, current=TrajectorySampler(old), limits=limits,
                 policy=SplicePolicy(mode="blend", blend_window_s=0.1))
    sampler = TrajectorySampler(res.trajectory)
    np.testing.assert_allclose(sampler.position(0.5), cmd.joints)
    np.testing.assert_allclose(sampler.position(1.2), [0.3, 0.3], atol=1e-9)


def test_policy_validation():
    with pytest.raises(ArmConfigError, match="SplicePolicy.mode"):
        SplicePolicy(mode="ensemble")
    with pytest.raises(ArmConfigError, match=r"^SplicePolicy.blend_window_s: expected 0.01 ... 1 s, got 0$"):
        SplicePolicy(blend_window_s=0)
    with pytest.raises(ArmConfigError, match="anchor"):
        SplicePolicy(anchor="now")


@pytest.mark.parametrize("name", list(POLICY_RANGES))
def test_every_policy_number_has_a_finite_range(name):
    """The issue's values: a 1e300 s window or a 1e-300 s step asked for more blend samples than memory holds;
    5 s over 1 µs stalled the loop for seconds; a 1e300 speed margin delayed every chunk beyond float times."""
    lower, upper, unit = POLICY_RANGES[name]
    for value in (lower, upper):
        assert getattr(SplicePolicy(**{name: value}), name) == value
    for value in (lower * 0.99, upper * 1.01, 1e300, 1e-300, 0.0, -1.0, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ArmConfigError, match=rf"^SplicePolicy.{name}: expected {lower:g} \.\.\. {upper:g}"):
            SplicePolicy(**{name: value})


def test_a_blend_takes_at_most_max_blend_samples():
    window, step = POLICY_RANGES["blend_window_s"][1], POLICY_RANGES["blend_step_s"][0]
    assert SplicePolicy(blend_window_s=window, blend_step_s=step).blend_samples == MAX_BLEND_SAMPLES == 200
    assert SplicePolicy(blend_window_s=0.01, blend_step_s=0.1).blend_samples == 1
    old = TrajectorySampler(chunk(9.0, end=(0.1, 0.0, 0.3)))
    res = run(chunk(9.95, start=(0.1, 0.0, 0.3), end=(0.2, 0.0, 0.3)), now=10.0, obs=9.95, cmd=command((0.1, 0, 0.3)),
              current=old, mode="blend", blend_window_s=window, blend_step_s=step)
    assert res.trajectory.n_waypoints == MAX_BLEND_SAMPLES + 1  # the command, then the samples (the chunk ends inside)


def test_a_blend_that_would_be_invalid_falls_back_to_replace():
    """The executing trajectory races at 99 m/s (valid, if absurd) far from the command: mixing it in would
    imply more than MAX_WAYPOINT_LINEAR_SPEED, so the new chunk replaces it instead of being refused."""
    old = TrajectorySampler(Trajectory.ee([10.0, 10.2], [[-9.9, 0, 0.3], [9.9, 0, 0.3]], [IDENTITY] * 2, [1.0, 1.0]))
    new = chunk(10.0)
    blend = run(new, now=10.05, obs=10.0, current=old, mode="blend")
    replace = run(new, now=10.05, obs=10.0, current=old, mode="replace")
    np.testing.assert_array_equal(blend.trajectory.times, replace.trajectory.times)
    np.testing.assert_array_equal(blend.trajectory.position, replace.trajectory.position)
    assert blend.trajectory.n_waypoints < run(new, now=10.05, obs=10.0, current=TrajectorySampler(new),
                                              mode="blend").trajectory.n_waypoints  # a real blend adds knots


def test_a_splice_between_ticks_continues_from_the_command_at_its_send_time():
    """The last command was sent at 10.000 and the chunk arrives at 10.003, before the next tick at 10.005:
    the new trajectory starts from the command at 10.000, so the next tick moves by a full tick of motion
    (starting it at 10.003 would command a standstill for 3 ms: a velocity dip the envelope then clips)."""
    speed = 0.1 / SPAN  # m/s of the chunks below
    old = TrajectorySampler(run(chunk(9.5, start=(-0.05, 0.0, 0.3), end=(0.05, 0.0, 0.3)), now=9.5, obs=9.5).trajectory)
    at = old.position(10.0)[0]
    cmd = command(tuple(at))
    new = chunk(10.0, start=tuple(at), end=tuple(at + [0.1, 0.0, 0.0]))
    res = splice(new, now=10.003, obs_timestamp=10.0, command=cmd, command_time=10.0, current=old, limits=LIMITS,
                 policy=SplicePolicy())
    step = TrajectorySampler(res.trajectory).position(10.005)[0] - at
    assert res.trajectory.start == 10.0
    assert step[0] == pytest.approx(speed * 0.005, rel=0.1)
    late = run(new, now=10.003, obs=10.0, cmd=cmd, current=old)  # without the send time: from 10.003
    assert TrajectorySampler(late.trajectory).position(10.005)[0][0] - at[0] < 0.5 * speed * 0.005


def test_smoothing_is_applied_to_the_chunk_before_the_past_is_dropped():
    pos = np.column_stack([np.linspace(0.0, 0.1, 31)[1:], 0.002 * (-1.0) ** np.arange(30), np.full(30, 0.3)])
    new = Trajectory.from_chunk(10.0, SPAN, position=pos, rotation=np.tile(IDENTITY, (30, 1)), gripper=np.ones(30))
    res = run(new, now=10.1, obs=10.0, smooth_window=9)
    np.testing.assert_allclose(res.trajectory.position[1:], new.smoothed(9).position[3:])
    assert np.abs(res.trajectory.position[4:-4, 0, 1]).max() < 0.0005  # ±2 mm zig-zag → < 0.5 mm inside
    for bad in (2, 8, 101, True):
        with pytest.raises(ArmConfigError, match="smooth_window must be 0"):
            SplicePolicy(smooth_window=bad)


def test_blend_fades_a_continuous_gripper_and_switches_an_open_close_one():
    old_traj = run(chunk(10.0), now=10.0, obs=10.0).trajectory  # open throughout
    now = 10.3
    cmd = Target.ee(TrajectorySampler(old_traj).position(now), [IDENTITY], [1.0])
    new = chunk(10.3, start=(0.03, 0.0, 0.3), end=(0.13, 0.0, 0.3), grip=np.zeros(30))  # closed throughout
    for mode, expected in (("linear", "fade"), ("hold", "switch")):
        old = TrajectorySampler(old_traj, gripper=mode)
        blended = TrajectorySampler(run(new, now=now, obs=now, cmd=cmd, current=old, mode="blend").trajectory,
                                    gripper=mode)
        values = np.array([blended.gripper(t)[0] for t in np.arange(now, now + 0.25, 0.005)])
        assert values[0] == 1.0 and values[-1] == 0.0 and np.all(np.diff(values) <= 1e-12)
        if expected == "fade":  # smoothstep: the steepest step is 1.5 / window per second, not a jump
            assert np.abs(np.diff(values)).max() <= 1.5 / 0.2 * 0.005 * 1.1
        else:
            assert set(np.round(values, 12)) == {0.0, 1.0}


def test_a_lagging_trajectory_is_handed_over_where_its_command_is():
    """The control loop slows a trajectory it cannot follow (its clock lags the wall clock); the splice must
    see it where the command is, not where it would be without the lag."""
    streamer = Streamer(command(), limits=LIMITS, splice_policy=SplicePolicy(mode="blend"),
                        gripper=GripperPolicy(mode="continuous"))
    streamer.submit(chunk(10.0), obs_timestamp=10.0, now=10.0, command=command())  # x = 0.1 m/s * (t - 10)
    assert streamer.fall_behind(0.05, now=10.3)  # now 50 ms late: at 10.3 it commands x = 0.025
    cmd = streamer.sample(10.3)
    np.testing.assert_allclose(cmd.position[0, 0], 0.025, atol=1e-6)
    # the same line as the executing trajectory runs it: the hand-over must not move the arm off it
    late = Trajectory.from_chunk(10.05, SPAN, position=np.linspace((0.0, 0.0, 0.3), (0.1, 0.0, 0.3), 31)[1:],
                                 rotation=np.tile(IDENTITY, (30, 1)), gripper=np.ones(30))
    streamer.submit(late, obs_timestamp=10.3, now=10.3, command=cmd)
    for t in np.arange(10.3, 10.7, 0.005):
        np.testing.assert_allclose(streamer.sample(t).position[0, 0], 0.1 * (t - 10.05), atol=2e-4)
