"""The control loop on an overloaded machine: ticks arrive late, chunks ask for more than the limits allow.

The loop is driven in-process with its own clock and seeded late ticks (up to ~100 ms instead of 2 ms),
so the test is exact and machine-independent. What must hold: the command stays on the planned path (it
never passes the chunk's last waypoint along the motion), comes to rest on it, and every step is within
the safety envelope. Before the trajectory clock existed the same runs overshot by 23 mm and 0.94 rad.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from drivers.arm import ArmConfigError, JointLimit
from drivers.control.control_loop import ControlLoop, LoopConfig
from drivers.quaternion import angle_between
from drivers.control.safety import SafetyLimits
from drivers.control.trajectory import Trajectory
from drivers.control.watchdog import Mode
from drivers.emulation.sim_arm import SimArm

RATE_HZ = 500.0
LIMITS = SafetyLimits(max_linear_speed=0.5, max_linear_accel=5.0, max_angular_speed=1.5, max_angular_accel=30.0,
                      max_joint_accel=20.0)
JOINTS = (JointLimit(-3.0, 3.0, 4.0),) * 6


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def profile(kind: str, s: np.ndarray) -> np.ndarray:
    """0 -> 1 over s in (0, 1]: "smooth" starts and ends at rest; "abrupt" starts at full speed (a velocity
    step from rest, more acceleration than any limit allows)."""
    return (1 - np.cos(np.pi * s)) / 2 if kind == "smooth" else np.sin(np.pi / 2 * s)


def make_loop(space: str, clock: Clock, max_lag: float) -> ControlLoop:
    arm = SimArm(space=space, clock=clock, joint_limits=JOINTS if space == "joint" else ())
    loop = ControlLoop(arm, LoopConfig(rate_hz=RATE_HZ, limits=LIMITS, max_trajectory_lag=max_lag))
    loop.start()
    return loop


def submit(loop: ControlLoop, clock: Clock, space: str, kind: str, span: float) -> np.ndarray:
    """A 30-waypoint chunk from the current command; returns its last waypoint (position or joints)."""
    s = np.linspace(0, 1, 31)[1:]
    start = loop.command
    if space == "ee":
        pos = start.position[0] + np.outer(profile(kind, s), [0.075, -0.05, 0.05])
        rot = Rotation.from_rotvec(np.outer(0.5 * profile(kind, s), [0, 0, 1])).as_quat()
        chunk = Trajectory.from_chunk(clock.t, span, position=pos, rotation=rot, gripper=np.ones(30))
        last = pos[-1]
    else:
        joints = start.joints + np.outer(profile(kind, s), 0.4 * np.ones(6))
        chunk = Trajectory.from_chunk(clock.t, span, joints=joints, gripper=np.ones((30, 1)))
        last = joints[-1]
    assert loop.submit(chunk, clock.t, clock.t)
    return last


def value(loop: ControlLoop, space: str) -> np.ndarray:
    return loop.command.position[0].copy() if space == "ee" else loop.command.joints.copy()


@pytest.mark.parametrize("space", ["ee", "joint"])
@pytest.mark.parametrize("kind", ["smooth", "abrupt"])
@pytest.mark.parametrize("late_share", [0.0, 0.3, 0.6])
def test_late_ticks_and_clipped_chunks_never_overshoot(space, kind, late_share):
    rng = np.random.default_rng(7)
    clock = Clock()
    loop = make_loop(space, clock, max_lag=20.0)
    start = value(loop, space)
    last = submit(loop, clock, space, kind, span=0.3 if kind == "abrupt" else 0.5)
    direction = (last - start) / np.linalg.norm(last - start)
    previous, worst = start, -np.inf
    for _ in range(3000):
        clock.t += 1 / RATE_HZ + (rng.exponential(0.02) if rng.random() < late_share else 0.0)
        loop.tick(clock.t)
        now = value(loop, space)
        worst = max(worst, float((now - last) @ direction))
        assert float((now - previous) @ direction) >= -1e-12  # moves forward only: no ringing
        previous = now
    assert worst <= 1e-12, f"passed the last waypoint by {worst}"
    np.testing.assert_allclose(value(loop, space), last, atol=1e-9)
    if space == "ee":
        final = Rotation.from_rotvec([0, 0, 0.5]).as_quat()[None]
        assert angle_between(loop.command.quaternion, final)[0] < 1e-6
    assert (loop.events["ticks_late"] > 0) == (late_share > 0)
    assert loop.events["trajectory_expired"] == 0 and loop.watchdog.mode is Mode.HOLDING
    if kind == "abrupt":
        assert loop.interventions.counts["linear_accel" if space == "ee" else "joint_accel"] > 0


def test_a_trajectory_that_falls_too_far_behind_is_dropped_and_the_arm_holds():
    clock = Clock()
    loop = make_loop("ee", clock, max_lag=0.5)
    submit(loop, clock, "ee", "smooth", span=0.5)
    speed = []
    for _ in range(400):
        clock.t += 0.02  # ten times the period: the trajectory runs 0.2 s behind for every 0.02 s of wall time
        before = value(loop, "ee")
        mode = loop.tick(clock.t)
        speed.append(np.linalg.norm(value(loop, "ee") - before) / (2 / RATE_HZ))
        if mode is Mode.IDLE:
            break
    assert mode is Mode.IDLE and loop.events["trajectory_expired"] == 1
    assert loop.streamer.trajectory is None
    assert max(speed) <= LIMITS.max_linear_speed * (1 + 1e-9)  # held where it was, no catch-up jump
    held = value(loop, "ee")
    for _ in range(10):
        clock.t += 1 / RATE_HZ
        loop.tick(clock.t)
    np.testing.assert_array_equal(value(loop, "ee"), held)


def test_max_trajectory_lag_is_validated():
    """0 would drop every chunk at its first clipped tick; 1e12 would never drop a stalled one."""
    assert LoopConfig(max_trajectory_lag=0.1).max_trajectory_lag == 0.1
    assert LoopConfig(max_trajectory_lag=100).max_trajectory_lag == 100
    for value in (float("nan"), float("inf"), 0.0, 0.09, 100.5, 1e12, -1.0):
        with pytest.raises(ArmConfigError, match=rf"^LoopConfig.max_trajectory_lag \({value}\) must be in "
                                                  r"0.1..100 \(a fraction of the trajectory's span\)$"):
            LoopConfig(max_trajectory_lag=value)
