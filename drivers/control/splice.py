"""Switch from the executing trajectory to a newly arrived chunk without a jump.

:func:`splice` turns a new chunk into the trajectory to execute from ``now`` on:

0. **Smoothing** (``smooth_window``, off by default). The chunk's positions (or joints) are low-pass
   filtered over that many waypoints (:meth:`~drivers.control.trajectory.Trajectory.smoothed`). A learnt policy's
   waypoints jitter by millimetres around its intended path; the interpolator goes through every one, and at
   30 waypoints per second a 1 mm zig-zag asks for accelerations near 5 m/s², which the envelope then clamps
   tick after tick.
1. **Latency.** ``latency = now - obs_timestamp`` (the chunk carries the time of the observation it was
   predicted from). A chunk older than ``max_latency_s`` is rejected (``"too_late"``), one from the future
   too (``"future_observation"``: clocks disagree). With ``anchor="observation"`` the chunk keeps its
   times, so the waypoints meant for the time spent in inference fall in the past; with
   ``anchor="arrival"`` it is shifted later by its latency, so it starts as if observed now and is executed
   in full (X-VLA's own client works this way).
2. **Drop the past.** Waypoints at or before ``now`` are dropped; if none are left the chunk is rejected
   (``"stale"``) and the executing trajectory goes on.
3. **Velocity-limited start.** The new trajectory starts from the last safe command at the time it was
   sent (``command_time``, at most one tick before ``now``: starting it at ``now`` would command a standstill
   for the part of a tick since, a velocity dip the envelope then clips), so position is continuous, with
   the executing trajectory's velocity (see ``initial_velocity`` in
   :mod:`drivers.control.interpolation`). If the first remaining waypoint is too close in time to be reached
   within the speed limits (times ``speed_margin``, the peak-to-mean speed ratio of a rest-to-rest cubic),
   the whole remaining chunk is delayed until it can be.
4. **Policy.**
   - ``"replace"``: from ``now`` on, only the new chunk counts.
   - ``"blend"``: over ``blend_window_s`` the command moves from the executing trajectory to the new one:
     ``(1 - a) * old(t) + a * new(t)`` for position (slerp by ``a`` for rotation; a continuous gripper
     (``"linear"`` sampling) mixes like the position, an open/close one switches at ``a = 0.5``), with ``a`` the smoothstep ``3s^2 - 2s^3`` of the window fraction ``s``, so the hand-over
     itself adds no velocity step. ``new`` is the chunk itself (holding its first waypoint until that is
     due), not the ``"replace"`` trajectory, whose first segment jumps from the command onto the chunk.
     The blend is sampled every ``blend_step_s`` into ordinary waypoints
     (:attr:`SplicePolicy.blend_samples`, at most :data:`MAX_BLEND_SAMPLES`).
     Without an executing trajectory it is the same as ``"replace"``.

A chunk that does not make a valid :class:`~drivers.control.trajectory.Trajectory` from the command (one that
skipped validation, say an unpickled one with an absurd waypoint, or times that collapse when shifted) is
rejected (``"invalid"``) and the executing trajectory goes on. A blend that would not be valid (the executing
trajectory moves too fast for the mix to stay within the waypoint speed bounds) falls back to ``"replace"``,
which always is: it starts from the command within the speed limits.

Whatever this produces still passes the safety envelope, which bounds speed and acceleration per tick.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Literal, Optional, Tuple

import numpy as np

from drivers.arm import ArmConfigError, ArmError, Target
from drivers import quaternion
from drivers.control.interpolation import TrajectorySampler
from drivers.control.safety import SafetyLimits
from drivers.control.trajectory import Trajectory, TrajectoryError

_FUTURE_TOLERANCE_S = 1e-3

#: The allowed range (inclusive) and unit of each number of :class:`SplicePolicy`.
POLICY_RANGES: Dict[str, Tuple[float, float, str]] = {
    "blend_window_s": (0.01, 1.0, "s"),  # X-VLA chunks span 1-10 s; the next one comes with half left
    "blend_step_s": (0.005, 0.1, "s"),  # finer than a 200 Hz tick: the interpolator fills in between anyway
    "max_latency_s": (0.01, 10.0, "s"),
    "speed_margin": (1.0, 10.0, ""),
}
#: The most samples a blend takes: the longest window over the shortest step.
MAX_BLEND_SAMPLES = math.ceil(POLICY_RANGES["blend_window_s"][1] / POLICY_RANGES["blend_step_s"][0])


class SpliceRejected(ArmError):
    """A chunk was not accepted; ``reason`` is one of ``too_late``, ``future_observation``, ``stale``, ``shape``,
    ``invalid``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SplicePolicy:
    """How new chunks take over (see the module docstring). Each number lies in its :data:`POLICY_RANGES`
    range: blend window 0.01-1 s, blend step 0.005-0.1 s (so a blend has at most :data:`MAX_BLEND_SAMPLES`
    samples), latency 0.01-10 s, speed margin 1-10 (so the delay of a chunk's start, margin * distance /
    speed limit, stays finite); ``smooth_window`` 0 or odd 3-99."""

    mode: Literal["replace", "blend"] = "replace"
    blend_window_s: float = 0.2
    blend_step_s: float = 0.01
    anchor: Literal["observation", "arrival"] = "observation"
    max_latency_s: float = 1.0
    speed_margin: float = 1.5
    smooth_window: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("replace", "blend"):
            raise ArmConfigError(f"SplicePolicy.mode: expected 'replace' or 'blend', got {self.mode!r}")
        if self.anchor not in ("observation", "arrival"):
            raise ArmConfigError(f"SplicePolicy.anchor: expected 'observation' or 'arrival', got {self.anchor!r}")
        for name, (lower, upper, unit) in POLICY_RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lower <= value <= upper:
                shown = f"{lower:g} ... {upper:g}" + (f" {unit}" if unit else "")
                raise ArmConfigError(f"SplicePolicy.{name}: expected {shown}, got {value!r}")
        window = self.smooth_window
        if isinstance(window, bool) or not isinstance(window, int) or not (window == 0 or 3 <= window <= 99
                                                                           and window % 2 == 1):
            raise ArmConfigError(f"SplicePolicy.smooth_window must be 0 (off) or an odd integer 3 ... 99, "
                                 f"got {window!r}")

    @property
    def blend_samples(self) -> int:
        """How many samples a blend takes: one per ``blend_step_s`` over the window, at least one."""
        return max(math.ceil(self.blend_window_s / self.blend_step_s), 1)


@dataclass(frozen=True)
class SpliceResult:
    """The trajectory to execute, starting at ``now``, and what happened to the chunk on the way."""

    trajectory: Trajectory
    latency: float  # now - obs_timestamp, s
    dropped: int  # waypoints of the chunk that were already in the past
    delay: float  # s the chunk was postponed so its first segment respects the speed limits


def min_duration(start: Target, end: Target, limits: SafetyLimits) -> float:
    """Shortest time to go from ``start`` to ``end`` without exceeding any speed limit (mean speed)."""
    if start.space == "ee":
        dist = float(np.max(np.linalg.norm(end.position - start.position, axis=1)))
        angle = float(np.max(quaternion.angle_between(start.quaternion, end.quaternion)))
        return max(dist / limits.max_linear_speed, angle / limits.max_angular_speed)
    return float(np.max(np.abs(end.joints - start.joints) / limits.joint_arrays[2]))


def splice(
    new: Trajectory,
    *,
    now: float,
    obs_timestamp: float,
    command: Target,
    current: Optional[TrajectorySampler],
    limits: SafetyLimits,
    policy: SplicePolicy,
    command_time: Optional[float] = None,
) -> SpliceResult:
    """The trajectory that takes over at ``now`` from the last safe ``command``, sent at ``command_time``
    (default ``now``; never later) (module docstring).

    ``current`` samples the executing trajectory, or is ``None``. Raises :class:`SpliceRejected`.
    """
    start = now if command_time is None else min(command_time, now)
    arm_joints = 0 if command.joints is None else command.joints.shape[0]
    if (new.space, new.n_arms, new.n_joints) != (command.space, command.n_arms, arm_joints):
        raise SpliceRejected(
            "shape",
            f"chunk is {new.space!r} with {new.n_arms} arm(s) and {new.n_joints} joint(s); "
            f"the arm takes {command.space!r} with {command.n_arms} arm(s) and {arm_joints} joint(s)",
        )
    latency = now - obs_timestamp
    if latency < -_FUTURE_TOLERANCE_S:
        raise SpliceRejected("future_observation", f"obs_timestamp {obs_timestamp:.6f} is {-latency:.4f} s after now")
    if latency > policy.max_latency_s:
        raise SpliceRejected("too_late", f"chunk latency {latency:.3f} s exceeds max_latency_s={policy.max_latency_s}")
    try:
        if policy.smooth_window:
            new = new.smoothed(policy.smooth_window)
        if policy.anchor == "arrival":
            new = new.shifted(max(latency, 0.0))
        kept = new.after(now)
        if kept is None:
            past = f"all {new.n_waypoints} waypoints are past (the last {now - new.end:.3f} s ago)"
            raise SpliceRejected("stale", past)
        dropped = new.n_waypoints - kept.n_waypoints
        reach = start + policy.speed_margin * min_duration(command, kept.waypoint(0), limits)
        delay = max(reach - kept.start, 0.0)
        if delay > 0:
            kept = kept.shifted(delay)
        velocity = None if current is None else current.velocity(start)
        replaced = kept.prepend(start, command, initial_velocity=velocity)
    except TrajectoryError as exc:
        raise SpliceRejected("invalid", f"chunk does not make a valid trajectory from the command: {exc}") from exc
    if policy.mode == "replace" or current is None:
        return SpliceResult(replaced, latency, dropped, delay)
    try:
        blended = _blend(current, TrajectorySampler(kept, gripper=current.gripper_mode), now=start,
                         policy=policy, velocity=velocity, command=command)
    except TrajectoryError:
        return SpliceResult(replaced, latency, dropped, delay)
    return SpliceResult(blended, latency, dropped, delay)


def _smoothstep(s: np.ndarray) -> np.ndarray:
    return s * s * (3.0 - 2.0 * s)


def _blend(
    old: TrajectorySampler,
    new: TrajectorySampler,
    *,
    now: float,
    policy: SplicePolicy,
    velocity: np.ndarray,
    command: Target,
) -> Trajectory:
    steps = policy.blend_samples
    times = now + policy.blend_window_s * np.arange(steps + 1) / steps
    alphas = _smoothstep(np.arange(1, steps + 1) / steps)
    old_values, old_quats, old_grip = old.at(times[1:])
    new_values, new_quats, new_grip = new.at(times[1:])
    a = alphas.reshape((-1,) + (1,) * (old_values.ndim - 1))
    values = np.concatenate([[command.joints if command.space == "joint" else command.position],
                             (1 - a) * old_values + a * new_values])
    if old.gripper_mode == "linear":  # a continuous gripper fades like the position
        mixed = (1 - alphas[:, None]) * old_grip + alphas[:, None] * new_grip
    else:  # an open/close command has no in-between: it switches half-way
        mixed = np.where(alphas[:, None] >= 0.5, new_grip, old_grip)
    gripper = np.concatenate([[command.gripper], mixed])
    quats = None
    if command.space == "ee":
        fractions = np.repeat(alphas[:, None], command.n_arms, axis=1)
        quats = np.concatenate([[command.quaternion], quaternion.slerp(old_quats, new_quats, fractions)])
    rest = new.trajectory.after(times[-1])
    if rest is not None:
        times = np.concatenate([times, rest.times])
        values = np.concatenate([values, rest.joints if command.space == "joint" else rest.position])
        gripper = np.concatenate([gripper, rest.gripper])
        if quats is not None:
            quats = np.concatenate([quats, rest.quaternion])
    if command.space == "joint":
        return Trajectory.joint(times, values, gripper, initial_velocity=velocity)
    return Trajectory.ee(times, values, quats, gripper, initial_velocity=velocity)
