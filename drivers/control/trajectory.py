"""Timed waypoints for one arm controller: what the control loop executes.

A :class:`Trajectory` holds ``N`` waypoints at absolute ``time.monotonic()`` times, for all arms of one
controller, in one target space:

- ``"ee"``: ``position`` [N, A, 3] (m), ``quaternion`` [N, A, 4] (x, y, z, w), ``gripper`` [N, A];
- ``"joint"``: ``joints`` [N, J], ``gripper`` [N, A].

Gripper values are the normalised opening, 0 closed ... 1 open. Construction validates everything and
names the field, waypoint and value at fault; a trajectory that exists is finite, strictly increasing in
time (no duplicate or backward timestamps, at least one waypoint), unit-quaternion, and physically
meaningful: positions within ``MAX_POSITION_M`` (10 m per axis), joint values within ``MAX_JOINT`` (4π),
and the speeds implied between consecutive waypoints within ``MAX_WAYPOINT_LINEAR_SPEED`` (100 m/s),
``MAX_WAYPOINT_ANGULAR_SPEED`` and ``MAX_WAYPOINT_JOINT_SPEED`` (100 rad/s); the table of these bounds is in
:mod:`drivers.physical_ranges`. So nothing downstream (interpolation, splice, the safety envelope) meets a
value whose arithmetic can overflow. Quaternions are made hemisphere-continuous (each one on the side of its
predecessor) so that slerp takes the short way.

X-VLA chunks: waypoint ``k`` (1 ... 30) of a chunk predicted from an observation at ``t_obs`` belongs at
``t_obs + k * span / 30``, where ``span`` is the domain's chunk duration (1-10 s, so waypoints are
0.03-0.33 s apart). :meth:`Trajectory.from_chunk` builds exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Optional, Tuple

import numpy as np

from drivers.arm import SPACES, ArmConfigError, Space, Target
from drivers.physical_ranges import (
    MAX_JOINT,
    MAX_POSITION_M,
    MAX_WAYPOINT_ANGULAR_SPEED,
    MAX_WAYPOINT_JOINT_SPEED,
    MAX_WAYPOINT_LINEAR_SPEED,
)

_QUAT_NORM_MIN = 1e-6
_ORTHONORMAL_TOL = 1e-3


class TrajectoryError(ArmConfigError):
    """A trajectory field has the wrong shape or a bad value."""


def _finite(name: str, arr: np.ndarray) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise TrajectoryError(f"{name}: non-finite value {arr[idx]} at index {idx}")


def _within_positions(position: np.ndarray) -> None:
    """``position`` [N, A, 3] within ``MAX_POSITION_M`` on every axis."""
    bad = np.abs(position) > MAX_POSITION_M
    if bad.any():
        k, arm, axis = (int(i) for i in np.argwhere(bad)[0])
        raise TrajectoryError(
            f"position: waypoint {k} (arm {arm}) {'xyz'[axis]} = {float(position[k, arm, axis])!r} m is outside "
            f"±{MAX_POSITION_M:g} m (MAX_POSITION_M)"
        )


def _within_joints(joints: np.ndarray) -> None:
    """``joints`` [N, J] within ``MAX_JOINT``."""
    bad = np.abs(joints) > MAX_JOINT
    if bad.any():
        k, j = (int(i) for i in np.argwhere(bad)[0])
        raise TrajectoryError(
            f"joints: waypoint {k} joint {j} = {float(joints[k, j])!r} is outside ±{MAX_JOINT:.6g} (4π, MAX_JOINT)"
        )


def _check_speeds(field: str, per: str, change: np.ndarray, steps: np.ndarray, bound: float, unit: str,
                  name: str) -> None:
    """``change`` [N-1, M] (distance, angle, joint change) between consecutive waypoints over their ``steps``
    [N-1] s within ``bound``; the message names the field, the waypoints, the ``per`` item and ``name``."""
    with np.errstate(over="ignore"):  # a denormal time step makes an infinite speed, which is refused
        speed = change / steps[:, None]
    bad = speed > bound
    if bad.any():
        k, m = (int(i) for i in np.argwhere(bad)[0])
        raise TrajectoryError(
            f"{field}: waypoints {k} -> {k + 1} ({per} {m}) imply {float(speed[k, m]):.4g} {unit}, "
            f"beyond {bound:g} {unit} ({name})"
        )


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr = np.array(arr, dtype=np.float64)
    arr.setflags(write=False)
    return arr


def _per_arm(name: str, value: object, n: int, tail: Tuple[int, ...]) -> np.ndarray:
    """``value`` as [N, A, *tail]; a single-arm [N, *tail] is promoted to [N, 1, *tail]."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 1 + len(tail):
        arr = arr[:, None]
    if arr.ndim != 2 + len(tail) or arr.shape[0] != n or arr.shape[2:] != tail:
        want = f"({n}, n_arms{''.join(f', {d}' for d in tail)})"
        raise TrajectoryError(f"{name}: expected shape {want}, got {np.shape(value)}")
    return arr


def rotation_to_quaternion(rotation: object, n: int) -> np.ndarray:
    """Quaternions [N, A, 4] (x, y, z, w) from quaternions [N,(A,)4] or rotation matrices [N,(A,)3,3].

    Quaternions must have a non-zero norm and are normalised; matrices must be proper rotations
    (orthonormal within 1e-3, determinant +1).
    """
    arr = np.asarray(rotation, dtype=np.float64)
    is_matrix = arr.shape[-2:] == (3, 3)
    arr = _per_arm("rotation", arr, n, (3, 3) if is_matrix else (4,))
    _finite("rotation", arr)
    n_arms = arr.shape[1]
    if not is_matrix:
        # scaled by the largest component first, so that neither 1e300 nor a denormal overflows or underflows
        scale = np.abs(arr).max(axis=-1, keepdims=True)
        unit = np.divide(arr, scale, out=np.zeros_like(arr), where=scale > 0)
        norm = np.linalg.norm(unit, axis=-1, keepdims=True)
        with np.errstate(over="ignore"):
            tiny = (scale * norm)[..., 0] < _QUAT_NORM_MIN
        if tiny.any():
            idx = tuple(int(i) for i in np.argwhere(tiny)[0])
            raise TrajectoryError(f"rotation: quaternion at index {idx} has zero norm")
        return unit / norm
    flat = arr.reshape(-1, 3, 3)
    with np.errstate(over="ignore", invalid="ignore"):  # huge entries: an infinite error, refused below
        err = np.abs(flat @ np.swapaxes(flat, 1, 2) - np.eye(3)).max(axis=(1, 2))
    det = np.linalg.det(flat)
    bad = (err > _ORTHONORMAL_TOL) | (det < 0)
    if bad.any():
        k = int(np.argmax(bad))
        raise TrajectoryError(
            f"rotation: matrix at index {divmod(k, n_arms)} is not a rotation "
            f"(|R R^T - I| = {err[k]:.2e}, det = {det[k]:.3f}); expected orthonormal with det +1"
        )
    from scipy.spatial.transform import Rotation  # here: the control-loop process never needs it (its chunks
    # arrive as quaternions) and importing scipy.spatial costs it 0.3 s of start-up

    return Rotation.from_matrix(flat).as_quat().reshape(n, n_arms, 4)


@lru_cache(maxsize=32)
def _smoothing_matrix(n: int, window: int) -> np.ndarray:
    """The Savitzky-Golay filter of :meth:`Trajectory.smoothed` as an [n, n] matrix (it is linear): one
    product per chunk instead of the edge fits, so a splice stays well inside a control tick.

    The filter is scipy's ``savgol_filter(..., polyorder=2, mode="interp")`` (the tests compare the two),
    written here because importing ``scipy.signal`` costs about a second in each of the daemon's two
    processes — half the cold-start budget. ``hat[j]`` evaluates at offset ``j`` of a window the quadratic
    least-squares fit to that window's values: rows inside the chunk use the centre row on the window around
    them; the first and last ``window // 2`` rows use the fit to the first or last ``window`` waypoints."""
    offsets = np.arange(window) - window // 2
    vander = np.vander(offsets, 3, increasing=True).astype(np.float64)
    hat = vander @ np.linalg.pinv(vander)
    half = window // 2
    matrix = np.zeros((n, n))
    for i in range(n):
        if i < half:
            matrix[i, :window] = hat[i]
        elif i >= n - half:
            matrix[i, n - window:] = hat[i - (n - window)]
        else:
            matrix[i, i - half:i + half + 1] = hat[half]
    matrix.setflags(write=False)
    return matrix


def _hemisphere_continuous(quat: np.ndarray) -> np.ndarray:
    """Flip signs along axis 0 so that consecutive quaternions have a non-negative dot product."""
    dots = np.einsum("kai,kai->ka", quat[1:], quat[:-1])  # of the raw neighbours
    signs = np.cumprod(np.where(dots < 0, -1.0, 1.0), axis=0)  # a flip carries on to all later ones
    return np.concatenate([quat[:1], quat[1:] * signs[..., None]])


def _tail(arr: Optional[np.ndarray], first: int) -> Optional[np.ndarray]:
    return None if arr is None else arr[first:]


def _stack(first: Optional[np.ndarray], rest: Optional[np.ndarray]) -> Optional[np.ndarray]:
    return None if rest is None else np.concatenate([first[None], rest])


def chunk_times(start: float, span: float, n: int) -> np.ndarray:
    """Times of an ``n``-waypoint chunk spread evenly over ``span`` s: ``start + k * span / n``, k = 1..n.

    ``start`` is the observation time the chunk was predicted from (its point 0, the proprio).
    """
    if not (np.isfinite(start) and np.isfinite(span) and span > 0):
        raise TrajectoryError(f"chunk span must be finite and > 0 s, start finite; got start={start}, span={span}")
    if n < 1:
        raise TrajectoryError(f"chunk must have at least 1 waypoint, got {n}")
    return start + span * np.arange(1, n + 1) / n


@dataclass(frozen=True)
class Trajectory:
    """Validated timed waypoints; build with :meth:`ee`, :meth:`joint` or :meth:`from_chunk`.

    ``initial_velocity`` ([A, 3] m/s for ``"ee"``, [J] for ``"joint"``), when given, is the position
    velocity at the first waypoint; the interpolator uses it so that a spliced trajectory continues the
    motion it replaces (see :mod:`drivers.control.splice`).
    """

    space: Space
    times: np.ndarray
    gripper: np.ndarray
    position: Optional[np.ndarray] = None
    quaternion: Optional[np.ndarray] = None
    joints: Optional[np.ndarray] = None
    initial_velocity: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise TrajectoryError(f"space: expected one of {SPACES}, got {self.space!r}")
        times = np.asarray(self.times, dtype=np.float64)
        if times.ndim != 1 or times.shape[0] < 1:
            raise TrajectoryError(f"times: expected shape (N,) with N >= 1, got {times.shape}")
        _finite("times", times)
        steps = np.diff(times)
        if (steps <= 0).any():
            k = int(np.argmax(steps <= 0))
            raise TrajectoryError(
                f"times: must be strictly increasing, but times[{k + 1}] = {float(times[k + 1])!r} "
                f"<= times[{k}] = {float(times[k])!r}"
            )
        n = times.shape[0]
        gripper = _per_arm("gripper", self.gripper, n, ())
        _finite("gripper", gripper)
        if ((gripper < 0) | (gripper > 1)).any():
            idx = tuple(int(i) for i in np.argwhere((gripper < 0) | (gripper > 1))[0])
            raise TrajectoryError(f"gripper: value {gripper[idx]} at index {idx} is outside 0..1")
        n_arms = gripper.shape[1]
        object.__setattr__(self, "times", _readonly(times))
        object.__setattr__(self, "gripper", _readonly(gripper))
        if self.space == "ee":
            self._check_ee(n, n_arms)
        else:
            self._check_joint(n)

    def _check_ee(self, n: int, n_arms: int) -> None:
        if self.position is None or self.quaternion is None or self.joints is not None:
            raise TrajectoryError("space 'ee' needs position and quaternion and no joints")
        position = _per_arm("position", self.position, n, (3,))
        _finite("position", position)
        _within_positions(position)
        quat = rotation_to_quaternion(self.quaternion, n)
        for name, arr in (("position", position), ("quaternion", quat)):
            if arr.shape[1] != n_arms:
                raise TrajectoryError(f"{name}: has {arr.shape[1]} arms but gripper has {n_arms}")
        quat = _hemisphere_continuous(quat)
        steps = np.diff(self.times)
        distance = np.linalg.norm(np.diff(position, axis=0), axis=-1)
        _check_speeds("position", "arm", distance, steps, MAX_WAYPOINT_LINEAR_SPEED, "m/s",
                      "MAX_WAYPOINT_LINEAR_SPEED")
        # unit quaternions on one hemisphere: the chord |q1 - q0| = 2 sin(angle / 4)
        chord = np.linalg.norm(np.diff(quat, axis=0), axis=-1)
        angle = 4 * np.arcsin(np.minimum(chord / 2, 1.0))
        _check_speeds("rotation", "arm", angle, steps, MAX_WAYPOINT_ANGULAR_SPEED, "rad/s",
                      "MAX_WAYPOINT_ANGULAR_SPEED")
        object.__setattr__(self, "position", _readonly(position))
        object.__setattr__(self, "quaternion", _readonly(quat))
        self._check_initial_velocity((n_arms, 3))

    def _check_joint(self, n: int) -> None:
        if self.joints is None or self.position is not None or self.quaternion is not None:
            raise TrajectoryError("space 'joint' needs joints and no position/quaternion")
        joints = np.asarray(self.joints, dtype=np.float64)
        if joints.ndim != 2 or joints.shape[0] != n or joints.shape[1] < 1:
            raise TrajectoryError(f"joints: expected shape ({n}, n_joints), got {joints.shape}")
        _finite("joints", joints)
        _within_joints(joints)
        _check_speeds("joints", "joint", np.abs(np.diff(joints, axis=0)), np.diff(self.times),
                      MAX_WAYPOINT_JOINT_SPEED, "rad/s", "MAX_WAYPOINT_JOINT_SPEED")
        object.__setattr__(self, "joints", _readonly(joints))
        self._check_initial_velocity((joints.shape[1],))

    def _check_initial_velocity(self, shape: Tuple[int, ...]) -> None:
        if self.initial_velocity is None:
            return
        vel = np.asarray(self.initial_velocity, dtype=np.float64)
        if vel.shape != shape:
            raise TrajectoryError(f"initial_velocity: expected shape {shape}, got {vel.shape}")
        _finite("initial_velocity", vel)
        object.__setattr__(self, "initial_velocity", _readonly(vel))

    # -- constructors ---------------------------------------------------------------------------------

    @classmethod
    def ee(
        cls, times: object, position: object, rotation: object, gripper: object, *, initial_velocity: object = None
    ) -> "Trajectory":
        """EE trajectory. ``rotation`` is quaternions [N,(A,)4] (x,y,z,w) or matrices [N,(A,)3,3];
        single-arm fields may drop the arm axis ([N, 3], [N, 4], [N])."""
        return cls("ee", times, gripper, position=position, quaternion=rotation, initial_velocity=initial_velocity)

    @classmethod
    def joint(cls, times: object, joints: object, gripper: object, *, initial_velocity: object = None) -> "Trajectory":
        """Joint-space trajectory: ``joints`` [N, J], ``gripper`` [N, A] (or [N] for one arm)."""
        return cls("joint", times=times, gripper=gripper, joints=joints, initial_velocity=initial_velocity)

    @classmethod
    def from_chunk(
        cls,
        start: float,
        span: float,
        *,
        gripper: object,
        position: object = None,
        rotation: object = None,
        joints: object = None,
    ) -> "Trajectory":
        """A chunk of N waypoints spread over ``span`` s after the observation time ``start``.

        Pass ``position`` and ``rotation`` for an EE chunk, or ``joints`` for a joint chunk. For X-VLA,
        N = 30 and ``span`` is the domain's chunk duration.
        """
        n = len(np.asarray(gripper))
        times = chunk_times(start, span, n)
        if joints is not None:
            return cls.joint(times, joints, gripper)
        return cls.ee(times, position, rotation, gripper)

    # -- queries and derived trajectories ---------------------------------------------------------------

    @property
    def n_waypoints(self) -> int:
        return int(self.times.shape[0])

    @property
    def n_arms(self) -> int:
        return int(self.gripper.shape[1])

    @property
    def n_joints(self) -> int:
        return 0 if self.joints is None else int(self.joints.shape[1])

    @property
    def start(self) -> float:
        return float(self.times[0])

    @property
    def end(self) -> float:
        return float(self.times[-1])

    def covers(self, t: float) -> bool:
        """True when ``t`` lies within [start, end]."""
        return self.start <= t <= self.end

    def shifted(self, dt: float) -> "Trajectory":
        """The same waypoints ``dt`` seconds later."""
        return replace(self, times=self.times + dt)

    def after(self, t: float) -> Optional["Trajectory"]:
        """Only the waypoints strictly later than ``t`` (``None`` if there are none)."""
        keep = self.times > t
        if not keep.any():
            return None
        first = int(np.argmax(keep))
        return Trajectory(
            self.space,
            times=self.times[first:],
            gripper=self.gripper[first:],
            position=_tail(self.position, first),
            quaternion=_tail(self.quaternion, first),
            joints=_tail(self.joints, first),
        )

    def smoothed(self, window: int) -> "Trajectory":
        """Positions (or joints) low-pass filtered along the waypoints: a Savitzky-Golay filter
        (``scipy.signal.savgol_filter``) of polynomial order 2 over ``window`` waypoints (odd, >= 3; shorter
        trajectories use the largest odd window that fits, and fewer than 3 waypoints are returned as they
        are). Motion of constant acceleration passes unchanged; waypoint-to-waypoint jitter, which the
        interpolator would turn into stop-and-go accelerations, is averaged out. The gripper opening is filtered
        the same way and clipped into 0 ... 1 (a learnt opening ramp jitters as well, and the envelope's rate
        limit clamps every tick the jitter steepens it). Positions (joints) are clipped into ``±MAX_POSITION_M``
        (``±MAX_JOINT``): the end fits may overshoot the waypoints, and a chunk near the edge of the physical
        range must stay a valid trajectory. Rotation is kept. Waypoints must be evenly spaced in time (chunks
        are)."""
        if isinstance(window, bool) or not isinstance(window, int) or window < 3 or window % 2 == 0:
            raise TrajectoryError(f"smoothing window: expected an odd integer >= 3, got {window!r}")
        n = self.n_waypoints
        fit = min(window, n if n % 2 else n - 1)
        if fit < 3:
            return self
        steps = np.diff(self.times)
        if np.ptp(steps) > 1e-6 * float(np.mean(steps)):
            raise TrajectoryError(f"smoothing needs evenly spaced waypoints; steps range {steps.min():.6g} ... "
                                  f"{steps.max():.6g} s")
        field, bound = ("position", MAX_POSITION_M) if self.space == "ee" else ("joints", MAX_JOINT)
        values = getattr(self, field)
        matrix = _smoothing_matrix(n, fit)
        gripper = np.clip(np.tensordot(matrix, self.gripper, axes=1), 0.0, 1.0)
        return replace(self, gripper=gripper, **{field: np.clip(np.tensordot(matrix, values, axes=1), -bound, bound)})

    def prepend(self, t: float, target: Target, *, initial_velocity: object = None) -> "Trajectory":
        """A new first waypoint ``target`` at time ``t`` (must be earlier than :attr:`start`)."""
        if target.space != self.space or target.n_arms != self.n_arms:
            raise TrajectoryError(
                f"prepend: target is {target.space!r} with {target.n_arms} arms, "
                f"trajectory is {self.space!r} with {self.n_arms} arms"
            )
        return Trajectory(
            self.space,
            times=np.concatenate([[t], self.times]),
            gripper=_stack(target.gripper, self.gripper),
            position=_stack(target.position, self.position),
            quaternion=_stack(target.quaternion, self.quaternion),
            joints=_stack(target.joints, self.joints),
            initial_velocity=initial_velocity,
        )

    def waypoint(self, k: int) -> Target:
        """Waypoint ``k`` as a :class:`Target`."""
        if self.space == "ee":
            return Target.ee(self.position[k], self.quaternion[k], self.gripper[k])
        return Target.joint(self.joints[k], self.gripper[k])
