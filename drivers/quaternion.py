"""Unit-quaternion arithmetic for the per-tick path.

Quaternions are ``(x, y, z, w)`` (scalar last, like scipy) in arrays of shape ``[..., 4]``; rotation vectors
are ``[..., 3]`` (axis times angle, rad). ``multiply(a, b)`` is the rotation "b, then a", as scipy's
``Rotation(a) * Rotation(b)``.

Why not ``scipy.spatial.transform.Rotation``, or vectorised numpy: the control loop handles one to four
quaternions per call, where per-call overhead is everything. A scipy Rotation costs tens of microseconds
to build and a numpy ufunc about one microsecond, against well under a microsecond for the same formula
on Python floats, and a tick does a dozen of these operations within a 2 ms period. So each operation is
written once for one row in plain ``math`` and applied row by row. scipy is the reference in the tests.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence, Tuple

import numpy as np

Quat = Tuple[float, float, float, float]
Vec = Tuple[float, float, float]


def _mul(a: Sequence[float], b: Sequence[float]) -> Quat:
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    )


def _from_rotvec(v: Sequence[float]) -> Quat:
    x, y, z = v
    angle = math.sqrt(x * x + y * y + z * z)
    # sin(angle / 2) / angle, by its Taylor series near 0
    s = math.sin(angle / 2) / angle if angle > 1e-6 else 0.5 - angle * angle / 48
    return (x * s, y * s, z * s, math.cos(angle / 2))


def _to_rotvec(q: Sequence[float]) -> Vec:
    x, y, z, w = q
    if w < 0:
        x, y, z, w = -x, -y, -z, -w
    n = math.sqrt(x * x + y * y + z * z)
    half = math.atan2(n, w)  # half the rotation angle, 0 .. pi/2; also fine for non-unit q
    # rotation vector = axis * 2 half; for tiny n, 2 half / n -> 2 / |q|
    s = 2 * half / n if n > 1e-9 else 2 / math.sqrt(n * n + w * w)
    return (x * s, y * s, z * s)


def _step(q_from: Sequence[float], q_to: Sequence[float]) -> Vec:
    fx, fy, fz, fw = q_from
    return _to_rotvec(_mul(q_to, (-fx, -fy, -fz, fw)))


def _slerp(q0: Sequence[float], q1: Sequence[float], u: float) -> Quat:
    return slerp_row(q0, _step(q0, q1), u)


def _normalised(q: Sequence[float]) -> Quat:
    n = math.sqrt(sum(c * c for c in q))
    return (q[0] / n, q[1] / n, q[2] / n, q[3] / n)


def _rows(fn: Callable[..., Sequence[float]], width: int, *arrays: np.ndarray) -> np.ndarray:
    """Apply ``fn`` to matching rows of ``arrays``, which share their leading dimensions."""
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    lead = arrays[0].shape[:-1]
    if any(a.shape[:-1] != lead for a in arrays[1:]):
        raise ValueError(f"quaternion: leading shapes differ: {[a.shape for a in arrays]}")
    flat = [a.reshape(-1, a.shape[-1]).tolist() for a in arrays]
    return np.array([fn(*row) for row in zip(*flat)], dtype=np.float64).reshape(lead + (width,))


def step_row(q_from: Sequence[float], q_to: Sequence[float]) -> Vec:
    """:func:`step` for one pair of quaternions as Python floats (the control tick's arithmetic)."""
    return _step(q_from, q_to)


def apply_step_row(rotvec: Sequence[float], q: Sequence[float]) -> Quat:
    """:func:`apply_step` for one quaternion as Python floats."""
    return _normalised(_mul(_from_rotvec(rotvec), q))


def slerp_row(q0: Sequence[float], rotvec: Sequence[float], u: float) -> Quat:
    """:func:`slerp` for one pair as Python floats, given ``rotvec = step_row(q0, q1)`` (precomputed once per
    pair when the same segment is sampled many times)."""
    x, y, z = rotvec
    out = _mul(_from_rotvec((u * x, u * y, u * z)), q0)
    if out[0] * q0[0] + out[1] * q0[1] + out[2] * q0[2] + out[3] * q0[3] < 0:
        out = (-out[0], -out[1], -out[2], -out[3])
    return out


def from_euler_xyz_row(rx: float, ry: float, rz: float) -> Quat:
    """The unit quaternion of fixed-axis X-Y-Z Euler angles (rad): turn ``rx`` about x, then ``ry`` about y, then
    ``rz`` about z, all about the fixed axes (R = Rz Ry Rx; scipy's ``from_euler("xyz", ...)``)."""
    return _mul(_from_rotvec((0.0, 0.0, rz)), _mul(_from_rotvec((0.0, ry, 0.0)), _from_rotvec((rx, 0.0, 0.0))))


def to_euler_xyz_row(q: Sequence[float]) -> Vec:
    """The fixed-axis X-Y-Z Euler angles (rad) of ``q`` (normalised first): ``rx``, ``rz`` in [-pi, pi], ``ry`` in
    [-pi/2, pi/2]; at ``ry`` = ±pi/2 (gimbal lock) ``rz`` is 0. The inverse of :func:`from_euler_xyz_row`."""
    x, y, z, w = _normalised(q)
    m00, m10, m20 = 1 - 2 * (y * y + z * z), 2 * (x * y + w * z), 2 * (x * z - w * y)
    cos_ry = math.hypot(m00, m10)
    if cos_ry > 1e-10:
        return (math.atan2(2 * (y * z + w * x), 1 - 2 * (x * x + y * y)), math.atan2(-m20, cos_ry),
                math.atan2(m10, m00))
    return (math.atan2(-2 * (y * z - w * x), 1 - 2 * (x * x + z * z)), math.atan2(-m20, cos_ry), 0.0)


def step(q_from: np.ndarray, q_to: np.ndarray) -> np.ndarray:
    """World-frame rotation vector taking ``q_from`` to ``q_to`` (shortest way, angle <= pi)."""
    return _rows(_step, 3, q_from, q_to)


def apply_step(rotvec: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``q`` turned by the world-frame rotation vector ``rotvec``, normalised."""
    return _rows(apply_step_row, 4, rotvec, q)


def angle_between(q_from: np.ndarray, q_to: np.ndarray) -> np.ndarray:
    """Rotation angle (rad, 0..pi) between two orientations."""
    return np.linalg.norm(step(q_from, q_to), axis=-1)


def slerp(q0: np.ndarray, q1: np.ndarray, u: np.ndarray | float) -> np.ndarray:
    """Spherical linear interpolation from ``q0`` (u = 0) to ``q1`` (u = 1) on the shortest arc.

    The result keeps the sign (hemisphere) of ``q0``. ``u`` is a scalar or one value per row.
    """
    if np.ndim(u) == 0:
        fraction = float(u)
        return _rows(lambda a, b: _slerp(a, b, fraction), 4, q0, q1)
    return _rows(lambda a, b, f: _slerp(a, b, f[0]), 4, q0, q1, np.asarray(u, dtype=np.float64)[..., None])
