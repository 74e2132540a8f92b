"""drivers.quaternion against scipy's Rotation as the reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from drivers import quaternion as Q


@pytest.fixture
def quats():
    return Rotation.random(50, random_state=7).as_quat(), Rotation.random(50, random_state=8).as_quat()


def same_rotation(a, b, atol=1e-10):
    return np.allclose(np.abs(np.einsum("...i,...i->...", a, b)), 1.0, atol=atol)


def test_step_is_the_world_frame_relative_rotation(quats):
    a, b = quats
    ref = (Rotation.from_quat(b) * Rotation.from_quat(a).inv()).as_rotvec()
    np.testing.assert_allclose(Q.step(a, b), ref, atol=1e-10)
    np.testing.assert_allclose(Q.step(-a, 3 * b), ref, atol=1e-10)  # sign and norm do not matter
    np.testing.assert_allclose(Q.angle_between(a, b), np.linalg.norm(ref, axis=1), atol=1e-10)


def test_apply_step_matches_scipy(quats):
    a, b = quats
    v = Rotation.from_quat(b).as_rotvec()
    out = Q.apply_step(v, a)
    assert same_rotation(out, (Rotation.from_rotvec(v) * Rotation.from_quat(a)).as_quat())
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0)


def test_small_zero_and_half_turn_angles():
    ident = np.array([[0.0, 0, 0, 1]])
    np.testing.assert_array_equal(Q.step(ident, ident), [[0, 0, 0]])
    np.testing.assert_array_equal(Q.apply_step(np.zeros((1, 3)), ident), ident)
    v = np.array([[1e-9, -2e-9, 3e-9]])
    np.testing.assert_allclose(Q.step(ident, Q.apply_step(v, ident)), v, rtol=1e-6)
    np.testing.assert_allclose(Q.step(ident, np.array([[1.0, 0, 0, 0]])), [[np.pi, 0, 0]])


def test_slerp_matches_scipy_and_keeps_hemisphere(quats):
    a, b = quats
    for u in (0.0, 0.25, 0.5, 1.0):
        ref = np.stack([Slerp([0, 1], Rotation.from_quat([x, y]))([u]).as_quat()[0] for x, y in zip(a, b)])
        out = Q.slerp(a, b, u)
        assert same_rotation(out, ref)
        assert np.all(np.einsum("ij,ij->i", out, a) >= 0)
    per_row = Q.slerp(a[:2], b[:2], np.array([0.0, 1.0]))
    assert same_rotation(per_row, np.stack([a[0], b[1]]))


def test_mismatched_rows_are_an_error(quats):
    a, b = quats
    with pytest.raises(ValueError, match="leading shapes differ"):
        Q.step(a[:2], b[:3])
