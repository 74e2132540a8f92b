"""The safety envelope: the one function every command passes before it reaches an arm.

:func:`enforce` is pure: given the wanted target (and the trajectory's own velocity there), the previous
safe command (with its velocity) and the time step, it returns the command to send, the new envelope state
and what it changed. Nothing here talks to an arm or keeps counters; :class:`InterventionCounter` tallies
results for reporting.

A target is **rejected** (the arm holds the previous safe command, velocity reset to zero) when it has
the wrong space, arm count or joint count (``"shape"``), any non-finite value (``"nonfinite"``), or a
value no limit can repair: a quaternion norm outside 0.9 ... 1.1 or a gripper outside 0 ... 1
(``"range"``). It is also rejected as ``"nonfinite"`` when the arithmetic below meets an overflow, a
division by zero or a non-finite intermediate (an extreme ``dt``): whatever the input, the result is either
finite and inside every limit or the previous safe command. Absurd finite values cannot get that far: the
wanted position is clipped into the workspace (joints into their limits) and the reference velocity into
``±MAX_REFERENCE`` before any arithmetic. Otherwise the target is **clipped**, in this order (each kind
reported once per call):

EE targets, per arm:
  1. position into the workspace box (``"workspace"``);
  2. the approach (below), with the acceleration limit ``max_linear_accel`` (``"linear_accel"`` when the
     braking bound applies);
  3. step length to ``max_linear_speed * dt``, direction kept (``"linear_speed"``);
  4. change of velocity to ``max_linear_accel * dt`` (``"linear_accel"``);
  5. position into the workspace box again, since step 4 may carry the arm past a wall: the workspace wins
     over the acceleration limit. If the previous command was outside the box (an arm that starts outside
     it), an axis may stay outside, but never further out than before, so the arm is walked back in at the
     speed limit instead of jumping;
  6. the same approach, speed and acceleration steps for rotation, on the world-frame rotation vector
     (``"angular_accel"``, ``"angular_speed"``);
  7. gripper change to ``max_gripper_rate * dt`` (``"gripper_rate"``).

Joint targets:
  1. each joint into ``[lower, upper]`` (``"joint_limit"``);
  2. the approach per joint with ``max_joint_accel`` (``"joint_accel"``);
  3. step scaled uniformly (direction in joint space kept) so every joint is within its ``max_velocity``
     (``"joint_speed"``);
  4. change of velocity clipped per joint to ``max_joint_accel * dt`` (``"joint_accel"``): per joint, not
     scaled uniformly, so one joint that must accelerate hard cannot weaken another joint's braking;
  5. into ``[lower, upper]`` again (same rule as EE step 5);
  6. gripper rate as above.

**The approach** (why commands never overshoot a target they fell behind): the wanted target moves with
the trajectory's velocity ``v_ref`` (:class:`ReferenceVelocity`; zero when not given, e.g. a held pose).
The step is ``v_ref * dt`` plus a correction toward the remaining error ``e = wanted - (previous + v_ref *
dt)``, of length ``min(|e|, dt * v_stop(|e|))``, where ``v_stop`` is the speed from which steps of ``dt``
under the acceleration limit ``a`` stop exactly at distance ``|e|`` (about ``sqrt(2 a |e|)``). While
tracking, ``e`` is tiny and the first term wins: the command lands on the target. When the command has
fallen behind (a speed or acceleration clip), the chase brakes in time instead of overshooting and
ringing; a plain "error / dt" chase with only an acceleration limit overshoots by up to ``v^2 / 2a``. (The
control loop also slows the trajectory's clock when the command falls behind: :mod:`drivers.streamer`.)

Speeds and accelerations are finite differences over ``dt``: velocity = (new - previous) / dt. Because
the acceleration steps only move the velocity toward the speed-limited one, the speed limit still holds
after them. A stop (reject or hold) is always allowed, whatever the acceleration limit.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, fields, replace
from functools import cached_property
from typing import Dict, Optional, Tuple

import numpy as np

from drivers import quaternion
from drivers.arm import ArmCapabilities, ArmConfigError, Box, JointLimit, Target
from drivers.physical_ranges import SAFETY_LIMIT_MAX, check_rate

REJECT_KINDS = ("shape", "nonfinite", "range")
CLIP_KINDS = (
    "workspace",
    "linear_speed",
    "linear_accel",
    "angular_speed",
    "angular_accel",
    "gripper_rate",
    "joint_limit",
    "joint_speed",
    "joint_accel",
)
#: Bound (m/s, rad/s, per component) a reference velocity is clipped into before use: far above every limit
#: (:data:`drivers.physical_ranges.SAFETY_LIMIT_MAX`), far below where the arithmetic could overflow.
MAX_REFERENCE = 1e3
_QUAT_NORM_RANGE = (0.9, 1.1)
_EPS = 1e-12


@dataclass(frozen=True)
class SafetyLimits:
    """Limits for one controller. Rates are per second; every limit must be finite, > 0 and within its
    physical range (:data:`drivers.physical_ranges.SAFETY_LIMIT_MAX`: 3 m/s, 2π rad/s, 20 m/s², 50 rad/s²,
    20 /s, 50 rad/s²), so that no configuration can switch the envelope off.

    ``workspaces`` (one :class:`~drivers.arm.Box` per arm) and ``joint_limits`` (one
    :class:`~drivers.arm.JointLimit` per joint) may be left empty here and come from the controller:
    :meth:`for_arm` merges both sources, keeping the tighter value of each.
    """

    max_linear_speed: float = 0.5  # m/s
    max_angular_speed: float = 1.5  # rad/s
    max_linear_accel: float = 5.0  # m/s^2
    max_angular_accel: float = 30.0  # rad/s^2
    max_gripper_rate: float = 2.0  # full range per second
    max_joint_accel: float = 20.0  # rad/s^2 (or m/s^2), every joint
    workspaces: Tuple[Box, ...] = ()
    joint_limits: Tuple[JointLimit, ...] = ()

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name.startswith("max_"):
                why = check_rate(f"SafetyLimits.{f.name}", getattr(self, f.name), *SAFETY_LIMIT_MAX[f.name])
                if why:
                    raise ArmConfigError(why)
        object.__setattr__(self, "workspaces", tuple(self.workspaces))
        object.__setattr__(self, "joint_limits", tuple(self.joint_limits))

    def for_arm(self, caps: ArmCapabilities) -> "SafetyLimits":
        """These limits intersected with what the controller reports; checks they fit ``caps``.

        EE controllers need a workspace box per arm from either source; joint controllers need joint limits
        (they always report them). An empty intersection is an error.
        """
        boxes = _merge_boxes(self.workspaces, caps.workspaces, caps.n_arms)
        joints = _merge_joints(self.joint_limits, caps.joint_limits)
        if caps.space == "ee" and not boxes:
            raise ArmConfigError("SafetyLimits: an EE arm needs a workspace box per arm (config or controller)")
        if caps.space == "joint" and len(joints) != caps.n_joints:
            raise ArmConfigError(f"SafetyLimits.joint_limits: expected {caps.n_joints} joints, got {len(joints)}")
        return replace(self, workspaces=boxes, joint_limits=joints)

    @cached_property
    def box_arrays(self) -> Tuple[np.ndarray, np.ndarray]:
        """Workspace lower and upper corners as [A, 3] arrays."""
        return np.array([b.lower for b in self.workspaces]), np.array([b.upper for b in self.workspaces])

    @cached_property
    def joint_arrays(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Joint lower limits, upper limits and velocity limits as [J] arrays."""
        limits = self.joint_limits
        return (np.array([j.lower for j in limits]), np.array([j.upper for j in limits]),
                np.array([j.max_velocity for j in limits]))


def _merge_boxes(mine: Tuple[Box, ...], theirs: Tuple[Box, ...], n_arms: int) -> Tuple[Box, ...]:
    for name, boxes in (("SafetyLimits.workspaces", mine), ("controller workspaces", theirs)):
        if boxes and len(boxes) != n_arms:
            raise ArmConfigError(f"{name}: expected {n_arms} boxes (one per arm), got {len(boxes)}")
    if not (mine and theirs):
        return mine or theirs
    merged = []
    for arm, (a, b) in enumerate(zip(mine, theirs)):
        lo, hi = np.maximum(a.lower, b.lower), np.minimum(a.upper, b.upper)
        if (lo >= hi).any():
            raise ArmConfigError(f"workspace of arm {arm}: config {a} and controller {b} do not overlap")
        merged.append(Box(tuple(lo), tuple(hi)))
    return tuple(merged)


def _merge_joints(mine: Tuple[JointLimit, ...], theirs: Tuple[JointLimit, ...]) -> Tuple[JointLimit, ...]:
    if not (mine and theirs):
        return mine or theirs
    if len(mine) != len(theirs):
        raise ArmConfigError(f"SafetyLimits.joint_limits: controller has {len(theirs)} joints, config {len(mine)}")
    merged = []
    for j, (a, b) in enumerate(zip(mine, theirs)):
        lo, hi = max(a.lower, b.lower), min(a.upper, b.upper)
        if lo >= hi:
            raise ArmConfigError(f"joint {j}: config range {a.lower}..{a.upper} and controller range "
                                 f"{b.lower}..{b.upper} do not overlap")
        merged.append(JointLimit(lo, hi, min(a.max_velocity, b.max_velocity)))
    return tuple(merged)


@dataclass(frozen=True)
class EnvelopeState:
    """The last safe command and its finite-difference velocities (zero after a stop).

    ``velocity`` is [A, 3] m/s (EE) or [J] (joint); ``angular_velocity`` is [A, 3] rad/s (EE only).
    """

    target: Target
    velocity: np.ndarray
    angular_velocity: np.ndarray

    @classmethod
    def at_rest(cls, target: Target) -> "EnvelopeState":
        if target.space == "ee":
            zero = np.zeros((target.n_arms, 3))
            return cls(target, zero, zero.copy())
        return cls(target, np.zeros(target.joints.shape), np.zeros((0, 3)))


@dataclass(frozen=True)
class SafetyResult:
    """What :func:`enforce` decided: send ``target``; carry ``state`` to the next call."""

    target: Target
    state: EnvelopeState
    clipped: Tuple[str, ...] = ()
    rejected: Optional[str] = None


@dataclass(frozen=True)
class ReferenceVelocity:
    """How the wanted target itself moves: ``linear`` [A, 3] m/s (EE) or [J] (joint), ``angular`` [A, 3]
    rad/s world frame (EE; ignored for joints). Non-finite values count as zero; the rest is clipped into
    ``±MAX_REFERENCE``."""

    linear: np.ndarray
    angular: np.ndarray


def enforce(
    wanted: Target,
    state: EnvelopeState,
    *,
    dt: float,
    limits: SafetyLimits,
    reference: Optional[ReferenceVelocity] = None,
) -> SafetyResult:
    """The safe command for ``wanted`` one step of ``dt`` seconds after ``state`` (see the module docstring).

    ``reference`` is the velocity of the trajectory at ``wanted`` (default: at rest); each component is
    clipped into ``±MAX_REFERENCE`` first. ``limits`` must already fit the arm (:meth:`SafetyLimits.for_arm`).
    Never raises on bad ``wanted`` or ``reference`` values; raises ``ArmConfigError`` only for a non-positive
    or non-finite ``dt``. Any overflow, division by zero or non-finite value met on the way (an extreme
    ``dt``, say) rejects the target as ``"nonfinite"``: a non-finite command is never returned.
    """
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


class InterventionCounter:
    """Counts every rejection and clip by kind, for stats and logs."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.commands = 0

    def add(self, result: SafetyResult) -> None:
        self.commands += 1
        if result.rejected is not None:
            self.counts[f"rejected_{result.rejected}"] += 1
        self.counts.update(result.clipped)

    def as_dict(self) -> Dict[str, int]:
        """``commands`` checked, then the count of every kind (``rejected_<reason>``, then each clip kind)."""
        kinds = [f"rejected_{r}" for r in REJECT_KINDS] + list(CLIP_KINDS)
        return {"commands": self.commands, **{k: self.counts[k] for k in kinds}}
