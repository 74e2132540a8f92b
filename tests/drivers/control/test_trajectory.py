"""Trajectory construction, validation messages and derived trajectories."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import savgol_filter
from scipy.spatial.transform import Rotation

from drivers.arm import Target
from drivers.control.trajectory import Trajectory, TrajectoryError, _smoothing_matrix, chunk_times
from drivers.physical_ranges import MAX_JOINT, MAX_POSITION_M

IDENTITY = np.array([0.0, 0.0, 0.0, 1.0])


def ee(n: int = 3, **kw) -> Trajectory:
    fields = dict(times=np.arange(n, dtype=float), position=np.zeros((n, 3)), rotation=np.tile(IDENTITY, (n, 1)),
                  gripper=np.ones(n))
    fields.update(kw)
    return Trajectory.ee(fields["times"], fields["position"], fields["rotation"], fields["gripper"])


def test_chunk_times_spread_after_the_observation():
    times = chunk_times(10.0, 2.0, 30)
    assert times[0] == pytest.approx(10.0 + 2.0 / 30)
    assert times[-1] == pytest.approx(12.0)
    np.testing.assert_allclose(np.diff(times), 2.0 / 30)


def test_from_chunk_ee_single_arm_is_promoted():
    rot = Rotation.from_euler("z", np.linspace(0, 1, 30)[:, None]).as_matrix()
    traj = Trajectory.from_chunk(5.0, 1.0, position=np.zeros((30, 3)), rotation=rot, gripper=np.ones(30))
    assert (traj.n_waypoints, traj.n_arms, traj.space) == (30, 1, "ee")
    assert traj.position.shape == (30, 1, 3) and traj.quaternion.shape == (30, 1, 4)
    np.testing.assert_allclose(Rotation.from_quat(traj.quaternion[:, 0]).as_matrix(), rot, atol=1e-12)
    assert traj.start == pytest.approx(5.0 + 1 / 30) and traj.end == pytest.approx(6.0)


def test_from_chunk_joint():
    traj = Trajectory.from_chunk(0.0, 3.0, joints=np.zeros((30, 7)), gripper=np.zeros((30, 1)))
    assert (traj.space, traj.n_joints, traj.n_arms) == ("joint", 7, 1)


def test_quaternions_are_normalised_and_hemisphere_continuous():
    quats = np.array([IDENTITY, -IDENTITY * 2, [0, 0, np.sin(0.1), -np.cos(0.1)]])
    traj = ee(rotation=quats)
    q = traj.quaternion[:, 0]
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0)
    assert np.all(np.einsum("ij,ij->i", q[1:], q[:-1]) > 0)
    huge = ee(rotation=[IDENTITY, [1e308] * 4, [1.7e308] * 4]).quaternion[:, 0]  # normalised without overflow
    np.testing.assert_allclose(huge[1:], [[0.5] * 4, [0.5] * 4])


def test_arrays_are_read_only():
    traj = ee()
    with pytest.raises(ValueError):
        traj.position[0, 0, 0] = 1.0


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(times=[0.0, 1.0, 1.0]), r"times: must be strictly increasing, but times\[2\] = 1.0 <= times\[1\] = 1.0"),
        (dict(times=[0.0, np.nan, 2.0]), r"times: non-finite value nan at index \(1,\)"),
        (dict(position=np.zeros((3, 2))), r"position: expected shape \(3, n_arms, 3\), got \(3, 2\)"),
        (
            dict(position=np.array([[0, 0, 0], [0, np.inf, 0], [0, 0, 0]])),
            r"position: non-finite value inf at index \(1, 0, 1\)",
        ),
        (dict(gripper=[0.0, 1.5, 1.0]), r"gripper: value 1.5 at index \(1, 0\) is outside 0..1"),
        (dict(rotation=np.zeros((3, 4))), r"rotation: quaternion at index \(0, 0\) has zero norm"),
        (
            dict(rotation=np.tile(np.diag([1.0, 1.0, -1.0]), (3, 1, 1))),
            r"rotation: matrix at index \(0, 0\) is not a rotation",
        ),
        (dict(rotation=np.tile(np.eye(3) * 1.1, (3, 1, 1))), r"not a rotation"),
        (dict(gripper=np.ones((3, 2))), r"position: has 1 arms but gripper has 2"),
        # physically meaningless values (drivers.physical_ranges), named by waypoint, field and value
        (dict(position=[[0, 0, 0], [0, 0, 0], [0, -10.5, 0]]),
         r"position: waypoint 2 \(arm 0\) y = -10.5 m is outside ±10 m \(MAX_POSITION_M\)"),
        (dict(position=[[0, 0, 0], [1e308, 0, 0], [0, 0, 0]]), r"waypoint 1 \(arm 0\) x = 1e\+308 m is outside"),
        (dict(times=[0.0, 1.0, 1.01], position=[[0, 0, 0], [0, 0, 0], [0, 0, 1.5]]),
         r"position: waypoints 1 -> 2 \(arm 0\) imply 150 m/s, beyond 100 m/s \(MAX_WAYPOINT_LINEAR_SPEED\)"),
        (dict(times=[0.0, 1.0, 1.0 + 2**-40], position=[[0, 0, 0], [0, 0, 0], [0, 0, 1e-9]]),
         r"position: waypoints 1 -> 2 \(arm 0\) imply 1100 m/s, beyond 100 m/s"),
        (dict(times=[0.0, 0.01, 0.02], rotation=[IDENTITY, IDENTITY, [0, 0, 1, 0]]),
         r"rotation: waypoints 1 -> 2 \(arm 0\) imply 314.2 rad/s, beyond 100 rad/s \(MAX_WAYPOINT_ANGULAR_SPEED\)"),
        (dict(rotation=[IDENTITY, [5e-324, 0, 0, 0], IDENTITY]),
         r"rotation: quaternion at index \(1, 0\) has zero norm"),
        (dict(times=[0.0, 1.0, 0.5]), r"times: must be strictly increasing, but times\[2\] = 0.5 <= times\[1\] = 1.0"),
        (dict(times=[0.0, 1.0, np.inf]), r"times: non-finite value inf at index \(2,\)"),
        (dict(times=[], position=np.zeros((0, 3)), rotation=np.zeros((0, 4)), gripper=[]),
         r"times: expected shape \(N,\) with N >= 1, got \(0,\)"),
    ],
)
def test_validation_names_the_field(kw, match):
    with pytest.raises(TrajectoryError, match=match):
        ee(**kw)


def test_joint_validation():
    with pytest.raises(TrajectoryError, match=r"joints: expected shape \(2, n_joints\), got \(3, 6\)"):
        Trajectory.joint([0.0, 1.0], np.zeros((3, 6)), [1.0, 1.0])
    with pytest.raises(TrajectoryError, match=r"initial_velocity: expected shape \(6,\), got \(5,\)"):
        Trajectory.joint([0.0, 1.0], np.zeros((2, 6)), [1.0, 1.0], initial_velocity=np.zeros(5))
    with pytest.raises(TrajectoryError, match="chunk span must be finite and > 0"):
        Trajectory.from_chunk(0.0, 0.0, joints=np.zeros((30, 6)), gripper=np.ones(30))
    with pytest.raises(TrajectoryError, match="chunk must have at least 1 waypoint, got 0"):
        Trajectory.from_chunk(0.0, 1.0, joints=np.zeros((0, 6)), gripper=np.ones(0))
    with pytest.raises(TrajectoryError,
                       match=r"joints: waypoint 1 joint 4 = -13.0 is outside ±12.5664 \(4π, MAX_JOINT\)"):
        Trajectory.joint([0.0, 1.0], [[0.0] * 6, [0.0] * 4 + [-13.0, 0.0]], [1.0, 1.0])
    with pytest.raises(TrajectoryError, match=r"joints: waypoints 0 -> 1 \(joint 2\) imply 200 rad/s, beyond 100 rad/s "
                                              r"\(MAX_WAYPOINT_JOINT_SPEED\)"):
        Trajectory.joint([0.0, 0.01], [[0.0] * 6, [0.0, 0.0, 2.0, 0.0, 0.0, 0.0]], [1.0, 1.0])


def test_after_shifted_prepend():
    traj = ee(5, position=np.arange(15, dtype=float).reshape(5, 3) / 10)
    tail = traj.after(2.0)
    np.testing.assert_array_equal(tail.times, [3.0, 4.0])
    assert traj.after(4.0) is None
    np.testing.assert_array_equal(traj.shifted(0.5).times, traj.times + 0.5)
    start = Target.ee([[0.9, 0.9, 0.9]], [IDENTITY], [0.0])
    joined = tail.prepend(2.5, start, initial_velocity=np.ones((1, 3)))
    np.testing.assert_array_equal(joined.times, [2.5, 3.0, 4.0])
    np.testing.assert_array_equal(joined.position[0, 0], [0.9, 0.9, 0.9])
    np.testing.assert_array_equal(joined.initial_velocity, np.ones((1, 3)))
    wp = joined.waypoint(1)
    np.testing.assert_array_equal(wp.position, [[0.9, 1.0, 1.1]])
    with pytest.raises(TrajectoryError, match="times: must be strictly increasing"):
        tail.prepend(3.0, start)
    with pytest.raises(TrajectoryError, match="prepend: target is 'joint'"):
        tail.prepend(2.0, Target.joint([0.0], [1.0]))


def test_smoothing_keeps_constant_acceleration_motion_and_removes_jitter():
    t = np.arange(1, 31) / 30
    path = np.column_stack([0.3 + 0.05 * t + 0.04 * t**2, np.zeros(30), np.full(30, 0.2)])
    quats = Rotation.from_euler("z", np.linspace(0, 0.3, 30)[:, None]).as_quat()
    grip = np.linspace(1, 0, 30)
    smooth = Trajectory.ee(t, path, quats, grip)
    np.testing.assert_allclose(smooth.smoothed(9).position, smooth.position, atol=1e-12)
    jitter = 0.001 * (-1.0) ** np.arange(30)
    rough = Trajectory.ee(t, path + np.column_stack([np.zeros(30), jitter, np.zeros(30)]), quats, grip)
    out = rough.smoothed(9)
    np.testing.assert_allclose(out.position, savgol_filter(rough.position, 9, 2, axis=0, mode="interp"), atol=1e-15)
    bumps = np.abs(np.diff(out.position[:, 0, 1], 2))  # what the interpolator turns into acceleration
    assert bumps[3:-3].max() < 0.2 * np.abs(np.diff(jitter, 2)).max() and bumps.max() < np.abs(np.diff(jitter, 2)).max()
    np.testing.assert_allclose(out.position[:, 0, 0], path[:, 0], atol=1e-12)  # the motion itself is kept
    np.testing.assert_allclose(out.quaternion, rough.quaternion, atol=1e-15)
    np.testing.assert_allclose(out.gripper, rough.gripper, atol=1e-12)  # a ramp is kept
    np.testing.assert_array_equal(out.times, rough.times)


def test_the_smoothing_matrix_is_scipys_savitzky_golay_filter():
    """Written in numpy (scipy.signal's import costs a second per process); scipy is the reference."""
    for n in range(3, 41):
        for window in range(3, n + 1, 2):
            expected = savgol_filter(np.eye(n), window, 2, axis=0, mode="interp")
            np.testing.assert_allclose(_smoothing_matrix(n, window), expected, rtol=0, atol=1e-14,
                                       err_msg=f"n={n} window={window}")


def test_smoothing_filters_the_gripper_opening_within_its_range():
    t = np.arange(1, 31) / 30
    path = np.column_stack([np.linspace(0.3, 0.4, 30), np.zeros(30), np.full(30, 0.2)])
    quats = np.tile([0.0, 0.0, 0.0, 1.0], (30, 1))
    ramp = np.clip(np.linspace(1.6, -0.6, 30), 0, 1)  # open, ramp at 2.2 per second, closed
    jittery = np.clip(ramp + 0.03 * (-1.0) ** np.arange(30), 0, 1)
    out = Trajectory.ee(t, path, quats, jittery).smoothed(9).gripper[:, 0]
    assert out.min() >= 0.0 and out.max() <= 1.0
    steep = np.abs(np.diff(jittery)).max() * 30
    assert np.abs(np.diff(out)).max() * 30 < 0.7 * steep  # the zig-zag's steepest steps are gone
    expected = np.clip(savgol_filter(jittery, 9, 2, mode="interp"), 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_smoothing_joints_short_trajectories_and_bad_windows():
    t = np.arange(1, 6) * 0.1
    joints = np.outer(t, np.ones(6)) + 0.01 * (-1.0) ** np.arange(5)[:, None]
    traj = Trajectory.joint(t, joints, np.ones(5))
    assert np.abs(np.diff(traj.smoothed(9).joints, 2, axis=0)).max() < np.abs(np.diff(joints, 2, axis=0)).max() / 3
    two = Trajectory.joint(t[:2], joints[:2], np.ones(2))
    assert two.smoothed(5) is two
    for window in (4, 1, True, 7.0):
        with pytest.raises(TrajectoryError, match="odd integer >= 3"):
            traj.smoothed(window)
    uneven = Trajectory.joint([0.1, 0.2, 0.4, 0.5], joints[:4], np.ones(4))
    with pytest.raises(TrajectoryError, match="evenly spaced"):
        uneven.smoothed(3)


def test_smoothing_a_chunk_at_the_edge_of_the_physical_range_keeps_it_valid():
    """The quadratic end fits overshoot the waypoints: a joint chunk ending on +4π, or an EE chunk on the
    10 m wall, would have been smoothed beyond the physical range and refused as invalid at the splice."""
    t = np.arange(1, 31) / 30
    dip = 0.3 * (np.arange(30) == 3)  # one waypoint 0.3 below 4π: the fits around it overshoot above 4π
    walk = (MAX_JOINT - dip)[:, None] * np.ones(2)
    joints = Trajectory.joint(t, walk, np.ones(30)).smoothed(5).joints
    assert np.abs(savgol_filter(walk, 5, 2, axis=0, mode="interp")).max() > MAX_JOINT  # scipy's filter overshoots
    assert np.abs(joints).max() == MAX_JOINT
    x = MAX_POSITION_M - dip
    path = np.column_stack([x, np.zeros(30), np.zeros(30)])
    ee = Trajectory.ee(t, path, np.tile([0.0, 0.0, 0.0, 1.0], (30, 1)), np.ones(30)).smoothed(5)
    assert np.abs(ee.position).max() == MAX_POSITION_M
