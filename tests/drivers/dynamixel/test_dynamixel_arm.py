"""DynamixelArm against the emulated servo chain in a separate process on a real pty."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

import numpy as np
import pytest

from drivers.arm import ArmConfigError, ArmFault, ArmLinkError, FaultFlag, Target
from drivers.dynamixel import emulator
from drivers.dynamixel import tables as t
from drivers.dynamixel.arm import DynamixelArm
from drivers.dynamixel.joint_offsets import ArmCalibration, GripperCalibration, JointCalibration
from drivers.emulation.pty_emulator import EmulatorProcess

CAL = ArmCalibration(
    "test-arm",
    tuple(JointCalibration(f"j{i}", i, lower=-1.5, upper=1.5, max_velocity=3.0, direction=-1 if i == 2 else 1)
          for i in range(1, 6)),
    GripperCalibration(6, closed=1500, open=2500),
)
TICKS_PER_RAD = 4096 / (2 * np.pi)


@pytest.fixture
def emu() -> Iterator[EmulatorProcess]:
    """Servos whose Min/Max_Position_Limit equal the calibrated ranges: a goal the arm sent outside them
    would count in ``limit_refusals``, checked to stay 0 at the end of every test."""
    proc = emulator.start(emulator.ChainConfig(ids=(1, 2, 3, 4, 5, 6), return_delay=0), seed=1)
    try:
        for j in CAL.joints:
            low, high = sorted(j.to_ticks(v) for v in (j.lower, j.upper))
            proc.call("set_register", motor_id=j.motor_id, name="Min_Position_Limit", value=low)
            proc.call("set_register", motor_id=j.motor_id, name="Max_Position_Limit", value=high)
        proc.call("set_register", motor_id=6, name="Min_Position_Limit", value=1500)
        proc.call("set_register", motor_id=6, name="Max_Position_Limit", value=2500)
        yield proc
        assert {i: s["limit_refusals"] for i, s in servos(proc).items()} == {i: 0 for i in range(1, 7)}
    finally:
        proc.stop()


def connect(emu: EmulatorProcess, **kwargs: Any) -> DynamixelArm:
    """A connected arm; generous timeouts (unless a test sets them) keep a loaded CI machine from tripping them."""
    kwargs = {"timeout_s": 0.2, "watchdog_ms": 1000, **kwargs}
    arm = DynamixelArm(emu.port, CAL, **kwargs)
    arm.connect()
    return arm


def servos(emu: EmulatorProcess) -> dict[int, dict[str, Any]]:
    return {int(k): v for k, v in emu.call("snapshot").items()}


def wait_for(check: Callable[[], Any], what: str, timeout_s: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def wait_stopped(emu: EmulatorProcess) -> dict[int, dict[str, Any]]:
    """The servo snapshot once every servo sits on its goal."""
    def stopped() -> dict[int, dict[str, Any]] | None:
        snap = servos(emu)
        return snap if all(s["Goal_Position"] == s["Present_Position"] for s in snap.values()) else None

    return wait_for(stopped, "the servos to stop")


def target(q: float, gripper: float = 0.5) -> Target:
    return Target.joint(np.full(5, q), [gripper])


def test_connect_arms_torque_watchdog_and_holds(emu: EmulatorProcess) -> None:
    caps = connect(emu, watchdog_ms=100).capabilities
    assert (caps.space, caps.n_arms, caps.n_joints) == ("joint", 1, 5)
    assert caps.joint_limits[0].upper == 1.5
    for servo in servos(emu).values():
        assert servo["Torque_Enable"] == 1 and servo["Bus_Watchdog"] == 5  # 100 ms in 20 ms units
        assert servo["Goal_Position"] == servo["Present_Position"] == 2048


def test_goal_ticks_on_the_wire(emu: EmulatorProcess) -> None:
    arm = connect(emu)
    arm.send_target(Target.joint([0.5, 0.5, 0.0, -1.0, 1.5], [0.25]))
    goals = {i: s["Goal_Position"] for i, s in servos(emu).items()}
    expected = [2048 + round(0.5 * TICKS_PER_RAD), 2048 - round(0.5 * TICKS_PER_RAD), 2048,
                2048 - round(1.0 * TICKS_PER_RAD), 2048 + round(1.5 * TICKS_PER_RAD), 1750]
    assert [goals[i] for i in range(1, 7)] == expected


def test_stream_trajectory_at_100hz(emu: EmulatorProcess) -> None:
    arm = connect(emu)
    s = np.linspace(0, 1, 31)[1:]
    waypoints = np.stack([0.6 * np.sin(np.pi / 2 * s)] * 5 + [s], 1)  # [30, 6]
    ticks = np.stack([np.interp(np.arange(1, 61) / 100, s * 0.6, waypoints[:, d], left=0.0) for d in range(6)], 1)
    next_tick = time.monotonic()
    for row in ticks:
        arm.read_state()
        arm.send_target(Target.joint(row[:5], row[5:]))
        next_tick += 0.01
        time.sleep(max(0.0, next_tick - time.monotonic()))
    final = wait_for(lambda: (lambda st: st if np.abs(st.to_vector("joint") - waypoints[-1]).max() < 2e-3 else None)(
        arm.read_state()), "the servos to settle")
    assert not final.blocked and final.mode == "TRACKING"
    assert np.isnan(final.position).all()
    assert all(s["Bus_Watchdog"] == 50 for s in servos(emu).values())


def test_out_of_limit_target_is_refused_before_the_wire(emu: EmulatorProcess) -> None:
    arm = connect(emu)
    with pytest.raises(ArmFault, match=r"joint 'j3' \(motor 3\): 1.6 rad is outside its limits") as info:
        arm.send_target(Target.joint([0, 0, 1.6, 0, 0], [0.5]))
    assert info.value.reason == "out_of_limits"
    with pytest.raises(ArmConfigError, match="expected 5 joints and 1 gripper"):
        arm.send_target(Target.joint([0, 0, 0], [0.5]))
    assert all(s["Goal_Position"] == 2048 for s in servos(emu).values())


def test_watchdog_stops_the_servos_when_the_host_goes_quiet(emu: EmulatorProcess) -> None:
    arm = connect(emu, watchdog_ms=60, watchdog_check_every=1)
    arm.send_target(target(1.2))
    tripped = wait_for(lambda: (lambda s: s if all(v["Bus_Watchdog"] == -1 for v in s.values()) else None)(servos(emu)),
                       "the Bus_Watchdog to trip")
    for servo in tripped.values():
        assert servo["Goal_Position"] == servo["Present_Position"]  # stopped where they were
    state = arm.read_state()
    assert state.faults & FaultFlag.HOST_TIMEOUT and state.blocked
    with pytest.raises(ArmLinkError, match=r"Bus_Watchdog tripped on motor\(s\) \[1, 2, 3, 4, 5, 6\]"):
        arm.send_target(target(1.2))
    arm.connect()
    arm.send_target(target(0.1))
    assert not arm.read_state().blocked


def test_hardware_error_blocks_until_reboot(emu: EmulatorProcess) -> None:
    arm = connect(emu)
    emu.call("hardware_error", motor_id=3, bits=int(t.HardwareError.OVERLOAD))
    state = arm.read_state()
    assert state.faults & FaultFlag.OVER_CURRENT and state.blocked and state.mode == "FAULT"
    assert servos(emu)[3]["Torque_Enable"] == 0  # shutdown
    with pytest.raises(ArmFault, match="motor 3: OVERLOAD") as info:
        arm.send_target(target(0.2))
    assert info.value.reason == "faulted"
    with pytest.raises(ArmFault, match="reboot"):
        arm.connect()
    arm.bus.reboot(3)
    arm.connect()
    assert servos(emu)[3]["Torque_Enable"] == 1


def test_lost_and_corrupted_replies_are_retried(emu: EmulatorProcess) -> None:
    arm = connect(emu)
    emu.call("drop_replies", n=1)
    arm.read_state()
    emu.call("corrupt_replies", n=2)
    arm.read_state()
    emu.call("echo", on=True)
    assert arm.read_state().joint_positions.shape == (5,)


def test_silent_motor_is_a_link_error(emu: EmulatorProcess) -> None:
    arm = connect(emu)
    arm.bus.retries = 0
    emu.call("silence", motor_id=4)
    with pytest.raises(ArmLinkError, match=r"no status packet from motor\(s\) \[4\]"):
        arm.read_state()


def test_estop_holds_and_latches(emu: EmulatorProcess) -> None:
    arm = connect(emu)
    arm.send_target(target(1.0))
    time.sleep(0.02)
    arm.estop()
    held = wait_stopped(emu)
    assert 2048 < held[1]["Goal_Position"] <= 2048 + 652  # stopped on the way to 1.0 rad, or at it
    with pytest.raises(ArmFault, match="e-stop latch"):
        arm.send_target(target(1.0))
    assert arm.read_state().faults & FaultFlag.ESTOP
    arm.clear_estop()
    arm.send_target(target(0.0))


def test_wrong_operating_mode_is_a_config_error(emu: EmulatorProcess) -> None:
    emu.call("set_register", motor_id=2, name="Operating_Mode", value=int(t.OperatingMode.VELOCITY))
    with pytest.raises(ArmConfigError, match=r"motor 2: Operating_Mode is 1; expected a position mode \[3, 4, 5\]"):
        connect(emu)


def test_calibration_beyond_servo_limits_is_a_config_error(emu: EmulatorProcess) -> None:
    emu.call("set_register", motor_id=5, name="Max_Position_Limit", value=3000)
    with pytest.raises(ArmConfigError, match=r"joint 'j5' \(motor 5\): calibrated range \[1070, 3026\] ticks exceeds"):
        connect(emu)


def test_close_holds_and_keeps_torque(emu: EmulatorProcess) -> None:
    arm = connect(emu)
    arm.send_target(target(1.0))
    arm.close()
    arm.close()
    snap = wait_stopped(emu)
    assert all(s["Torque_Enable"] == 1 for s in snap.values())
