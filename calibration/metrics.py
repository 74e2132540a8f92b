"""Errors between two action chunks in physical units: mm, degrees, flipped gripper decisions.

numpy + scipy only. Per action mode:

- ``ee6d`` / ``agibot_ee6d`` (20 = 2 arms × [xyz (m), rot6d, gripper]): position error in mm (Euclidean),
  rotation error in degrees (geodesic angle between the decoded rotation matrices), gripper flips.
- ``joint`` (14 = 2 arms × [6 joints (rad), gripper]): joint error in degrees (max over joints), flips.
- ``auto``: max absolute difference only (its units are the robot's own).

A gripper decision is ``value > threshold``. A reference value within ``band`` of the threshold is
ambiguous — the driver's hysteresis band absorbs it — and a flip there is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xvla.rotations import Rot6DLayout, geodesic_angle, rot6d_to_matrix

GRIPPER_THRESHOLD = 0.5
AMBIGUOUS_BAND = 0.02


@dataclass(frozen=True)
class Tolerance:
    """Pass/fail limits (None = not checked)."""

    position_mm: float | None = None
    rotation_deg: float | None = None
    joint_deg: float | None = None
    gripper_flips: int | None = None
    max_abs: float | None = None


TOLERANCES = {
    "fp32": Tolerance(max_abs=1e-5),
    "fp16": Tolerance(position_mm=1.0, rotation_deg=0.5, joint_deg=0.5, gripper_flips=0),
    "int8": Tolerance(position_mm=3.0, rotation_deg=1.5, joint_deg=1.5, gripper_flips=0),
}


@dataclass
class ChunkErrors:
    """Per-waypoint errors over one or more chunks, flattened; summarised by :meth:`summary`."""

    position_mm: list[np.ndarray] = field(default_factory=list)
    rotation_deg: list[np.ndarray] = field(default_factory=list)
    joint_deg: list[np.ndarray] = field(default_factory=list)
    gripper_flips: int = 0
    max_abs: float = 0.0

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {"max_abs": float(self.max_abs), "gripper_flips": int(self.gripper_flips)}
        for name in ("position_mm", "rotation_deg", "joint_deg"):
            values = getattr(self, name)
            if values:
                v = np.concatenate([np.ravel(x) for x in values])
                out[name] = {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)),
                             "max": float(v.max())}
        return out

    def failures(self, tol: Tolerance) -> list[str]:
        """The limits this set of errors breaks, as readable strings (empty = pass)."""
        s = self.summary()
        out = []
        for name in ("position_mm", "rotation_deg", "joint_deg"):
            limit = getattr(tol, name)
            if limit is not None and name in s and s[name]["max"] > limit:  # type: ignore[index]
                out.append(f"{name} max {s[name]['max']:.4g} > {limit}")  # type: ignore[index]
        if tol.gripper_flips is not None and self.gripper_flips > tol.gripper_flips:
            out.append(f"gripper_flips {self.gripper_flips} > {tol.gripper_flips}")
        if tol.max_abs is not None and self.max_abs > tol.max_abs:
            out.append(f"max_abs {self.max_abs:.3g} > {tol.max_abs}")
        return out


def _flips(ref: np.ndarray, got: np.ndarray) -> int:
    decided = np.abs(ref - GRIPPER_THRESHOLD) > AMBIGUOUS_BAND
    return int(np.sum(decided & ((ref > GRIPPER_THRESHOLD) != (got > GRIPPER_THRESHOLD))))


def accumulate(errors: ChunkErrors, reference: np.ndarray, candidate: np.ndarray, mode: str,
               layout: Rot6DLayout = "rows") -> ChunkErrors:
    """Add the errors of ``candidate`` against ``reference`` (both [..., T, dim]) to ``errors``."""
    reference = np.asarray(reference, np.float64)
    candidate = np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"chunk shapes differ: reference {reference.shape}, candidate {candidate.shape}")
    errors.max_abs = max(errors.max_abs, float(np.max(np.abs(reference - candidate))))
    if mode in ("ee6d", "agibot_ee6d"):
        for base in (0, 10):
            pos = slice(base, base + 3)
            rot = slice(base + 3, base + 9)
            errors.position_mm.append(1000.0 * np.linalg.norm(reference[..., pos] - candidate[..., pos], axis=-1))
            r1, r2 = rot6d_to_matrix(reference[..., rot], layout), rot6d_to_matrix(candidate[..., rot], layout)
            errors.rotation_deg.append(np.degrees(geodesic_angle(r1, r2)))
            errors.gripper_flips += _flips(reference[..., base + 9], candidate[..., base + 9])
    elif mode == "joint":
        for base in (0, 7):
            joints = slice(base, base + 6)
            errors.joint_deg.append(np.degrees(np.max(np.abs(reference[..., joints] - candidate[..., joints]), axis=-1)))
            errors.gripper_flips += _flips(reference[..., base + 6], candidate[..., base + 6])
    elif mode != "auto":
        raise ValueError(f"unknown action mode {mode!r}")
    return errors
