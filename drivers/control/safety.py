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
control loop also slows the trajectory's clock when the command falls behind: :mod:`drivers.control.streamer`.)

Speeds and accelerations are finite differences over ``dt``: velocity = (new - previous) / dt. Because
the acceleration steps only move the velocity toward the speed-limited one, the speed limit still holds
after them. A stop (reject or hold) is always allowed, whatever the acceleration limit.

The arithmetic runs arm by arm on Python floats: on rows of three, numpy's per-call overhead (about a
microsecond per operation) cost a 500 Hz tick most of its budget, where the same formulas on floats take a
few tens of microseconds. ``tests/support/envelope_reference.py`` states the envelope on whole numpy arrays;
the tests hold the two to the same decisions and values.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, fields, replace
from functools import cached_property
from typing import Dict, List, Optional, Tuple

import numpy as np

from drivers.arm import ArmCapabilities, ArmConfigError, Box, JointLimit, Target
from drivers import quaternion
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
    """Limits for one controller. Rates are per second; every limit must be finite, at least
    :data:`~drivers.physical_ranges.SAFETY_LIMIT_MIN` (0.001) and within its physical range
    (:data:`drivers.physical_ranges.SAFETY_LIMIT_MAX`: 3 m/s, 2π rad/s, 20 m/s², 50 rad/s², 20 /s, 50 rad/s²),
    so that no configuration can switch the envelope off, nor stop the arm for good.

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
    def box_lists(self) -> Tuple[List[List[float]], List[List[float]]]:
        """Workspace lower and upper corners as [A][3] lists (the envelope's per-tick arithmetic)."""
        lower, upper = self.box_arrays
        return lower.tolist(), upper.tolist()

    @cached_property
    def joint_lists(self) -> Tuple[List[float], List[float], List[float]]:
        """Joint lower limits, upper limits and velocity limits as lists."""
        return tuple(a.tolist() for a in self.joint_arrays)  # type: ignore[return-value]

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
    if not (math.isfinite(dt) and dt > 0):
        raise ArmConfigError(f"enforce: dt must be finite and > 0 s, got {dt!r}")
    dt = float(dt)
    reason = _rejection(wanted, state.target, limits)
    if reason is None:
        try:
            result = _clip(wanted, state, dt, limits, reference)
        except (ArithmeticError, ValueError):  # overflow, division by zero, floor of a non-finite value
            reason = "nonfinite"
        else:
            if result is not None:
                return result
            reason = "nonfinite"
    return SafetyResult(state.target, EnvelopeState.at_rest(state.target), rejected=reason)


def _clip(wanted: Target, state: EnvelopeState, dt: float, limits: SafetyLimits,
          reference: Optional[ReferenceVelocity]) -> Optional[SafetyResult]:
    """The clipped target and state, or None if any value came out non-finite."""
    clipped: list = []
    previous = state.target
    if wanted.space == "ee":
        n = previous.n_arms
        v_ref, w_ref = _reference(reference, (n, 3), ee=True)
        lower, upper = limits.box_lists
        pos, vel = _clip_position(wanted.position.tolist(), v_ref, previous.position.tolist(),
                                  state.velocity.tolist(), lower, upper, dt, limits, clipped)
        quat, omega = _clip_rotation(wanted.quaternion.tolist(), w_ref, previous.quaternion.tolist(),
                                     state.angular_velocity.tolist(), dt, limits, clipped)
        grip = _clip_gripper(wanted.gripper.tolist(), previous.gripper.tolist(), dt, limits, clipped)
        if not _all_finite(pos, vel, quat, omega, [grip]):
            return None
        target = Target.ee(pos, quat, grip)
        return SafetyResult(target, EnvelopeState(target, np.array(vel), np.array(omega)), tuple(clipped))
    v_ref, _ = _reference(reference, state.velocity.shape, ee=False)
    joints, vel = _clip_joints(wanted.joints.tolist(), v_ref[0], previous.joints.tolist(), state.velocity.tolist(),
                               dt, limits, clipped)
    grip = _clip_gripper(wanted.gripper.tolist(), previous.gripper.tolist(), dt, limits, clipped)
    if not _all_finite([joints, vel, grip]):
        return None
    target = Target.joint(joints, grip)
    return SafetyResult(target, EnvelopeState(target, np.array(vel), state.angular_velocity), tuple(clipped))


def _all_finite(*groups: List[List[float]]) -> bool:
    return all(math.isfinite(x) for rows in groups for row in rows for x in row)


def _rejection(wanted: Target, previous: Target, limits: SafetyLimits) -> Optional[str]:
    if wanted.space != previous.space or wanted.n_arms != previous.n_arms:
        return "shape"
    if wanted.space == "joint" and wanted.joints.shape != (len(limits.joint_limits),):
        return "shape"
    values = wanted.to_vector().tolist()
    if not all(math.isfinite(x) for x in values):
        return "nonfinite"
    if any(g < 0 or g > 1 for g in wanted.gripper.tolist()):
        return "range"
    if wanted.space == "ee":
        low, high = _QUAT_NORM_RANGE
        for x, y, z, w in wanted.quaternion.tolist():
            norm = math.sqrt(x * x + y * y + z * z + w * w)
            if norm < low or norm > high:
                return "range"
    return None


def _reference(reference: Optional[ReferenceVelocity], shape: Tuple[int, ...], *, ee: bool
               ) -> Tuple[List[List[float]], List[List[float]]]:
    """(linear, angular) reference rows: ``reference`` where it has the envelope's shapes (linear [A, 3] or
    [J]; angular [A, 3], EE only), zero where missing, mis-shaped or non-finite, clipped into
    ``±MAX_REFERENCE``."""
    rows = shape[0] if ee else 1
    width = shape[1] if ee else shape[0]
    zero = [[0.0] * width for _ in range(rows)]
    if reference is None:
        return zero, [[0.0] * 3 for _ in range(rows)] if ee else []

    def clean(value: object, like: Tuple[int, ...]) -> List[List[float]]:
        array = np.asarray(value, dtype=np.float64)
        if array.shape != like:
            return [[0.0] * like[-1] for _ in range(rows)]
        return [[min(max(x, -MAX_REFERENCE), MAX_REFERENCE) if math.isfinite(x) else 0.0 for x in row]
                for row in array.reshape(rows, -1).tolist()]

    linear = clean(reference.linear, tuple(shape))
    return linear, clean(reference.angular, (rows, 3)) if ee else []


def _reach(distance: float, dt: float, accel: float) -> float:
    """How far one step may go toward a target ``distance`` away and still stop exactly on it.

    The fastest stop in steps of ``dt`` with speed changes of at most ``a dt`` uses the speeds
    ``n a dt + r, (n - 1) a dt + r, ..., r`` (``0 <= r < a dt``), which cover ``dt (a dt n (n + 1) / 2 +
    (n + 1) r)``; solving that for the largest ``n`` and then ``r`` gives the first speed. (The continuous
    ``sqrt(2 a d)`` overshoots by up to ``a dt^2``.)
    """
    units = distance / (accel * dt * dt)
    n = float(math.floor((math.sqrt(1 + 8 * units) - 1) / 2))
    r = (distance / dt - accel * dt * n * (n + 1) / 2) / (n + 1)
    return min(distance, dt * (n * accel * dt + r))


def _norm(v: List[float]) -> float:
    """Euclidean length; an overflow to infinity raises (the caller rejects the target)."""
    total = 0.0
    for x in v:
        total += x * x
    if total == math.inf:
        raise OverflowError("norm overflow")
    return math.sqrt(total)


def _approach(error: List[float], dt: float, accel: float) -> Tuple[List[float], bool]:
    """Correction step along ``error`` (one arm's 3 values, see :func:`_reach`); True if braking."""
    norm = _norm(error)
    reach = _reach(norm, dt, accel)
    scale = reach / max(norm, _EPS)
    return [e * scale for e in error], reach < norm * (1 - _EPS)


def _scale_to(step: List[float], limit: float) -> Tuple[List[float], bool]:
    """``step`` shortened to length ``limit``; True if it was."""
    norm = _norm(step)
    if not norm > limit * (1 + _EPS):
        return step, False
    scale = limit / max(norm, _EPS)
    return [x * scale for x in step], True


def _clip_position(
    wanted: List[List[float]], v_ref: List[List[float]], prev: List[List[float]], vel: List[List[float]],
    lower: List[List[float]], upper: List[List[float]], dt: float, limits: SafetyLimits, clipped: list
) -> Tuple[List[List[float]], List[List[float]]]:
    box_hit = speed_hit = accel_hit = wall_hit = False
    max_step, max_dv, accel = limits.max_linear_speed * dt, limits.max_linear_accel * dt, limits.max_linear_accel
    positions, velocities = [], []
    for w, r, p, v, lo, hi in zip(wanted, v_ref, prev, vel, lower, upper):
        pos = [min(max(x, a), b) for x, a, b in zip(w, lo, hi)]
        box_hit = box_hit or pos != w
        ahead = [ri * dt for ri in r]
        correction, braking = _approach([x - pi - ai for x, pi, ai in zip(pos, p, ahead)], dt, accel)
        step, hit = _scale_to([ai + ci for ai, ci in zip(ahead, correction)], max_step)
        speed_hit = speed_hit or hit
        dv, hit = _scale_to([si / dt - vi for si, vi in zip(step, v)], max_dv)
        accel_hit = accel_hit or hit or braking
        unclipped = [pi + (vi + di) * dt for pi, vi, di in zip(p, v, dv)]
        pos = [min(max(x, min(a, pi)), max(b, pi)) for x, a, b, pi in zip(unclipped, lo, hi, p)]
        wall_hit = wall_hit or pos != unclipped
        positions.append(pos)
        velocities.append([(x - pi) / dt for x, pi in zip(pos, p)])
    if speed_hit:
        clipped.append("linear_speed")
    if accel_hit:
        clipped.append("linear_accel")
    if box_hit or wall_hit:
        clipped.insert(0, "workspace")
    return positions, velocities


def _clip_rotation(
    wanted: List[List[float]], w_ref: List[List[float]], prev: List[List[float]], omega_prev: List[List[float]],
    dt: float, limits: SafetyLimits, clipped: list
) -> Tuple[List[List[float]], List[List[float]]]:
    speed_hit = accel_hit = False
    max_step, max_dw, accel = limits.max_angular_speed * dt, limits.max_angular_accel * dt, limits.max_angular_accel
    quats, omegas = [], []
    for w, r, q, o in zip(wanted, w_ref, prev, omega_prev):
        ahead = [ri * dt for ri in r]
        error = [e - ai for e, ai in zip(quaternion.step_row(q, w), ahead)]  # world frame; to_rotvec normalises
        correction, braking = _approach(error, dt, accel)
        step, hit = _scale_to([ai + ci for ai, ci in zip(ahead, correction)], max_step)
        speed_hit = speed_hit or hit
        d_omega, hit = _scale_to([si / dt - oi for si, oi in zip(step, o)], max_dw)
        accel_hit = accel_hit or hit or braking
        omega = [oi + di for oi, di in zip(o, d_omega)]
        quats.append(list(quaternion.apply_step_row([x * dt for x in omega], q)))
        omegas.append(omega)
    if speed_hit:
        clipped.append("angular_speed")
    if accel_hit:
        clipped.append("angular_accel")
    return quats, omegas


def _clip_gripper(wanted: List[float], prev: List[float], dt: float, limits: SafetyLimits, clipped: list
                  ) -> List[float]:
    max_step = limits.max_gripper_rate * dt
    grip = [min(max(w, p - max_step), p + max_step) for w, p in zip(wanted, prev)]
    if grip != wanted:
        clipped.append("gripper_rate")
    return grip


def _clip_joints(
    wanted: List[float], v_ref: List[float], prev: List[float], vel: List[float], dt: float, limits: SafetyLimits,
    clipped: list
) -> Tuple[List[float], List[float]]:
    lower, upper, max_vel = limits.joint_lists
    accel = limits.max_joint_accel
    q = [min(max(x, a), b) for x, a, b in zip(wanted, lower, upper)]
    limit_hit = q != wanted
    ahead = [ri * dt for ri in v_ref]
    step, braking = [], False
    for x, p, a in zip(q, prev, ahead):
        error = x - p - a
        size = abs(error)
        reach = _reach(size, dt, accel)
        braking = braking or reach < size * (1 - _EPS)
        step.append(a + math.copysign(reach, error) if error != 0 else a)
    ratio = max(abs(s) / (m * dt) for s, m in zip(step, max_vel))
    if ratio > 1 + _EPS:
        step = [s / ratio for s in step]
        clipped.append("joint_speed")
    max_dv = accel * dt
    wanted_dv = [s / dt - v for s, v in zip(step, vel)]
    dv = [min(max(x, -max_dv), max_dv) for x in wanted_dv]
    if braking or dv != wanted_dv:
        clipped.append("joint_accel")
    unclipped = [p + (v + d) * dt for p, v, d in zip(prev, vel, dv)]
    q = [min(max(x, min(a, p)), max(b, p)) for x, a, b, p in zip(unclipped, lower, upper, prev)]
    if limit_hit or q != unclipped:
        clipped.insert(0, "joint_limit")
    return q, [(x - p) / dt for x, p in zip(q, prev)]


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
