"""SimArm: first-order dynamics, its own rate limits, e-stop, faults and link loss."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from drivers.arm import ArmConfigError, ArmFault, ArmLinkError, FaultFlag, JointLimit, Target
from drivers.emulation.sim_arm import SimArm

IDENTITY = [0.0, 0.0, 0.0, 1.0]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make(**kw):
    clock = Clock()
    arm = SimArm(clock=clock, time_constant=0.1, **kw)
    arm.connect()
    return arm, clock


def test_first_order_response_is_exact_for_a_held_target():
    arm, clock = make()
    arm.send_target(Target.ee([[0.31, 0.0, 0.3]], [IDENTITY], [1.0]))  # 1 cm step: far below the speed limit
    for k in range(1, 31):
        clock.t = k * 0.01
        x = arm.read_state().position[0, 0]
        assert x == pytest.approx(0.3 + 0.01 * (1 - math.exp(-clock.t / 0.1)), abs=1e-12)


def test_speed_limits():
    arm, clock = make(max_linear_speed=0.5, max_angular_speed=1.0, gripper_rate=2.0)
    arm.send_target(Target.ee([[0.3, 0.5, 0.3]], [Rotation.from_rotvec([0, 0, 1.0]).as_quat()], [0.0]))
    clock.t = 0.1
    state = arm.read_state()
    np.testing.assert_allclose(state.position, [[0.3, 0.05, 0.3]], atol=1e-12)
    assert Rotation.from_quat(state.quaternion).magnitude()[0] == pytest.approx(0.1)
    assert state.gripper[0] == pytest.approx(0.8)


def test_joint_space_respects_limits_and_velocity():
    arm, clock = make(space="joint", joint_limits=(JointLimit(-1, 1, 0.5), JointLimit(-1, 1, 10.0)))
    np.testing.assert_array_equal(arm.read_state().joint_positions, [0.0, 0.0])
    with pytest.raises(ArmConfigError, match="expected 2 joints"):
        arm.send_target(Target.joint([0.0], [1.0]))
    arm.send_target(Target.joint([1.0, 5.0], [1.0]))
    clock.t = 0.1
    q = arm.read_state().joint_positions
    assert q[0] == pytest.approx(0.05)  # velocity-limited
    clock.t = 5.0
    assert arm.read_state().joint_positions[1] == 1.0  # stops at its limit


def test_hold_estop_and_faults():
    arm, clock = make()
    target = Target.ee([[0.4, 0.0, 0.3]], [IDENTITY], [1.0])
    arm.send_target(target)
    clock.t = 0.05
    arm.hold()
    held = arm.read_state().position
    clock.t = 1.0
    np.testing.assert_array_equal(arm.read_state().position, held)
    arm.estop()
    assert arm.read_state().faults == FaultFlag.ESTOP and arm.read_state().blocked
    with pytest.raises(ArmFault) as err:
        arm.send_target(target)
    assert err.value.flags == FaultFlag.ESTOP
    arm.clear_faults()  # does not release the e-stop
    assert arm.read_state().faults == FaultFlag.ESTOP
    arm.clear_estop()
    arm.send_target(target)
    arm.inject_faults(FaultFlag.OVER_TEMPERATURE)
    clock.t = 2.0
    np.testing.assert_array_equal(arm.read_state().position, held)  # a hardware fault holds
    with pytest.raises(ArmFault, match="refused"):
        arm.send_target(target)
    arm.clear_faults()
    arm.send_target(target)


def test_link_loss_and_capabilities_guard():
    down = threading.Event()
    arm = SimArm(link_down=down)
    with pytest.raises(ArmConfigError, match="not connected"):
        arm.capabilities
    assert arm.connect().space == "ee"
    down.set()
    with pytest.raises(ArmLinkError):
        arm.read_state()
    with pytest.raises(ArmLinkError, match="cannot connect"):
        arm.connect()
    down.clear()
    with pytest.raises(ArmLinkError):  # the session is gone until a new connect()
        arm.read_state()
    arm.connect()
    assert arm.read_state().faults == FaultFlag(0)
    arm.close()
    other, _ = make()
    other.inject_link_loss()
    with pytest.raises(ArmLinkError):
        other.send_target(Target.ee([[0.3, 0, 0.3]], [IDENTITY], [1.0]))
