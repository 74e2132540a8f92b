"""rot6d <-> rotation matrix / quaternion / Euler / rotation vector, and the ee6d 20-d action layout.

numpy + scipy only (no torch): the on-robot runtime imports this module. Every function is vectorised over
leading batch dimensions (``(..., 6)`` <-> ``(..., 3, 3)``) and returns float64.

X-VLA uses two rot6d layouts, both holding the first two columns ``c0``, ``c1`` of R:

- ``"rows"`` (official default, ``datasets/utils.py``): those two columns flattened row-major,
  ``[R00, R01, R10, R11, R20, R21]``; decode with ``a1 = v[0, 2, 4]``, ``a2 = v[1, 3, 5]``.
- ``"columns"`` (LIBERO client and checkpoint): ``[R00, R10, R20, R01, R11, R21]``;
  decode with ``a1 = v[0:3]``, ``a2 = v[3:6]``.

Decoding Gram-Schmidt-orthonormalises ``(a1, a2)`` into ``b1, b2``, sets ``b3 = b1 x b2`` and returns
``R = [b1 b2 b3]`` (as columns), so raw network outputs are accepted. Quaternions are scipy's
``(x, y, z, w)`` unless ``scalar_first=True``. Scipy only ever sees flat ``(N, ...)`` batches, so scipy
versions without N-d ``Rotation`` support (Python 3.10 installs) work too.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Optional, Tuple

import numpy as np
from scipy.spatial.transform import Rotation

from xvla.errors import InputError

Rot6DLayout = Literal["rows", "columns"]
LAYOUTS: Tuple[str, ...] = ("rows", "columns")
EE6D_DIM = 20
_ARM_DIM = 10  # xyz(3) + rot6d(6) + gripper(1)


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise InputError(f"unknown rot6d layout {layout!r}; expected one of {LAYOUTS}")


def _as_last(x: np.ndarray | list | tuple, size: int, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[-1] != size:
        raise InputError(f"{what}: expected shape (..., {size}), got {arr.shape}")
    return arr


def _as_matrix(m: np.ndarray | list | tuple) -> np.ndarray:
    arr = np.asarray(m, dtype=np.float64)
    if arr.ndim < 2 or arr.shape[-2:] != (3, 3):
        raise InputError(f"rotation matrix: expected shape (..., 3, 3), got {arr.shape}")
    return arr


def matrix_to_rot6d(matrix: np.ndarray, layout: Rot6DLayout = "rows") -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> rot6d (..., 6) in ``layout``."""
    _check_layout(layout)
    m = _as_matrix(matrix)
    if layout == "rows":
        return m[..., :, :2].reshape(m.shape[:-2] + (6,))
    return np.concatenate([m[..., :, 0], m[..., :, 1]], axis=-1)


def rot6d_to_matrix(rot6d: np.ndarray, layout: Rot6DLayout = "rows", eps: float = 1e-6) -> np.ndarray:
    """rot6d (..., 6) -> rotation matrices (..., 3, 3), Gram-Schmidt on non-orthonormal input.

    Raises ``InputError`` (a ``ValueError``) for a wrong last dimension, non-finite values, a first vector with
    norm <= eps, or a second vector that is zero or (within eps, as sine of the angle) parallel to the first.
    """
    _check_layout(layout)
    v = _as_last(rot6d, 6, "rot6d")
    if layout == "rows":
        a1, a2 = v[..., 0::2], v[..., 1::2]
    else:
        a1, a2 = v[..., 0:3], v[..., 3:6]
    if not np.all(np.isfinite(v)):
        raise InputError(f"rot6d of shape {v.shape} contains non-finite values")
    n1 = np.linalg.norm(a1, axis=-1, keepdims=True)
    n2 = np.linalg.norm(a2, axis=-1, keepdims=True)
    bad1 = n1[..., 0] <= eps
    if np.any(bad1):
        idx = tuple(int(i) for i in np.argwhere(bad1)[0])
        raise InputError(f"degenerate rot6d of shape {v.shape}: first vector has ~zero norm at index {idx}")
    b1 = a1 / n1
    u2 = a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1
    nu = np.linalg.norm(u2, axis=-1, keepdims=True)
    bad2 = (n2[..., 0] <= eps) | (nu[..., 0] <= eps * np.maximum(n2[..., 0], eps))
    if np.any(bad2):
        idx = tuple(int(i) for i in np.argwhere(bad2)[0])
        raise InputError(
            f"degenerate rot6d of shape {v.shape}: second vector is ~zero or parallel to the first at index {idx}"
        )
    b2 = u2 / nu
    b3 = np.cross(b1, b2)
    return np.stack([b1, b2, b3], axis=-1)


def _from_scipy(rot: Rotation, batch: Tuple[int, ...]) -> np.ndarray:
    return rot.as_matrix().reshape(batch + (3, 3))


def _to_scipy(matrix: np.ndarray) -> Tuple[Rotation, Tuple[int, ...]]:
    return Rotation.from_matrix(matrix.reshape(-1, 3, 3)), matrix.shape[:-2]


def rot6d_to_quat(rot6d: np.ndarray, layout: Rot6DLayout = "rows", scalar_first: bool = False) -> np.ndarray:
    """rot6d (..., 6) -> unit quaternions (..., 4), (x, y, z, w) or (w, x, y, z) if ``scalar_first``."""
    rot, batch = _to_scipy(rot6d_to_matrix(rot6d, layout))
    q = rot.as_quat().reshape(batch + (4,))
    return np.roll(q, 1, axis=-1) if scalar_first else q


def quat_to_rot6d(quat: np.ndarray, layout: Rot6DLayout = "rows", scalar_first: bool = False) -> np.ndarray:
    """Quaternions (..., 4) (normalised here) -> rot6d (..., 6). Raises on zero-norm quaternions."""
    q = _as_last(quat, 4, "quaternion")
    if scalar_first:
        q = np.roll(q, -1, axis=-1)
    if not np.all(np.isfinite(q)) or np.any(np.linalg.norm(q, axis=-1) == 0.0):
        raise InputError(f"quaternion of shape {q.shape} has zero-norm or non-finite entries")
    m = _from_scipy(Rotation.from_quat(q.reshape(-1, 4)), q.shape[:-1])
    return matrix_to_rot6d(m, layout)


def rot6d_to_euler(
    rot6d: np.ndarray, layout: Rot6DLayout = "rows", seq: str = "xyz", degrees: bool = False
) -> np.ndarray:
    """rot6d (..., 6) -> Euler angles (..., 3) for a 3-axis scipy ``seq`` (lower: extrinsic, upper: intrinsic)."""
    if len(seq) != 3:
        raise InputError(f"Euler output needs a 3-axis sequence, got {seq!r}")
    rot, batch = _to_scipy(rot6d_to_matrix(rot6d, layout))
    return rot.as_euler(seq, degrees=degrees).reshape(batch + (3,))


def euler_to_rot6d(
    angles: np.ndarray, layout: Rot6DLayout = "rows", seq: str = "xyz", degrees: bool = False
) -> np.ndarray:
    """Euler angles (..., len(seq)) -> rot6d (..., 6)."""
    a = _as_last(angles, len(seq), f"Euler angles for seq {seq!r}")
    m = _from_scipy(Rotation.from_euler(seq, a.reshape(-1, len(seq)), degrees=degrees), a.shape[:-1])
    return matrix_to_rot6d(m, layout)


def rot6d_to_rotvec(rot6d: np.ndarray, layout: Rot6DLayout = "rows") -> np.ndarray:
    """rot6d (..., 6) -> rotation vectors / axis-angle (..., 3), angle = norm in radians, in [0, pi]."""
    rot, batch = _to_scipy(rot6d_to_matrix(rot6d, layout))
    return rot.as_rotvec().reshape(batch + (3,))


def rotvec_to_rot6d(rotvec: np.ndarray, layout: Rot6DLayout = "rows") -> np.ndarray:
    """Rotation vectors (..., 3) -> rot6d (..., 6)."""
    r = _as_last(rotvec, 3, "rotation vector")
    return matrix_to_rot6d(_from_scipy(Rotation.from_rotvec(r.reshape(-1, 3)), r.shape[:-1]), layout)


def geodesic_angle(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """Angle in radians, in [0, pi], of the relative rotation r1^T r2; broadcasts over leading dims.

    Uses atan2(|skew part|, (trace - 1)/2), which stays accurate near 0 and pi (unlike arccos of the trace).
    """
    m = np.matmul(np.swapaxes(_as_matrix(r1), -1, -2), _as_matrix(r2))
    cos = (np.trace(m, axis1=-2, axis2=-1) - 1.0) / 2.0
    skew = np.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1)
    return np.arctan2(0.5 * np.linalg.norm(skew, axis=-1), cos)


class ArmPose(NamedTuple):
    """One arm of an ee6d action: position (..., 3), rotation matrix (..., 3, 3), gripper (...) as stored."""

    position: np.ndarray
    rotation: np.ndarray
    gripper: np.ndarray


def split_ee6d(
    action: np.ndarray, layout: Rot6DLayout = "rows", single_arm: bool = False
) -> Tuple[ArmPose, Optional[ArmPose]]:
    """Split (..., 20) ``[L_xyz, L_rot6d, L_grip, R_xyz, R_rot6d, R_grip]`` into (left, right) ArmPoses.

    The gripper value is returned untouched (logit or probability, whatever the caller holds). With
    ``single_arm=True`` the right half (zeros by X-VLA convention) is not decoded and ``None`` is returned for it.
    """
    a = _as_last(action, EE6D_DIM, "ee6d action")

    def arm(x: np.ndarray) -> ArmPose:
        return ArmPose(x[..., 0:3].copy(), rot6d_to_matrix(x[..., 3:9], layout), x[..., 9].copy())

    left = arm(a[..., :_ARM_DIM])
    return left, (None if single_arm else arm(a[..., _ARM_DIM:]))


def assemble_ee6d(left: ArmPose, right: Optional[ArmPose] = None, layout: Rot6DLayout = "rows") -> np.ndarray:
    """Inverse of ``split_ee6d``: ArmPoses -> (..., 20). A missing right arm is written as zeros."""

    def arm(p: ArmPose) -> np.ndarray:
        pos = _as_last(p.position, 3, "arm position")
        grip = np.asarray(p.gripper, dtype=np.float64)[..., None]
        rot = matrix_to_rot6d(p.rotation, layout)
        batch = np.broadcast_shapes(pos.shape[:-1], rot.shape[:-1], grip.shape[:-1])
        parts = [np.broadcast_to(x, batch + x.shape[-1:]) for x in (pos, rot, grip)]
        return np.concatenate(parts, axis=-1)

    left_vec = arm(left)
    right_vec = np.zeros_like(left_vec) if right is None else arm(right)
    batch = np.broadcast_shapes(left_vec.shape[:-1], right_vec.shape[:-1])
    parts = [np.broadcast_to(x, batch + (_ARM_DIM,)) for x in (left_vec, right_vec)]
    return np.concatenate(parts, axis=-1)
