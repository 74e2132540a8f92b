"""Chunk errors in physical units on hand-made chunks whose differences are known by construction."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from calibration.check import compare
from calibration.metrics import TOLERANCES, ChunkErrors, Tolerance, accumulate
from xvla.rotations import matrix_to_rot6d

T = 30


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def ee6d_pair(layout: str, shift_mm: np.ndarray, turn_deg: np.ndarray, arm: int = 0, seed: int = 0):
    """A random ee6d chunk and a copy whose ``arm`` is moved by ``shift_mm`` and turned by ``turn_deg`` per waypoint."""
    rng = np.random.default_rng(seed)
    ref = np.zeros((T, 20))
    for base in (0, 10):
        ref[:, base : base + 3] = rng.uniform(-0.5, 0.5, (T, 3))
        ref[:, base + 3 : base + 9] = matrix_to_rot6d(Rotation.random(T, random_state=seed + base).as_matrix(), layout)
        ref[:, base + 9] = rng.choice([0.1, 0.9], T)
    cand = ref.copy()
    base = 10 * arm
    cand[:, base : base + 3] += unit_vectors(rng, T) * shift_mm[:, None] / 1000.0
    turn = Rotation.from_rotvec(unit_vectors(rng, T) * np.radians(turn_deg)[:, None])
    r = Rotation.from_matrix(np.stack([_decode(ref[i, base + 3 : base + 9], layout) for i in range(T)]))
    cand[:, base + 3 : base + 9] = matrix_to_rot6d((r * turn).as_matrix(), layout)
    return ref, cand


def _decode(v: np.ndarray, layout: str) -> np.ndarray:
    """Columns c0, c1 straight from the layout's definition (independent of xvla.rotations' decoder)."""
    c0, c1 = (v[0::2], v[1::2]) if layout == "rows" else (v[0:3], v[3:6])
    return np.stack([c0, c1, np.cross(c0, c1)], axis=1)


@pytest.mark.parametrize("layout", ["rows", "columns"])
def test_known_position_and_rotation_errors(layout) -> None:
    shift = np.linspace(0.0, 5.0, T)
    turn = np.linspace(0.0, 3.0, T)
    ref, cand = ee6d_pair(layout, shift, turn)
    errors = accumulate(ChunkErrors(), ref, cand, "ee6d", layout, arms=(0,))
    np.testing.assert_allclose(errors.values("position_mm"), shift, atol=1e-9)
    np.testing.assert_allclose(errors.values("rotation_deg"), turn, atol=1e-6)
    s = errors.summary()
    assert s["position_mm"]["max"] == pytest.approx(5.0) and s["rotation_deg"]["max"] == pytest.approx(3.0, abs=1e-6)
    assert s["position_mm"]["p50"] == pytest.approx(np.percentile(shift, 50))
    assert errors.gripper_flips == 0
    other = "columns" if layout == "rows" else "rows"  # decoding with the wrong layout does not recover the turn
    wrong = accumulate(ChunkErrors(), ref, cand, "ee6d", other, arms=(0,)).values("rotation_deg")
    assert not np.allclose(wrong, turn, atol=0.1)


def test_arms_are_scored_separately() -> None:
    ref, cand = ee6d_pair("rows", np.full(T, 2.0), np.full(T, 1.0), arm=1)
    arm0 = accumulate(ChunkErrors(), ref, cand, "ee6d", arms=(0,))
    arm1 = accumulate(ChunkErrors(), ref, cand, "ee6d", arms=(1,))
    assert arm0.max_abs == 0 and arm0.values("position_mm").max() == 0 and arm0.values("rotation_deg").max() < 1e-6
    np.testing.assert_allclose(arm1.values("position_mm"), 2.0)
    np.testing.assert_allclose(arm1.values("rotation_deg"), 1.0, atol=1e-6)
    action = {"mode": "ee6d", "rot6d_layout": "rows", "arms": 2}
    results, combined = compare(ref[None], cand[None], action, TOLERANCES["int8"])
    assert [r.arm for r in results] == [0, 1]
    assert not results[0].failures and results[1].failures == []  # 2 mm, 1 deg: within INT8 limits
    fp16 = compare(ref[None], cand[None], action, TOLERANCES["fp16"])[0]
    assert not fp16[0].failures and fp16[1].failures == ["position_mm max 2 > 1.0", "rotation_deg max 1 > 0.5"]
    single = compare(ref[None], cand[None], {**action, "arms": 1}, TOLERANCES["fp16"])[0]
    assert len(single) == 1 and not single[0].failures  # a one-arm robot ignores the unused half


def test_joint_mode_reports_the_largest_joint_error_in_degrees() -> None:
    rng = np.random.default_rng(3)
    ref = rng.uniform(-1, 1, (T, 14))
    offsets = np.zeros((T, 14))
    offsets[:, 2] = np.radians(0.4)
    offsets[:, 4] = -np.radians(np.linspace(0, 2, T))  # arm 0: max(0.4, 0..2) degrees
    offsets[:, 8] = np.radians(7.0)  # arm 1
    errors = accumulate(ChunkErrors(), ref, ref + offsets, "joint", arms=(0,))
    np.testing.assert_allclose(errors.values("joint_deg"), np.maximum(0.4, np.linspace(0, 2, T)), atol=1e-9)
    assert not errors.values("position_mm").size and not errors.values("rotation_deg").size
    both = accumulate(ChunkErrors(), ref, ref + offsets, "joint")
    assert both.summary()["joint_deg"]["max"] == pytest.approx(7.0)


def test_gripper_flips_skip_the_ambiguous_band() -> None:
    ref = np.zeros((4, 20))
    ref[:, 3:9] = matrix_to_rot6d(np.eye(3), "rows")
    cand = ref.copy()
    ref[:, 9] = [0.9, 0.1, 0.51, 0.45]
    cand[:, 9] = [0.2, 0.1, 0.49, 0.55]  # flip, same, flip inside the band (not counted), flip
    assert accumulate(ChunkErrors(), ref, cand, "ee6d", arms=(0,)).gripper_flips == 2


def test_tolerance_from_dict_names_the_bad_key() -> None:
    assert Tolerance.from_dict({"position_mm": 3, "gripper_flips": 0}) == Tolerance(position_mm=3.0, gripper_flips=0)
    with pytest.raises(ValueError, match="unknown key.*'position_cm'"):
        Tolerance.from_dict({"position_cm": 1})
    with pytest.raises(ValueError, match="rotation_deg: expected a non-negative number, got -1"):
        Tolerance.from_dict({"rotation_deg": -1})


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 10), min_size=1, max_size=20), st.integers(0, 3), st.floats(0.01, 5),
       st.integers(0, 2))
def test_severity_above_one_exactly_when_a_limit_breaks(positions, flips, limit, flip_limit) -> None:
    errors = ChunkErrors(position_mm=[np.array(positions)], gripper_flips=flips)
    tol = Tolerance(position_mm=limit, gripper_flips=flip_limit)
    assert (errors.severity(tol) > 1) == bool(errors.failures(tol))
