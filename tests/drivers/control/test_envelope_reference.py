"""The per-tick envelope (Python floats, arm by arm) against its whole-array numpy statement
(``tests/support/envelope_reference.py``): the same decision — rejection, clip kinds and their order — and the same
command and velocities to rounding, over random targets that track, lag, jump, leave the workspace, turn
fast, carry hostile values, and over odd time steps."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.arm import Box, JointLimit, Target
from drivers.control.safety import EnvelopeState, ReferenceVelocity, SafetyLimits, enforce
from tests.support.envelope_reference import reference_enforce

BOXES = (Box((-0.5, -0.5, 0.0), (0.5, 0.5, 1.0)), Box((-0.4, -0.6, 0.1), (0.6, 0.4, 0.9)))
JOINTS = tuple(JointLimit(-1.0 - 0.2 * i, 1.0 + 0.3 * i, 1.0 + i) for i in range(6))
HOSTILE = [np.nan, np.inf, -np.inf, 1e308, -1e200, 5e-324, -0.0]
ODD_DT = [5e-324, 1e-300, 1e-12, 1e3, 1e300]


def _unit_quats(rng: np.random.Generator, n: int, norm_noise: float) -> np.ndarray:
    q = rng.normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True) * (1 + rng.uniform(-norm_noise, norm_noise, (n, 1)))


def _spoil(rng: np.random.Generator, values: np.ndarray) -> np.ndarray:
    """``values`` with one element replaced by a hostile scalar."""
    out = np.array(values, dtype=np.float64)
    out.reshape(-1)[rng.integers(out.size)] = rng.choice(HOSTILE)
    return out


def _case(rng: np.random.Generator, i: int):
    """(wanted, state, dt, limits, reference) of random case ``i``."""
    scale = [0.001, 0.05, 1.0][i % 3]  # tracking, lagging, jumping
    hostile = i % 10 == 9
    if i % 4 < 3:
        arms = 1 + i % 2
        limits = SafetyLimits(workspaces=BOXES[:arms])
        previous = Target.ee(rng.uniform(-0.6, 0.6, (arms, 3)), _unit_quats(rng, arms, 0.0), rng.uniform(0, 1, arms))
        quats = _unit_quats(rng, arms, 0.12) if rng.random() < 0.5 else previous.quaternion
        position = previous.position + rng.normal(0, scale, (arms, 3))
        gripper = np.clip(previous.gripper + rng.normal(0, scale, arms), -0.05, 1.05)
        if hostile:
            position = _spoil(rng, position)
        wanted = Target.ee(position, quats, gripper)
        state = EnvelopeState(previous, rng.normal(0, 0.3, (arms, 3)), rng.normal(0, 1.0, (arms, 3)))
        linear, angular = rng.normal(0, 0.3, (arms, 3)), rng.normal(0, 1.0, (arms, 3))
    else:
        limits = SafetyLimits(joint_limits=JOINTS)
        previous = Target.joint(rng.uniform(-1.5, 1.5, 6), [0.5])
        joints = previous.joints + rng.normal(0, scale, 6)
        gripper = np.clip([0.5 + rng.normal(0, 0.1)], -0.05, 1.05)
        wanted = Target.joint(_spoil(rng, joints) if hostile else joints, gripper)
        state = EnvelopeState(previous, rng.normal(0, 0.5, 6), np.zeros((0, 3)))
        linear, angular = rng.normal(0, 0.5, 6), np.zeros((0, 3))
    if i % 13 == 12:
        linear = _spoil(rng, linear)
    reference = None if i % 5 == 4 else ReferenceVelocity(linear, angular)
    dt = float(rng.choice(ODD_DT)) if i % 17 == 16 else float(rng.choice([0.002, 0.005, 0.01]) * rng.uniform(0.5, 2))
    return wanted, state, dt, limits, reference


@pytest.mark.parametrize("block", range(4))
def test_the_per_tick_envelope_is_its_array_statement(block):
    rng = np.random.default_rng(block)
    decisions = set()
    for i in range(2000):
        wanted, state, dt, limits, reference = _case(rng, i)
        got = enforce(wanted, state, dt=dt, limits=limits, reference=reference)
        want = reference_enforce(wanted, state, dt=dt, limits=limits, reference=reference)
        assert (got.rejected, got.clipped) == (want.rejected, want.clipped), f"case {block}/{i}"
        np.testing.assert_allclose(got.target.to_vector(), want.target.to_vector(), rtol=1e-12, atol=1e-13,
                                   err_msg=f"case {block}/{i}")
        np.testing.assert_allclose(got.state.velocity, want.state.velocity, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(got.state.angular_velocity, want.state.angular_velocity, rtol=1e-9, atol=1e-10)
        decisions.add(got.rejected or ",".join(got.clipped) or "untouched")
    # the cases reach every kind of decision the two could disagree on
    assert {"untouched", "nonfinite", "range"} <= decisions
    assert {kind for d in decisions for kind in d.split(",")} >= {
        "workspace", "linear_speed", "linear_accel", "angular_speed", "angular_accel", "gripper_rate",
        "joint_limit", "joint_speed", "joint_accel"}


@pytest.mark.parametrize("space", ["ee", "joint"])
def test_the_two_agree_along_a_chase(space):
    """Steps fed back into the envelope (each step from the reference's state): the command accelerates,
    cruises at the speed limit and brakes onto a far target, so braking happens without an acceleration clip
    too — the state random cases rarely reach."""
    rng = np.random.default_rng(7)
    braking_only = 0
    for run in range(16):
        if space == "ee":
            limits = SafetyLimits(workspaces=BOXES[:1])
            start = Target.ee(rng.uniform(-0.3, 0.3, (1, 3)) + [0, 0, 0.5], _unit_quats(rng, 1, 0.0), [1.0])
            goal = Target.ee(rng.uniform(-0.45, 0.45, (1, 3)) + [0, 0, 0.5], _unit_quats(rng, 1, 0.0), [0.0])
            state = EnvelopeState.at_rest(start)
        else:
            limits = SafetyLimits(joint_limits=JOINTS)
            start, goal = Target.joint(rng.uniform(-0.9, 0.9, 6), [1.0]), Target.joint(rng.uniform(-0.9, 0.9, 6), [0.0])
            state = EnvelopeState.at_rest(start)
        for step in range(300):
            got = enforce(goal, state, dt=0.005, limits=limits)
            want = reference_enforce(goal, state, dt=0.005, limits=limits)
            assert (got.rejected, got.clipped) == (want.rejected, want.clipped), f"run {run} step {step}"
            np.testing.assert_allclose(got.target.to_vector(), want.target.to_vector(), rtol=1e-12, atol=1e-13)
            braking_only += bool(got.clipped) and "linear_speed" not in got.clipped and "joint_speed" not in got.clipped
            state = want.state
    assert braking_only > 0
