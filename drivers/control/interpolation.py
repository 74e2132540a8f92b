"""Sample a :class:`~drivers.control.trajectory.Trajectory` at any time, for streaming at the control rate.

Position (EE xyz, or joint positions) uses a cubic Hermite spline whose knot slopes are the monotone
PCHIP slopes (Fritsch-Carlson, the same numbers as ``scipy.interpolate.PchipInterpolator``; computed here in
numpy, see :func:`_pchip_slopes`), with two changes:

- the slope at the last waypoint is 0, so a trajectory that runs out comes to rest on its last
  waypoint instead of stopping with a velocity step;
- the slope at the first waypoint is the trajectory's ``initial_velocity`` when it has one (a spliced
  trajectory continuing a motion), limited per axis to the monotone range ``[0, 3 * secant]``.

Why PCHIP and not a C2 cubic spline or linear segments: it is C1 (no velocity steps at waypoints, unlike
linear), and with every slope in the Fritsch-Carlson range each segment is monotone per axis, so the
path never overshoots: it stays, axis by axis, between the two waypoints of each segment, hence inside
the waypoints' bounding box and the workspace that contains them. A C2 spline rings past the data when a
chunk stops or turns, which is motion the model never asked for. Slopes are local (three waypoints), so
one noisy waypoint does not move the whole chunk.

Rotation uses slerp between consecutive waypoints (:func:`drivers.quaternion.slerp`, checked against
``scipy.spatial.transform.Slerp`` in the tests): constant angular velocity per segment on the shortest arc.
It is C0 in angular velocity (a step at each waypoint), which the safety envelope's angular acceleration
limit bounds.

Gripper values are held by default: the value of the latest waypoint at or before ``t`` applies (zero-order
hold), and :class:`GripperPolicy` turns it into a command, by default open/closed with hysteresis. For a
``"continuous"`` gripper policy they are interpolated linearly (``gripper="linear"``), so an opening the
model ramps reaches the arm as a ramp, not as a staircase whose every step the envelope's rate limit clips.
Before the first waypoint and after the last, every field holds its end value.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import List, Literal, Optional, Tuple

import numpy as np

from drivers.arm import ArmConfigError, Target
from drivers import quaternion
from drivers.control.trajectory import Trajectory


def monotone_slopes(times: np.ndarray, values: np.ndarray, initial: Optional[np.ndarray] = None) -> np.ndarray:
    """Knot slopes [N, D] for a monotone, overshoot-free C1 Hermite cubic (see the module docstring)."""
    slopes = _pchip_slopes(times, values)
    slopes[-1] = 0.0
    if initial is not None:
        secant = (values[1] - values[0]) / (times[1] - times[0])
        # Same sign as the secant (else 0) and at most 3x its size: the first segment stays monotone.
        limited = np.sign(secant) * np.minimum(np.abs(initial), 3 * np.abs(secant))
        slopes[0] = np.where(initial * secant > 0, limited, 0.0)
    return slopes


def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The knot slopes of ``scipy.interpolate.PchipInterpolator(x, y, axis=0)`` (Fritsch-Carlson: weighted
    harmonic mean of the neighbouring secants inside, zero where they change sign; shape-preserving
    three-point ends), written out in numpy because the control loop builds a sampler at every splice, between
    two ticks, and scipy's object construction alone costs several times this (the tests compare the two)."""
    h = np.diff(x)[:, None]
    m = np.diff(y, axis=0) / h
    if len(x) == 2:
        return np.repeat(m, 2, axis=0)
    d = np.zeros_like(y)
    w1, w2 = 2 * h[1:] + h[:-1], h[1:] + 2 * h[:-1]
    same = (m[:-1] * m[1:]) > 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # a denormal secant: its term is 0
        d[1:-1] = np.where(same, (w1 + w2) / (w1 / m[:-1] + w2 / m[1:]), 0.0)
    d[0] = _end_slope(h[0], h[1], m[0], m[1])
    d[-1] = _end_slope(h[-1], h[-2], m[-1], m[-2])
    return d


def _end_slope(h0: np.ndarray, h1: np.ndarray, m0: np.ndarray, m1: np.ndarray) -> np.ndarray:
    d = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
    d = np.where(np.sign(d) != np.sign(m0), 0.0, d)
    return np.where((np.sign(m0) != np.sign(m1)) & (np.abs(d) > 3 * np.abs(m0)), 3 * m0, d)


class TrajectorySampler:
    """Evaluates one trajectory. Build once per trajectory, then :meth:`sample`.

    Construction (at a splice, between two ticks) computes the knot slopes and keeps the waypoints as Python
    lists (each segment's rotation step is computed the first time a tick needs it): a tick evaluates one
    segment on Python floats
    (a few microseconds), where numpy would spend about a microsecond per operation on arrays of three.
    :meth:`at` evaluates many times at once in numpy (splicing).
    """

    def __init__(self, trajectory: Trajectory, *, gripper: Literal["hold", "linear"] = "hold") -> None:
        if gripper not in ("hold", "linear"):
            raise ArmConfigError(f"TrajectorySampler.gripper: expected 'hold' or 'linear', got {gripper!r}")
        traj = trajectory
        self.trajectory = traj
        self.gripper_mode = gripper
        self._t = traj.times
        values = traj.joints if traj.space == "joint" else traj.position.reshape(traj.n_waypoints, -1)
        self._shape = values.shape[1:] if traj.space == "joint" else (traj.n_arms, 3)
        self._y = values
        self._d = np.zeros_like(values)
        if traj.n_waypoints >= 2:
            initial = None if traj.initial_velocity is None else traj.initial_velocity.reshape(-1)
            self._d = monotone_slopes(self._t, values, initial)
        # per-tick copies as Python floats
        self._times: List[float] = self._t.tolist()
        self._values: List[List[float]] = values.tolist()
        self._slopes: List[List[float]] = self._d.tolist()
        self._grippers: List[List[float]] = traj.gripper.tolist()
        self._quats: List[List[List[float]]] = [] if traj.quaternion is None else traj.quaternion.tolist()
        self._steps: List[Optional[list]] = [None] * max(len(self._quats) - 1, 0)  # filled on first use

    def _step(self, k: int) -> list:
        """Segment ``k``'s rotation step per arm (world-frame rotation vectors), computed once."""
        step = self._steps[k]
        if step is None:
            step = self._steps[k] = [quaternion.step_row(a, b) for a, b in zip(self._quats[k], self._quats[k + 1])]
        return step

    def _segment(self, t: float) -> Tuple[int, float, float]:
        """Index ``k`` of the segment holding ``t`` (clamped to the span), its length and the fraction in it."""
        times = self._times
        if len(times) < 2:
            return 0, 1.0, 0.0
        tc = min(max(float(t), times[0]), times[-1])
        k = min(bisect.bisect_right(times, tc) - 1, len(times) - 2)
        h = times[k + 1] - times[k]
        return k, h, (tc - times[k]) / h

    def at(self, times: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray], np.ndarray]:
        """(positions [K, A, 3] or joints [K, J], quaternions [K, A, 4] or None, raw gripper [K, A]) at the
        ``times`` [K]: the same values as :meth:`position`, :meth:`quaternion` and :meth:`gripper`, in one
        vectorised pass (splicing samples whole windows between two control ticks)."""
        traj = self.trajectory
        times = np.asarray(times, dtype=np.float64)
        n = traj.n_waypoints
        if n < 2:
            k = np.zeros(len(times), dtype=int)
            values = np.repeat(self._y[:1], len(times), axis=0).reshape((len(times),) + self._shape)
            quats = None if traj.quaternion is None else traj.quaternion[k]
            return values, quats, traj.gripper[k]
        tc = np.clip(times, self._t[0], self._t[-1])
        k = np.minimum(np.searchsorted(self._t, tc, side="right") - 1, n - 2)
        h = self._t[k + 1] - self._t[k]
        s = ((tc - self._t[k]) / h)[:, None]
        s2, s3, hh = s * s, s * s * s, h[:, None]
        y = ((2 * s3 - 3 * s2 + 1) * self._y[k] + (s3 - 2 * s2 + s) * hh * self._d[k]
             + (-2 * s3 + 3 * s2) * self._y[k + 1] + (s3 - s2) * hh * self._d[k + 1])
        quats = None
        if traj.quaternion is not None:
            fractions = np.repeat(s, traj.n_arms, axis=1)
            quats = quaternion.slerp(traj.quaternion[k], traj.quaternion[k + 1], fractions)
        g = traj.gripper
        if self.gripper_mode == "linear":
            grip = g[k] + s * (g[k + 1] - g[k])
        else:
            grip = g[np.maximum(np.searchsorted(self._t, times, side="right") - 1, 0)]
        return y.reshape((len(times),) + self._shape), quats, grip

    def _position(self, k: int, h: float, s: float) -> List[float]:
        if len(self._times) < 2:
            return list(self._values[0])
        s2, s3 = s * s, s * s * s
        c0, c1, c2, c3 = 2 * s3 - 3 * s2 + 1, (s3 - 2 * s2 + s) * h, -2 * s3 + 3 * s2, (s3 - s2) * h
        return [c0 * y0 + c1 * d0 + c2 * y1 + c3 * d1
                for y0, d0, y1, d1 in zip(self._values[k], self._slopes[k], self._values[k + 1], self._slopes[k + 1])]

    def _quaternion(self, k: int, s: float) -> List[Tuple[float, float, float, float]]:
        if len(self._times) < 2:
            return [tuple(q) for q in self._quats[0]]  # type: ignore[misc]
        return [quaternion.slerp_row(q0, step, s) for q0, step in zip(self._quats[k], self._step(k))]

    def _gripper(self, t: float, k: int, s: float) -> List[float]:
        if self.gripper_mode == "linear" and len(self._times) >= 2:
            return [g0 + s * (g1 - g0) for g0, g1 in zip(self._grippers[k], self._grippers[k + 1])]
        return list(self._grippers[max(bisect.bisect_right(self._times, t) - 1, 0)])

    def position(self, t: float) -> np.ndarray:
        """Interpolated EE position [A, 3] or joint positions [J] at ``t`` (cubic Hermite)."""
        k, h, s = self._segment(t)
        return np.array(self._position(k, h, s)).reshape(self._shape)

    def velocity(self, t: float) -> np.ndarray:
        """Position derivative at ``t`` (zero outside the trajectory's time span)."""
        if self.trajectory.n_waypoints < 2 or not self.trajectory.covers(t):
            return np.zeros(self._shape)
        k, h, s = self._segment(t)
        s2 = s * s
        c0, c1, c2 = 6 * s2 - 6 * s, 3 * s2 - 4 * s + 1, 3 * s2 - 2 * s
        v = [c0 * (y0 - y1) / h + c1 * d0 + c2 * d1
             for y0, d0, y1, d1 in zip(self._values[k], self._slopes[k], self._values[k + 1], self._slopes[k + 1])]
        return np.array(v).reshape(self._shape)

    def quaternion(self, t: float) -> np.ndarray:
        """Slerped quaternions [A, 4] (x, y, z, w) at ``t`` (EE trajectories only)."""
        k, _, s = self._segment(t)
        return np.array(self._quaternion(k, s))

    def angular_velocity(self, t: float) -> np.ndarray:
        """World-frame angular velocity [A, 3] rad/s of the slerp at ``t`` (zero outside the time span)."""
        traj = self.trajectory
        if traj.n_waypoints < 2 or not traj.covers(t):
            return np.zeros((traj.n_arms, 3))
        k, h, _ = self._segment(t)
        return np.array(self._step(k)) / h

    def gripper(self, t: float) -> np.ndarray:
        """Raw gripper [A] at ``t``: the latest waypoint's at or before ``t`` (``hold``; the first one before the
        start), or interpolated between the two around ``t`` (``linear``)."""
        k, _, s = self._segment(t)
        return np.array(self._gripper(t, k, s))

    def parts(self, t: float) -> Tuple[np.ndarray, Optional[list], List[float]]:
        """(position [A, 3] or joints [J], quaternions as [A] rows or None, raw gripper as [A] floats) at ``t``:
        :meth:`sample`'s values before they become a :class:`Target`."""
        k, h, s = self._segment(t)
        position = np.array(self._position(k, h, s)).reshape(self._shape)
        quats = self._quaternion(k, s) if self.trajectory.space == "ee" else None
        return position, quats, self._gripper(t, k, s)

    def sample(self, t: float) -> Target:
        """The raw (pre-gripper-policy, pre-safety) target at ``t``."""
        position, quats, gripper = self.parts(t)
        if quats is not None:
            return Target.ee(position, quats, gripper)
        return Target.joint(position, gripper)


@dataclass(frozen=True)
class GripperPolicy:
    """How a raw gripper value (0 closed ... 1 open) becomes a command.

    ``"binary"``: open (``open_value``) / closed (``closed_value``) with hysteresis: a closed gripper opens
    when the raw value rises above ``open_above``; an open one closes when it falls below ``close_below``.
    X-VLA's gripper output is a probability thresholded at 0.5, so the band around 0.5 keeps a value that
    hovers there from chattering. ``"continuous"``: the raw value passes through (the safety envelope
    still limits its rate).
    """

    mode: Literal["binary", "continuous"] = "binary"
    close_below: float = 0.4
    open_above: float = 0.6
    closed_value: float = 0.0
    open_value: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in ("binary", "continuous"):
            raise ArmConfigError(f"GripperPolicy.mode: expected 'binary' or 'continuous', got {self.mode!r}")
        if not 0.0 <= self.close_below <= self.open_above <= 1.0:
            raise ArmConfigError(
                f"GripperPolicy: need 0 <= close_below ({self.close_below}) <= open_above ({self.open_above}) <= 1"
            )
        if not 0.0 <= self.closed_value < self.open_value <= 1.0:
            raise ArmConfigError(
                f"GripperPolicy: need 0 <= closed_value ({self.closed_value}) < open_value ({self.open_value}) <= 1"
            )


    @property
    def sampling(self) -> Literal["hold", "linear"]:
        """How a :class:`TrajectorySampler` takes the gripper between waypoints under this policy: interpolated
        when the value passes through (``"continuous"``), else held (the latch decides open or closed)."""
        return "linear" if self.mode == "continuous" else "hold"


class GripperLatch:
    """Applies a :class:`GripperPolicy` sample by sample, remembering each arm's open/closed state."""

    def __init__(self, policy: GripperPolicy, current: np.ndarray) -> None:
        self.policy = policy
        middle = 0.5 * (policy.closed_value + policy.open_value)
        self._open = [g > middle for g in np.asarray(current, dtype=np.float64).reshape(-1).tolist()]

    def __call__(self, raw: np.ndarray | List[float]) -> np.ndarray:
        """The commands [A] for raw values [A]."""
        p = self.policy
        values = np.asarray(raw, dtype=np.float64).reshape(-1).tolist()
        if p.mode == "continuous":
            return np.array(values)
        self._open = [g >= p.close_below if was_open else g > p.open_above for g, was_open in zip(values, self._open)]
        return np.array([p.open_value if o else p.closed_value for o in self._open])
