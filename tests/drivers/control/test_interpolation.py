"""Sampling against analytic references: linear segments, slerp angles, no overshoot, C1 at knots."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from drivers.arm import ArmConfigError
from drivers.control.interpolation import GripperLatch, GripperPolicy, TrajectorySampler
from drivers.control.trajectory import Trajectory

IDENTITY = np.array([0.0, 0.0, 0.0, 1.0])


def ee_traj(times, position, rotation=None, gripper=None, **kw) -> Trajectory:
    n = len(times)
    rotation = np.tile(IDENTITY, (n, 1)) if rotation is None else rotation
    gripper = np.ones(n) if gripper is None else gripper
    return Trajectory.ee(np.asarray(times, float), np.asarray(position, float), rotation, gripper, **kw)


def test_collinear_evenly_spaced_waypoints_give_straight_segments():
    times = np.arange(6) * 0.1
    pos = np.outer(np.arange(6), [0.01, -0.02, 0.005])
    sampler = TrajectorySampler(ee_traj(times, pos))
    # all but the last segment (which comes to rest on the last waypoint) are exactly linear
    for t in np.linspace(0, 0.4, 41):
        np.testing.assert_allclose(sampler.position(t)[0], t / 0.1 * np.array([0.01, -0.02, 0.005]), atol=1e-12)
        np.testing.assert_allclose(sampler.velocity(t)[0], [0.1, -0.2, 0.05], atol=1e-9)
    np.testing.assert_allclose(sampler.velocity(0.5), 0.0, atol=1e-12)


def test_holds_end_values_outside_the_span():
    sampler = TrajectorySampler(ee_traj([1.0, 2.0], [[0, 0, 0], [1, 1, 1]]))
    np.testing.assert_array_equal(sampler.position(0.0), [[0, 0, 0]])
    np.testing.assert_array_equal(sampler.position(5.0), [[1, 1, 1]])
    np.testing.assert_array_equal(sampler.velocity(5.0), 0.0)


def test_single_waypoint_is_constant():
    sampler = TrajectorySampler(ee_traj([1.0], [[0.1, 0.2, 0.3]]))
    np.testing.assert_array_equal(sampler.sample(7.0).position, [[0.1, 0.2, 0.3]])
    np.testing.assert_array_equal(sampler.quaternion(0.0), [IDENTITY])


def test_slerp_has_constant_angular_velocity_per_segment():
    angles = np.array([0.0, 0.6, 0.9, 2.0])
    rot = Rotation.from_rotvec(np.outer(angles, [0, 0, 1])).as_quat()
    sampler = TrajectorySampler(ee_traj([0.0, 1.0, 2.0, 3.0], np.zeros((4, 3)), rotation=rot))
    for t in np.linspace(0, 3, 31):
        expected = np.interp(t, [0, 1, 2, 3], angles)
        got = Rotation.from_quat(sampler.quaternion(t)).as_rotvec()[0]
        np.testing.assert_allclose(got, [0, 0, expected], atol=1e-10)


def test_slerp_takes_the_short_way():
    rot = Rotation.from_rotvec([[0, 0, 0.1], [0, 0, 2 * np.pi - 0.1]]).as_quat()
    sampler = TrajectorySampler(ee_traj([0.0, 1.0], np.zeros((2, 3)), rotation=rot))
    mid = Rotation.from_quat(sampler.quaternion(0.5)).magnitude()[0]
    assert mid == pytest.approx(0.0, abs=1e-10)


def test_two_arms_are_independent():
    pos = np.array([[[0, 0, 0], [1, 1, 1]], [[1, 0, 0], [1, 1, 0]]], float)
    rot = np.stack([Rotation.from_rotvec([[0, 0, 0], [0.5, 0, 0]]).as_quat(),
                    Rotation.from_rotvec([[0, 0, 1], [0.5, 0, 0]]).as_quat()])
    sampler = TrajectorySampler(ee_traj([0.0, 1.0], pos, rotation=rot, gripper=np.ones((2, 2))))
    target = sampler.sample(0.5)
    assert target.position.shape == (2, 3) and target.quaternion.shape == (2, 4)
    rotvec = Rotation.from_quat(target.quaternion).as_rotvec()
    np.testing.assert_allclose(rotvec, [[0, 0, 0.5], [0.5, 0, 0]], atol=1e-10)


@settings(max_examples=50, deadline=None)
@given(
    steps=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=12),
    gaps=st.lists(st.floats(0.03, 0.4), min_size=12, max_size=12),
)
def test_no_overshoot_on_monotone_data(steps, gaps):
    values = np.concatenate([[0.0], np.cumsum(steps)])
    times = np.concatenate([[0.0], np.cumsum(gaps[: len(steps)])])
    pos = np.stack([values, -values, np.zeros_like(values)], axis=1)
    sampler = TrajectorySampler(ee_traj(times, pos))
    ts = np.linspace(times[0], times[-1], 400)
    x = np.array([sampler.position(t)[0, 0] for t in ts])
    assert np.all(np.diff(x) >= -1e-12)  # monotone
    assert x.min() >= values[0] - 1e-12 and x.max() <= values[-1] + 1e-12
    for k in range(len(times) - 1):  # inside each segment's own range
        seg = x[(ts >= times[k]) & (ts <= times[k + 1])]
        assert np.all(seg >= values[k] - 1e-12) and np.all(seg <= values[k + 1] + 1e-12)


@settings(max_examples=30, deadline=None)
@given(values=st.lists(st.floats(-1.0, 1.0), min_size=3, max_size=10))
def test_c1_at_knots_and_within_segment_ranges(values):
    n = len(values)
    times = np.arange(n) * 0.1
    pos = np.stack([values, np.zeros(n), np.zeros(n)], axis=1)
    sampler = TrajectorySampler(ee_traj(times, pos))
    for k in range(1, n - 1):  # velocity is continuous across each knot
        left, right = sampler.velocity(times[k] - 1e-9)[0, 0], sampler.velocity(times[k] + 1e-9)[0, 0]
        assert left == pytest.approx(right, abs=1e-5)
        assert sampler.position(times[k])[0, 0] == pytest.approx(values[k], abs=1e-12)
    for t in times[:-1] + 0.05:  # and is the derivative of the position
        fd = (sampler.position(t + 1e-6)[0, 0] - sampler.position(t - 1e-6)[0, 0]) / 2e-6
        assert sampler.velocity(t)[0, 0] == pytest.approx(fd, abs=1e-5)
    for k in range(n - 1):
        lo, hi = sorted(values[k : k + 2])
        for t in np.linspace(times[k], times[k + 1], 11):
            assert lo - 1e-12 <= sampler.position(t)[0, 0] <= hi + 1e-12


def test_initial_velocity_is_used_when_monotone_and_limited_otherwise():
    times, pos = [0.0, 0.1, 0.2], [[0, 0, 0], [0.01, 0.01, 0.01], [0.02, 0.02, 0.02]]  # secant 0.1 m/s
    v0 = np.array([[0.05, 0.5, -0.05]])  # fine, 5x the secant (capped at 3x), wrong sign (zeroed)
    sampler = TrajectorySampler(ee_traj(times, pos, initial_velocity=v0))
    np.testing.assert_allclose(sampler.velocity(0.0), [[0.05, 0.3, 0.0]], atol=1e-12)
    assert sampler.position(0.05)[0, 0] <= 0.01 + 1e-12


def test_joint_trajectory_sampling():
    traj = Trajectory.joint([0.0, 1.0, 2.0], [[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]], [1.0, 1.0, 0.0])
    target = TrajectorySampler(traj).sample(0.5)
    assert target.space == "joint"
    np.testing.assert_allclose(target.joints, [0.5, 1.0], atol=1e-12)


def test_gripper_is_held_from_the_latest_waypoint():
    sampler = TrajectorySampler(ee_traj([1.0, 2.0, 3.0], np.zeros((3, 3)), gripper=[1.0, 0.2, 0.9]))
    assert [sampler.gripper(t)[0] for t in (0.0, 1.0, 1.99, 2.0, 2.5, 3.5)] == [1.0, 1.0, 1.0, 0.2, 0.2, 0.9]


def test_gripper_hysteresis():
    latch = GripperLatch(GripperPolicy(close_below=0.4, open_above=0.6), np.array([1.0]))
    raw = [0.55, 0.45, 0.39, 0.45, 0.59, 0.61, 0.41, 0.39]
    out = [latch(np.array([r]))[0] for r in raw]
    assert out == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]


def test_gripper_continuous_and_policy_validation():
    latch = GripperLatch(GripperPolicy(mode="continuous"), np.array([0.0, 1.0]))
    np.testing.assert_array_equal(latch(np.array([0.3, 0.7])), [0.3, 0.7])
    with pytest.raises(ArmConfigError, match=r"close_below \(0.7\) <= open_above \(0.6\)"):
        GripperPolicy(close_below=0.7, open_above=0.6)
    with pytest.raises(ArmConfigError, match="mode"):
        GripperPolicy(mode="analog")


def test_gripper_is_interpolated_for_a_continuous_gripper():
    sampler = TrajectorySampler(ee_traj([1.0, 2.0, 3.0], np.zeros((3, 3)), gripper=[1.0, 0.2, 0.9]), gripper="linear")
    np.testing.assert_allclose([sampler.gripper(t)[0] for t in (0.0, 1.0, 1.5, 2.0, 2.5, 3.5)],
                               [1.0, 1.0, 0.6, 0.2, 0.55, 0.9], atol=1e-12)
    with pytest.raises(ArmConfigError, match="'hold' or 'linear'"):
        TrajectorySampler(ee_traj([1.0, 2.0], np.zeros((2, 3))), gripper="cubic")


@pytest.mark.parametrize("gripper", ["hold", "linear"])
def test_sampling_many_times_at_once_matches_one_at_a_time(gripper):
    rng = np.random.default_rng(4)
    times = np.cumsum(rng.uniform(0.02, 0.05, 12))
    position = np.cumsum(rng.normal(0, 0.01, (12, 2, 3)), axis=0)
    quats = Rotation.from_rotvec(np.cumsum(rng.normal(0, 0.1, (24, 3)), axis=0)).as_quat().reshape(12, 2, 4)
    grip = rng.uniform(0, 1, (12, 2))
    sampler = TrajectorySampler(Trajectory.ee(times, position, quats, grip, initial_velocity=np.full((2, 3), 0.1)),
                                gripper=gripper)
    query = np.concatenate([[times[0] - 0.1], np.linspace(times[0], times[-1], 37), [times[-1] + 0.1]])
    values, quaternions, grippers = sampler.at(query)
    for k, t in enumerate(query):
        np.testing.assert_allclose(values[k], sampler.position(t), atol=1e-15)
        np.testing.assert_allclose(quaternions[k], sampler.quaternion(t), atol=1e-15)
        np.testing.assert_allclose(grippers[k], sampler.gripper(t), atol=1e-15)
    joints = TrajectorySampler(Trajectory.joint(times, np.cumsum(rng.normal(0, 0.1, (12, 6)), axis=0), grip[:, 0]))
    values, none, _ = joints.at(query)
    assert none is None and all(np.allclose(values[k], joints.position(t)) for k, t in enumerate(query))
    single = TrajectorySampler(Trajectory.ee(times[:1], position[:1], quats[:1], grip[:1]), gripper=gripper)
    values, quaternions, grippers = single.at(query)
    for k, t in enumerate(query):  # one waypoint: every field holds it
        np.testing.assert_array_equal(values[k], single.position(t))
        np.testing.assert_array_equal(quaternions[k], single.quaternion(t))
        np.testing.assert_array_equal(grippers[k], single.gripper(t))


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 31), st.integers(0, 2**32 - 1))
def test_knot_slopes_are_scipys_pchip_slopes(n, seed):
    from scipy.interpolate import PchipInterpolator

    from drivers.control.interpolation import _pchip_slopes

    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.uniform(0.01, 0.1, n))
    values = rng.normal(0, 0.01, (n, 3))
    values[rng.uniform(size=n) < 0.2] = 0.0  # flat stretches and exact zeros
    with np.errstate(divide="ignore", over="ignore"):
        expected = PchipInterpolator(times, values, axis=0).derivative()(times)
    np.testing.assert_allclose(_pchip_slopes(times, values), expected, rtol=1e-12, atol=1e-15)
