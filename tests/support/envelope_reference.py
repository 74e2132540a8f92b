"""The safety envelope restated on numpy arrays, all arms at once: the reference that
``tests/drivers/control/test_envelope_reference.py`` holds :func:`drivers.control.safety.enforce` to.

:mod:`drivers.control.safety` computes each tick on Python floats, arm by arm (numpy's per-call overhead on rows of
three cost a 500 Hz tick most of its budget); this is the same envelope (module docstring of
:mod:`drivers.control.safety`) written as whole-array operations, with numpy's floating-point error states turning
an overflow into a rejection. The two must agree on every decision (rejection, clip kinds and their order)
and on every value to rounding.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from drivers.arm import ArmConfigError, Target
from drivers import quaternion
from drivers.control.safety import _EPS, _QUAT_NORM_RANGE, MAX_REFERENCE, EnvelopeState, ReferenceVelocity, SafetyLimits, \
    SafetyResult


def reference_enforce(
    wanted: Target,
    state: EnvelopeState,
    *,
    dt: float,
    limits: SafetyLimits,
    reference: Optional[ReferenceVelocity] = None,
) -> SafetyResult:
    """What :func:`drivers.control.safety.enforce` must return for the same arguments, computed on whole arrays."""
    if not (np.isfinite(dt) and dt > 0):
        raise ArmConfigError(f"enforce: dt must be finite and > 0 s, got {dt!r}")
    with np.errstate(over="ignore", invalid="ignore"):  # huge inputs are rejected here, not warned about
        reason = _rejection(wanted, state.target, limits)
    if reason is None:
        try:
            with np.errstate(over="raise", invalid="raise", divide="raise"):
                result = _clip(wanted, state, dt, limits, _reference(reference, state))
        except ArithmeticError:  # numpy's FloatingPointError, or Python's own overflow / division by zero
            reason = "nonfinite"
        else:
            if _finite(result):
                return result
            reason = "nonfinite"
    return SafetyResult(state.target, EnvelopeState.at_rest(state.target), rejected=reason)


def _finite(result: SafetyResult) -> bool:
    state = result.state
    return bool(np.isfinite(result.target.to_vector()).all() and np.isfinite(state.velocity).all()
                and np.isfinite(state.angular_velocity).all())


def _clip(
    wanted: Target, state: EnvelopeState, dt: float, limits: SafetyLimits, ref: ReferenceVelocity
) -> SafetyResult:
    clipped: list = []
    if wanted.space == "ee":
        pos, vel = _clip_position(wanted.position, ref.linear, state, dt, limits, clipped)
        quat, omega = _clip_rotation(wanted.quaternion, ref.angular, state, dt, limits, clipped)
        grip = _clip_gripper(wanted.gripper, state.target.gripper, dt, limits, clipped)
        target = Target.ee(pos, quat, grip)
        return SafetyResult(target, EnvelopeState(target, vel, omega), tuple(clipped))
    joints, vel = _clip_joints(wanted.joints, ref.linear, state, dt, limits, clipped)
    grip = _clip_gripper(wanted.gripper, state.target.gripper, dt, limits, clipped)
    target = Target.joint(joints, grip)
    return SafetyResult(target, EnvelopeState(target, vel, state.angular_velocity), tuple(clipped))


def _rejection(wanted: Target, previous: Target, limits: SafetyLimits) -> Optional[str]:
    if wanted.space != previous.space or wanted.n_arms != previous.n_arms:
        return "shape"
    if wanted.space == "joint" and wanted.joints.shape != (len(limits.joint_limits),):
        return "shape"
    values = wanted.to_vector()
    if not np.isfinite(values).all():
        return "nonfinite"
    if ((wanted.gripper < 0) | (wanted.gripper > 1)).any():
        return "range"
    if wanted.space == "ee":
        norm = np.linalg.norm(wanted.quaternion, axis=1)
        if ((norm < _QUAT_NORM_RANGE[0]) | (norm > _QUAT_NORM_RANGE[1])).any():
            return "range"
    return None


def _reference(reference: Optional[ReferenceVelocity], state: EnvelopeState) -> ReferenceVelocity:
    """``reference`` with the envelope's shapes, zero where missing, mis-shaped or non-finite, and clipped
    into ``±MAX_REFERENCE``."""
    rest = EnvelopeState.at_rest(state.target)
    if reference is None:
        return ReferenceVelocity(rest.velocity, rest.angular_velocity)

    def clean(value: np.ndarray, like: np.ndarray) -> np.ndarray:
        value = np.asarray(value, dtype=np.float64)
        if value.shape != like.shape:
            return like
        return np.clip(np.where(np.isfinite(value), value, 0.0), -MAX_REFERENCE, MAX_REFERENCE)

    return ReferenceVelocity(clean(reference.linear, rest.velocity), clean(reference.angular, rest.angular_velocity))


def _reach(distance: np.ndarray, dt: float, accel: float) -> np.ndarray:
    """How far one step may go toward a target ``distance`` away and still stop exactly on it.

    The fastest stop in steps of ``dt`` with speed changes of at most ``a dt`` uses the speeds
    ``n a dt + r, (n - 1) a dt + r, ..., r`` (``0 <= r < a dt``), which cover ``dt (a dt n (n + 1) / 2 +
    (n + 1) r)``; solving that for the largest ``n`` and then ``r`` gives the first speed. (The continuous
    ``sqrt(2 a d)`` overshoots by up to ``a dt^2``.)
    """
    units = distance / (accel * dt * dt)
    n = np.floor((np.sqrt(1 + 8 * units) - 1) / 2)
    r = (distance / dt - accel * dt * n * (n + 1) / 2) / (n + 1)
    return np.minimum(distance, dt * (n * accel * dt + r))


def _approach_rows(error: np.ndarray, dt: float, accel: float) -> Tuple[np.ndarray, bool]:
    """Correction step along each row of ``error`` [A, 3] (see :func:`_reach`); True if braking."""
    norm = np.sqrt(np.einsum("ai,ai->a", error, error))[:, None]
    reach = _reach(norm, dt, accel)
    braking = bool((reach < norm * (1 - _EPS)).any())
    return error * (reach / np.maximum(norm, _EPS)), braking


def _approach_each(error: np.ndarray, dt: float, accel: float) -> Tuple[np.ndarray, bool]:
    """:func:`_approach_rows` for every element of ``error`` on its own (joints)."""
    size = np.abs(error)
    reach = _reach(size, dt, accel)
    return np.sign(error) * reach, bool((reach < size * (1 - _EPS)).any())


def _scale_to(step: np.ndarray, limit: float) -> Tuple[np.ndarray, bool]:
    """Rows of ``step`` [A, 3] shortened to length ``limit``; True if any was."""
    norm = np.sqrt(np.einsum("ai,ai->a", step, step))[:, None]
    over = norm > limit * (1 + _EPS)
    if not over.any():
        return step, False
    return np.where(over, step * (limit / np.maximum(norm, _EPS)), step), True


def _clip_box(x: np.ndarray, lower: np.ndarray, upper: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """``x`` into [lower, upper] widened to contain ``previous`` (never further out than before)."""
    return np.clip(x, np.minimum(lower, previous), np.maximum(upper, previous))


def _clip_position(
    wanted: np.ndarray, v_ref: np.ndarray, state: EnvelopeState, dt: float, limits: SafetyLimits, clipped: list
) -> Tuple[np.ndarray, np.ndarray]:
    prev = state.target.position
    lower, upper = limits.box_arrays
    pos = np.clip(wanted, lower, upper)
    box_hit = bool((pos != wanted).any())
    correction, braking = _approach_rows(pos - prev - v_ref * dt, dt, limits.max_linear_accel)
    step, hit = _scale_to(v_ref * dt + correction, limits.max_linear_speed * dt)
    if hit:
        clipped.append("linear_speed")
    dv, hit = _scale_to(step / dt - state.velocity, limits.max_linear_accel * dt)
    if hit or braking:
        clipped.append("linear_accel")
    unclipped = prev + (state.velocity + dv) * dt
    pos = _clip_box(unclipped, lower, upper, prev)
    if box_hit or (pos != unclipped).any():
        clipped.insert(0, "workspace")
    return pos, (pos - prev) / dt


def _clip_rotation(
    wanted: np.ndarray, w_ref: np.ndarray, state: EnvelopeState, dt: float, limits: SafetyLimits, clipped: list
) -> Tuple[np.ndarray, np.ndarray]:
    prev = state.target.quaternion
    error = quaternion.step(prev, wanted) - w_ref * dt  # world frame; to_rotvec normalises
    correction, braking = _approach_rows(error, dt, limits.max_angular_accel)
    step, hit = _scale_to(w_ref * dt + correction, limits.max_angular_speed * dt)
    if hit:
        clipped.append("angular_speed")
    d_omega, hit = _scale_to(step / dt - state.angular_velocity, limits.max_angular_accel * dt)
    if hit or braking:
        clipped.append("angular_accel")
    omega = state.angular_velocity + d_omega
    return quaternion.apply_step(omega * dt, prev), omega


def _clip_gripper(wanted: np.ndarray, prev: np.ndarray, dt: float, limits: SafetyLimits, clipped: list) -> np.ndarray:
    max_step = limits.max_gripper_rate * dt
    grip = np.clip(wanted, prev - max_step, prev + max_step)
    if (grip != wanted).any():
        clipped.append("gripper_rate")
    return grip


def _clip_joints(
    wanted: np.ndarray, v_ref: np.ndarray, state: EnvelopeState, dt: float, limits: SafetyLimits, clipped: list
) -> Tuple[np.ndarray, np.ndarray]:
    prev = state.target.joints
    lower, upper, max_vel = limits.joint_arrays
    q = np.clip(wanted, lower, upper)
    limit_hit = bool((q != wanted).any())
    correction, braking = _approach_each(q - prev - v_ref * dt, dt, limits.max_joint_accel)
    step = v_ref * dt + correction
    ratio = np.max(np.abs(step) / (max_vel * dt))
    if ratio > 1 + _EPS:
        step = step / ratio
        clipped.append("joint_speed")
    max_dv = limits.max_joint_accel * dt
    dv = np.clip(step / dt - state.velocity, -max_dv, max_dv)
    if braking or (dv != step / dt - state.velocity).any():
        clipped.append("joint_accel")
    unclipped = prev + (state.velocity + dv) * dt
    q = _clip_box(unclipped, lower, upper, prev)
    if limit_hit or (q != unclipped).any():
        clipped.insert(0, "joint_limit")
    return q, (q - prev) / dt
