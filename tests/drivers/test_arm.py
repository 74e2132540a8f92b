"""The arm interface's value types: validation and the wire-order vector layout."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.arm import ArmCapabilities, ArmConfigError, ArmFault, ArmState, Box, FaultFlag, JointLimit, Target


def test_target_ee_layout_and_copy():
    pos = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    target = Target.ee(pos, [[0, 0, 0, 1], [1, 0, 0, 0]], [1.0, 0.0])
    pos[0, 0] = 9.0  # the target keeps its own copy
    np.testing.assert_array_equal(
        target.to_vector(), [0.1, 0.2, 0.3, 0, 0, 0, 1, 1.0, 0.4, 0.5, 0.6, 1, 0, 0, 0, 0.0]
    )
    assert target.n_arms == 2
    with pytest.raises(ValueError):
        target.position[0, 0] = 1.0


def test_target_joint_layout():
    target = Target.joint([0.5, -0.25, 1.0], [0.3])
    np.testing.assert_array_equal(target.to_vector(), [0.5, -0.25, 1.0, 0.3])


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: Target.ee([0.1, 0.2, 0.3], [[0, 0, 0, 1]], [1.0]), r"Target.position: expected shape \(n_arms, 3\)"),
        (lambda: Target.ee([[0.1, 0.2, 0.3]], [[0, 0, 1]], [1.0]), r"Target.quaternion: expected shape \(1, 4\)"),
        (lambda: Target.joint([[0.0]], [1.0]), "joints and gripper must be 1-D"),
    ],
)
def test_target_shapes(build, match):
    with pytest.raises(ArmConfigError, match=match):
        build()


def test_state_vector_and_blocking_flags():
    state = ArmState(timestamp=1.0, position=np.zeros((1, 3)), quaternion=np.array([[0, 0, 0, 1.0]]),
                     gripper=np.ones(1), joint_positions=np.array([0.1, 0.2]))
    np.testing.assert_array_equal(state.to_vector("ee"), [0, 0, 0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(state.to_vector("joint"), [0.1, 0.2, 1.0])
    assert not state.blocked
    assert not ArmState(timestamp=0.0, faults=FaultFlag.AT_LIMIT).blocked
    for flag in (FaultFlag.ESTOP, FaultFlag.HOST_TIMEOUT, FaultFlag.ENCODER):
        assert ArmState(timestamp=0.0, faults=flag).blocked


def test_capabilities_and_limits_validation():
    with pytest.raises(ArmConfigError, match="space 'joint' needs joint_limits"):
        ArmCapabilities("joint", 1)
    with pytest.raises(ArmConfigError, match="expected 2 boxes"):
        ArmCapabilities("ee", 2, workspaces=(Box((0, 0, 0), (1, 1, 1)),))
    with pytest.raises(ArmConfigError, match="space: expected one of"):
        ArmCapabilities("cartesian", 1)
    with pytest.raises(ArmConfigError, match="need finite lower < upper, got lower=1, upper=0"):
        JointLimit(1, 0, 1.0)
    with pytest.raises(ArmConfigError, match="max_velocity must be at least 0.001 rad/s"):
        JointLimit(0, 1, 0.0)
    with pytest.raises(ArmConfigError, match="need finite lower < upper on every axis"):
        Box((0, 0, 0), (1, 0, 1))
    # physical ranges (drivers.physical_ranges): a config or controller cannot switch the envelope off
    with pytest.raises(ArmConfigError, match=r"Box: corners must lie within ±10 m on every axis, "
                                             r"got \(0, 0, 0\) \.\. \(1, 1000000000.0, 1\)"):
        Box((0, 0, 0), (1, 1e9, 1))
    with pytest.raises(ArmConfigError, match=r"JointLimit: lower and upper must lie within ±12.5664 \(4π rad\), "
                                             r"got lower=-13.0, upper=1.0"):
        JointLimit(-13.0, 1.0, 1.0)
    with pytest.raises(ArmConfigError, match=r"JointLimit: max_velocity must be at most 12.5664 rad/s \(4π\), "
                                             r"got 100.0 \(allowed 0.001 <= value <= 12.5664 rad/s \(4π\)\)"):
        JointLimit(-1.0, 1.0, 100.0)
    assert Box((-10, -10, -10), (10, 10, 10)).upper == (10.0, 10.0, 10.0)
    assert JointLimit(-4 * np.pi, 4 * np.pi, 4 * np.pi).max_velocity == 4 * np.pi
    caps = ArmCapabilities("joint", 1, joint_limits=(JointLimit(-1, 1, 2),) * 6)
    assert caps.n_joints == 6


def test_fault_carries_flags_and_reason():
    err = ArmFault("refused", flags=FaultFlag.ESTOP | FaultFlag.AT_LIMIT, reason="estopped")
    assert err.flags & FaultFlag.ESTOP and err.reason == "estopped" and str(err) == "refused"
