"""The safety envelope: each limit clips exactly as documented, bad input is rejected, counts add up."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from drivers.arm import ArmCapabilities, ArmConfigError, Box, JointLimit, Target
from drivers import quaternion
from drivers.control.safety import EnvelopeState, InterventionCounter, ReferenceVelocity, SafetyLimits, enforce
from drivers.physical_ranges import SAFETY_LIMIT_MAX, SAFETY_LIMIT_MIN

IDENTITY = [0.0, 0.0, 0.0, 1.0]
BOX = Box((-0.5, -0.5, 0.0), (0.5, 0.5, 1.0))
DT = 0.01
#: A step long enough that, with the loosest limits, only the limit under test binds.
LONG_DT = 0.2


def loose(**kw) -> SafetyLimits:
    """The loosest limits allowed (each at its physical maximum), to isolate the one under test."""
    base = dict({name: maximum for name, (maximum, _) in SAFETY_LIMIT_MAX.items()}, workspaces=(BOX,))
    base.update(kw)
    return SafetyLimits(**base)


def ee(pos=(0.0, 0.0, 0.5), quat=IDENTITY, grip=1.0) -> Target:
    return Target.ee([pos], [quat], [grip])


def rest(target: Target) -> EnvelopeState:
    return EnvelopeState.at_rest(target)


def test_workspace_clip():
    r = enforce(ee((0.7, -0.1, -0.2)), rest(ee()), dt=2.5 * LONG_DT, limits=loose())
    np.testing.assert_allclose(r.target.position, [[0.5, -0.1, 0.0]])
    assert r.clipped == ("workspace",) and r.rejected is None


def test_linear_speed_keeps_direction():
    r = enforce(ee((0.3, 0.4, 0.5)), rest(ee()), dt=LONG_DT, limits=loose(max_linear_speed=0.5))
    np.testing.assert_allclose(r.target.position, [[0.06, 0.08, 0.5]], atol=1e-15)
    np.testing.assert_allclose(r.state.velocity, [[0.3, 0.4, 0.0]])
    assert r.clipped == ("linear_speed",)


def test_linear_accel():
    state = EnvelopeState(ee(), np.array([[0.1, 0.0, 0.0]]), np.zeros((1, 3)))
    r = enforce(ee((0.004, 0.0, 0.5)), state, dt=DT, limits=loose(max_linear_accel=5.0))  # wants 0.4 m/s
    np.testing.assert_allclose(r.state.velocity, [[0.15, 0.0, 0.0]])  # 0.1 + 5 * 0.01
    np.testing.assert_allclose(r.target.position, [[0.0015, 0.0, 0.5]])
    assert r.clipped == ("linear_accel",)


def test_angular_speed_and_accel():
    wanted = Rotation.from_rotvec([0, 0, 0.5]).as_quat()
    r = enforce(ee(quat=wanted), rest(ee()), dt=LONG_DT, limits=loose(max_angular_speed=1.5))
    np.testing.assert_allclose(Rotation.from_quat(r.target.quaternion).as_rotvec(), [[0, 0, 0.3]], atol=1e-12)
    assert r.clipped == ("angular_speed",)
    r = enforce(ee(quat=wanted), rest(ee()), dt=DT, limits=loose(max_angular_accel=30.0))
    np.testing.assert_allclose(r.state.angular_velocity, [[0, 0, 0.3]], atol=1e-12)
    np.testing.assert_allclose(Rotation.from_quat(r.target.quaternion).as_rotvec(), [[0, 0, 0.003]], atol=1e-12)
    assert r.clipped == ("angular_accel",)


def test_gripper_rate():
    r = enforce(ee(grip=0.0), rest(ee(grip=1.0)), dt=DT, limits=loose(max_gripper_rate=2.0))
    np.testing.assert_allclose(r.target.gripper, [0.98])
    assert r.clipped == ("gripper_rate",)


def test_within_limits_is_untouched():
    wanted = ee((0.0004, 0.0, 0.5), Rotation.from_rotvec([0, 0.001, 0]).as_quat(), 0.99)
    r = enforce(wanted, rest(ee()), dt=DT, limits=SafetyLimits(workspaces=(BOX,)))
    assert r.clipped == () and r.rejected is None
    np.testing.assert_allclose(r.target.to_vector(), wanted.to_vector(), atol=1e-12)


def test_previous_command_outside_box_is_walked_back_not_jumped():
    outside = ee((0.9, 0.0, 0.5))
    r = enforce(ee((0.9, 0.0, 0.5)), rest(outside), dt=LONG_DT, limits=loose(max_linear_speed=0.5))
    np.testing.assert_allclose(r.target.position, [[0.8, 0.0, 0.5]])
    assert r.clipped == ("workspace", "linear_speed")


@pytest.mark.parametrize(
    "wanted, reason",
    [
        (ee((np.nan, 0.0, 0.5)), "nonfinite"),
        (ee(grip=np.inf), "nonfinite"),
        (ee(quat=[0, 0, 0, np.nan]), "nonfinite"),
        (ee(grip=1.2), "range"),
        (ee(quat=[0, 0, 0, 0.5]), "range"),
        (Target.ee([[0, 0, 0.5]] * 2, [IDENTITY] * 2, [1, 1]), "shape"),
        (Target.joint([0.0], [1.0]), "shape"),
    ],
)
def test_rejected_input_holds_the_previous_command(wanted, reason):
    state = EnvelopeState(ee((0.1, 0.1, 0.5)), np.array([[0.2, 0, 0]]), np.array([[0, 0, 0.1]]))
    r = enforce(wanted, state, dt=DT, limits=SafetyLimits(workspaces=(BOX,)))
    assert r.rejected == reason and r.clipped == ()
    np.testing.assert_array_equal(r.target.to_vector(), state.target.to_vector())
    np.testing.assert_array_equal(r.state.velocity, 0.0)
    np.testing.assert_array_equal(r.state.angular_velocity, 0.0)


JOINTS = (JointLimit(-1.0, 1.0, 1.0), JointLimit(-2.0, 2.0, 2.0))


def jt(q, grip=1.0) -> Target:
    return Target.joint(q, [grip])


def test_joint_limits_speed_and_accel():
    lim = loose(joint_limits=JOINTS, workspaces=())
    r = enforce(jt([1.5, -2.5]), rest(jt([0.99, -1.99])), dt=2 * DT, limits=lim)
    np.testing.assert_allclose(r.target.joints, [1.0, -2.0])
    assert r.clipped == ("joint_limit",)
    # joint 0 wants 2x its speed, joint 1 0.5x: both scaled by 2 so the direction is kept
    r = enforce(jt([0.1, 0.05]), rest(jt([0.0, 0.0])), dt=5 * DT, limits=lim)
    np.testing.assert_allclose(r.target.joints, [0.05, 0.025])
    assert r.clipped == ("joint_speed",)
    r = enforce(jt([0.01, 0.0]), rest(jt([0.0, 0.0])), dt=DT, limits=loose(joint_limits=JOINTS, max_joint_accel=20.0))
    np.testing.assert_allclose(r.state.velocity, [0.2, 0.0])
    np.testing.assert_allclose(r.target.joints, [0.002, 0.0])
    assert r.clipped == ("joint_accel",)
    r = enforce(jt([np.nan, 0.0]), rest(jt([0.0, 0.0])), dt=DT, limits=lim)
    assert r.rejected == "nonfinite"


def test_counter_tallies_by_kind():
    counter = InterventionCounter()
    lim = loose(max_linear_speed=0.1)
    for wanted in (ee((0.4, 0, 0.5)), ee((np.nan, 0, 0.5)), ee((0.9, 0, 0.5)), ee()):
        counter.add(enforce(wanted, rest(ee()), dt=LONG_DT, limits=lim))
    counts = counter.as_dict()
    nonzero = {k: v for k, v in counts.items() if v}
    assert nonzero == {"commands": 4, "linear_speed": 2, "rejected_nonfinite": 1, "workspace": 1}
    assert list(counts)[:4] == ["commands", "rejected_shape", "rejected_nonfinite", "rejected_range"]
    assert counts["joint_accel"] == 0


def test_limits_validation_and_merge():
    with pytest.raises(ArmConfigError, match="max_linear_speed must be finite, got inf"):
        SafetyLimits(max_linear_speed=float("inf"))
    with pytest.raises(ArmConfigError, match=r"^SafetyLimits.max_linear_speed must be at most 3 m/s, got 1000000000.0 "
                                             r"\(allowed 0.001 <= value <= 3 m/s\)$"):
        SafetyLimits(max_linear_speed=1e9)  # would switch the speed limit off
    caps = ArmCapabilities("ee", 1, workspaces=(Box((0.0, -1.0, 0.0), (1.0, 1.0, 1.0)),))
    merged = SafetyLimits(workspaces=(BOX,)).for_arm(caps)
    assert merged.workspaces == (Box((0.0, -0.5, 0.0), (0.5, 0.5, 1.0)),)
    with pytest.raises(ArmConfigError, match="needs a workspace box per arm"):
        SafetyLimits().for_arm(ArmCapabilities("ee", 1))
    with pytest.raises(ArmConfigError, match="do not overlap"):
        SafetyLimits(workspaces=(Box((2, 2, 2), (3, 3, 3)),)).for_arm(caps)
    jcaps = ArmCapabilities("joint", 1, joint_limits=(JointLimit(-3, 3, 5), JointLimit(-3, 3, 1)))
    merged = SafetyLimits(joint_limits=JOINTS).for_arm(jcaps)
    assert merged.joint_limits == (JointLimit(-1, 1, 1), JointLimit(-2, 2, 1))
    with pytest.raises(ArmConfigError, match="controller has 2 joints, config 1"):
        SafetyLimits(joint_limits=JOINTS[:1]).for_arm(jcaps)


@pytest.mark.parametrize("name", list(SAFETY_LIMIT_MAX))
def test_every_limit_is_refused_beyond_its_physical_range(name):
    maximum, unit = SAFETY_LIMIT_MAX[name]
    assert getattr(SafetyLimits(**{name: maximum}), name) == maximum
    assert getattr(SafetyLimits(**{name: SAFETY_LIMIT_MIN}), name) == SAFETY_LIMIT_MIN
    for value in (maximum * 1.001, 1e9, float("nan"), 0.0, -1.0, 1e-300, SAFETY_LIMIT_MIN * 0.999):
        allowed = re.escape(f"(allowed {SAFETY_LIMIT_MIN:g} <= value <= {maximum:.6g} {unit})")
        with pytest.raises(ArmConfigError, match=rf"^SafetyLimits.{name} must .*{allowed}$"):
            SafetyLimits(**{name: value})


# -- properties ---------------------------------------------------------------------------------------

LIMITS = SafetyLimits(workspaces=(BOX,))
any_float = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-2.0, 2.0))
vec3 = st.tuples(any_float, any_float, any_float)
quat4 = st.tuples(any_float, any_float, any_float, any_float)
inside = st.tuples(st.floats(-0.5, 0.5), st.floats(-0.5, 0.5), st.floats(0.0, 1.0))
unit_vel = st.tuples(st.floats(-1, 1), st.floats(-1, 1), st.floats(-1, 1)).map(
    lambda v: np.asarray(v) / max(1.0, np.linalg.norm(v))
)


@settings(max_examples=300, deadline=None)
@given(pos=vec3, quat=quat4, grip=any_float, prev=inside, v=unit_vel, w=unit_vel,
       prev_rot=st.tuples(st.floats(-3, 3), st.floats(-3, 3), st.floats(-3, 3)), prev_grip=st.floats(0, 1),
       dt=st.floats(0.001, 0.05))
def test_ee_output_always_inside_the_envelope(pos, quat, grip, prev, v, w, prev_rot, prev_grip, dt):
    prev_q = Rotation.from_rotvec(prev_rot).as_quat()
    velocity, omega = v[None] * LIMITS.max_linear_speed, w[None] * LIMITS.max_angular_speed
    state = EnvelopeState(ee(prev, prev_q, prev_grip), velocity, omega)
    r = enforce(Target.ee([pos], [quat], [grip]), state, dt=dt, limits=LIMITS)
    out = r.target
    assert np.isfinite(out.to_vector()).all()
    assert np.all(out.position >= np.array(BOX.lower) - 1e-12) and np.all(out.position <= np.array(BOX.upper) + 1e-12)
    assert np.linalg.norm(out.position - state.target.position) <= LIMITS.max_linear_speed * dt * (1 + 1e-9) + 1e-15
    assert np.linalg.norm(out.quaternion) == pytest.approx(1.0, abs=1e-9)
    angle = (Rotation.from_quat(out.quaternion) * Rotation.from_quat(prev_q).inv()).magnitude()[0]
    assert angle <= LIMITS.max_angular_speed * dt * (1 + 1e-6) + 1e-12
    assert 0.0 <= out.gripper[0] <= 1.0
    assert abs(out.gripper[0] - prev_grip) <= LIMITS.max_gripper_rate * dt * (1 + 1e-9)
    if r.rejected is None and "workspace" not in r.clipped:
        dv = np.linalg.norm(r.state.velocity - state.velocity)
        assert dv <= LIMITS.max_linear_accel * dt * (1 + 1e-6) + 1e-12


JLIMITS = SafetyLimits(joint_limits=JOINTS)


@settings(max_examples=200, deadline=None)
@given(q=st.tuples(any_float, any_float), grip=any_float, prev=st.tuples(st.floats(-1, 1), st.floats(-2, 2)),
       v=st.tuples(st.floats(-1, 1), st.floats(-2, 2)), dt=st.floats(0.001, 0.05))
def test_joint_output_always_inside_the_envelope(q, grip, prev, v, dt):
    state = EnvelopeState(jt(prev, 0.5), np.asarray(v), np.zeros((0, 3)))
    r = enforce(Target.joint(q, [grip]), state, dt=dt, limits=JLIMITS)
    out = r.target.joints
    assert np.isfinite(r.target.to_vector()).all()
    assert -1.0 <= out[0] <= 1.0 and -2.0 <= out[1] <= 2.0
    step = np.abs(out - np.asarray(prev))
    assert np.all(step <= np.array([1.0, 2.0]) * dt * (1 + 1e-9) + 1e-15)
    assert 0.0 <= r.target.gripper[0] <= 1.0


def test_braking_stops_exactly_on_a_target_it_approaches_fast():
    """Moving at 0.4 m/s toward a target 8 mm away (stopping needs 16 mm at 5 m/s^2): decelerate at the limit,
    never pass it, and never come back (a plain "error / dt" chase would overshoot and ring)."""
    lim = loose(max_linear_accel=5.0)
    state = EnvelopeState(ee((0.0, 0.0, 0.5)), np.array([[0.4, 0.0, 0.0]]), np.zeros((1, 3)))
    target, xs = ee((0.008, 0.0, 0.5)), []
    for _ in range(200):
        r = enforce(target, state, dt=DT, limits=lim)
        dv = np.linalg.norm(r.state.velocity - state.velocity)
        assert dv <= 5.0 * DT * (1 + 1e-9)
        state = r.state
        xs.append(state.target.position[0, 0])
    xs = np.array(xs)
    assert xs.max() > 0.008  # too fast to stop in time: some overshoot is physics ...
    assert xs.max() - 0.008 < 0.016 - 0.008 + 5.0 * DT**2  # ... but no more than braking at the limit gives
    assert xs[-1] == pytest.approx(0.008, abs=1e-12)
    # a target far ahead: the discrete braking curve decelerates early enough to stop on it exactly
    state, far, xs = rest(ee((0.0, 0.0, 0.5))), ee((0.2, 0.0, 0.5)), []
    for _ in range(300):
        state = enforce(far, state, dt=DT, limits=loose(max_linear_accel=5.0, max_linear_speed=0.5)).state
        xs.append(state.target.position[0, 0])
    assert max(xs) <= 0.2 + 1e-12 and (np.diff(xs) >= -1e-12).all() and xs[-1] == pytest.approx(0.2, abs=1e-12)


def test_a_moving_reference_is_tracked_exactly_and_reported_clean():
    """With the trajectory's velocity given, a target moving at 0.3 m/s and 1 rad/s is hit on every step."""
    lim = loose(max_linear_accel=5.0, max_angular_accel=30.0, max_linear_speed=0.5, max_angular_speed=1.5)
    v, w = np.array([[0.3, 0.0, 0.0]]), np.array([[0.0, 0.0, 1.0]])
    state = EnvelopeState(ee(), v, w)
    reference = ReferenceVelocity(v, w)
    for k in range(1, 50):
        quat = Rotation.from_rotvec([0, 0, k * DT]).as_quat()
        r = enforce(ee((0.3 * k * DT, 0.0, 0.5), quat=quat), state, dt=DT, limits=lim, reference=reference)
        np.testing.assert_allclose(r.target.position, [[0.3 * k * DT, 0.0, 0.5]], atol=1e-12)
        assert quaternion.angle_between(r.target.quaternion, quat[None])[0] < 1e-9
        assert r.clipped == ()
        state = r.state
    # without it the same target is treated as a pose to stop on: the command brakes and falls behind
    r = enforce(ee((0.3 * 50 * DT, 0.0, 0.5)), EnvelopeState(ee((0.3 * 49 * DT, 0.0, 0.5)), v, w), dt=DT, limits=lim)
    assert r.state.velocity[0, 0] < 0.3 and "linear_accel" in r.clipped


def test_joint_accel_is_clipped_per_joint_so_braking_is_kept():
    """Joint 0 must brake hard toward its target while joint 1 wants to accelerate: joint 0 still brakes at
    the full limit (a uniform scale would weaken it by joint 1's demand and overshoot)."""
    lim = loose(joint_limits=(JointLimit(-3.0, 3.0, 10.0),) * 2, workspaces=(), max_joint_accel=20.0)
    state = EnvelopeState(jt([0.0, 0.0]), np.array([1.0, 0.0]), np.zeros((0, 3)))
    r = enforce(jt([0.01, 2.0]), state, dt=DT, limits=lim)
    np.testing.assert_allclose(r.state.velocity, [1.0 - 0.2, 0.2])  # both at |dv| = a dt (uniform: 0.99, 0.2)
    assert r.clipped == ("joint_accel",)
    q, positions = state, []
    for _ in range(100):
        q = enforce(jt([0.04, 0.0]), q, dt=DT, limits=lim).state  # stopping from 1 rad/s takes 0.03
        positions.append(q.target.joints[0])
    assert max(positions) <= 0.04 + 1e-12 and positions[-1] == pytest.approx(0.04, abs=1e-12)
