"""Errors between two action chunks in physical units: mm, degrees, flipped gripper decisions.

numpy + scipy only. Per action mode:

- ``ee6d`` / ``agibot_ee6d`` (20 = 2 arms × [xyz (m), rot6d, gripper]): position error in mm (Euclidean),
  rotation error in degrees (geodesic angle between the decoded rotation matrices), gripper flips.
- ``joint`` (14 = 2 arms × [6 joints (rad), gripper]): joint error in degrees (max over joints), flips.
- ``auto``: max absolute difference only (its units are the robot's own).

:func:`accumulate` takes ``arms`` to score one arm at a time (the calibration gate reports per arm and skips the
unused half of a single-arm robot's 20-d layout).

A gripper decision is ``value > threshold``. A reference value within ``band`` of the threshold is
ambiguous — the driver's hysteresis band absorbs it — and a flip there is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Sequence

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

    @classmethod
    def from_dict(cls, d: Any, source: str = "tolerance") -> Tolerance:
        """From ``{"position_mm": 3.0, ...}`` (unknown keys and non-numbers are errors naming ``source``)."""
        names = {f.name for f in fields(cls)}
        if not isinstance(d, dict):
            raise ValueError(f"{source}: expected an object with keys from {sorted(names)}, got {d!r}")
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; expected keys from {sorted(names)}")
        out = {}
        for key, value in d.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0):
                raise ValueError(f"{source}.{key}: expected a non-negative number, got {value!r}")
            out[key] = None if value is None else (int(value) if key == "gripper_flips" else float(value))
        return cls(**out)

    def to_dict(self) -> dict[str, float]:
        """The limits that are set (None fields left out)."""
        return {k: v for k, v in vars(self).items() if v is not None}


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

    def values(self, name: str) -> np.ndarray:
        """Every per-waypoint value of ``position_mm`` / ``rotation_deg`` / ``joint_deg``, flattened."""
        parts = getattr(self, name)
        return np.concatenate([np.ravel(x) for x in parts]) if parts else np.zeros(0)

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {"max_abs": float(self.max_abs), "gripper_flips": int(self.gripper_flips)}
        for name in ("position_mm", "rotation_deg", "joint_deg"):
            v = self.values(name)
            if v.size:
                out[name] = {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)),
                             "max": float(v.max())}
        return out

    def severity(self, tol: Tolerance) -> float:
        """The worst error as a fraction of its limit (> 1: :meth:`failures` is not empty).

        A flip counts ``flips / (limit + 0.5)``, so one flip against a limit of 0 scores 2.
        """
        ratios = [0.0]
        for name in ("position_mm", "rotation_deg", "joint_deg"):
            limit, v = getattr(tol, name), self.values(name)
            if limit is not None and v.size:
                ratios.append(_ratio(float(v.max()), limit))
        if tol.gripper_flips is not None:
            ratios.append(self.gripper_flips / (tol.gripper_flips + 0.5))
        if tol.max_abs is not None:
            ratios.append(_ratio(self.max_abs, tol.max_abs))
        return max(ratios)

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


def _ratio(value: float, limit: float) -> float:
    if limit > 0:
        return value / limit
    return float("inf") if value > 0 else 0.0


def _flips(ref: np.ndarray, got: np.ndarray) -> int:
    decided = np.abs(ref - GRIPPER_THRESHOLD) > AMBIGUOUS_BAND
    return int(np.sum(decided & ((ref > GRIPPER_THRESHOLD) != (got > GRIPPER_THRESHOLD))))


def accumulate(errors: ChunkErrors, reference: np.ndarray, candidate: np.ndarray, mode: str,
               layout: Rot6DLayout = "rows", arms: Sequence[int] = (0, 1)) -> ChunkErrors:
    """Add the errors of ``candidate`` against ``reference`` (both [..., T, dim]) to ``errors``.

    ``arms``: the arms (0, 1) whose channels are scored; ``max_abs`` covers the arms' channels in ee6d and
    joint modes and every channel in ``auto`` mode.
    """
    reference = np.asarray(reference, np.float64)
    candidate = np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"chunk shapes differ: reference {reference.shape}, candidate {candidate.shape}")
    if not set(arms) <= {0, 1}:
        raise ValueError(f"arms {list(arms)}: expected arm indices 0 and/or 1")
    width = {"ee6d": 10, "agibot_ee6d": 10, "joint": 7}.get(mode)
    if width is None and mode != "auto":
        raise ValueError(f"unknown action mode {mode!r}")
    diff = np.abs(reference - candidate)
    if width is not None:
        diff = np.concatenate([diff[..., a * width : (a + 1) * width] for a in arms], axis=-1)
    errors.max_abs = max(errors.max_abs, float(np.max(diff)) if diff.size else 0.0)
    if mode in ("ee6d", "agibot_ee6d"):
        for base in (10 * a for a in arms):
            pos = slice(base, base + 3)
            rot = slice(base + 3, base + 9)
            errors.position_mm.append(1000.0 * np.linalg.norm(reference[..., pos] - candidate[..., pos], axis=-1))
            r1, r2 = rot6d_to_matrix(reference[..., rot], layout), rot6d_to_matrix(candidate[..., rot], layout)
            errors.rotation_deg.append(np.degrees(geodesic_angle(r1, r2)))
            errors.gripper_flips += _flips(reference[..., base + 9], candidate[..., base + 9])
    elif mode == "joint":
        for base in (7 * a for a in arms):
            joints = slice(base, base + 6)
            errors.joint_deg.append(np.degrees(np.max(np.abs(reference[..., joints] - candidate[..., joints]), axis=-1)))
            errors.gripper_flips += _flips(reference[..., base + 6], candidate[..., base + 6])
    return errors
