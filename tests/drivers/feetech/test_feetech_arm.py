"""FeetechArm on the emulated SO-101 in this process, on a virtual clock: connect, the tick that never waits, faults by
name, the hold on link loss, the e-stop latch, and the read-only probe."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pytest
import serial

from drivers.arm import ArmConfigError, ArmFault, ArmLinkError, ArmState, FaultFlag, Target
from drivers.emulation.virtual_port import VirtualClock, VirtualPort
from drivers.feetech import emulator
from drivers.feetech import protocol as p
from drivers.feetech import tables as t
from drivers.feetech.arm import FeetechArm

from tests.support.so101 import chain_config, write_calibration

PERIOD = 0.005  # 200 Hz
IDS = [1, 2, 3, 4, 5, 6]


@pytest.fixture
def parts(monkeypatch, tmp_path) -> tuple[FeetechArm, VirtualPort, VirtualClock]:
    """An arm (not connected) on a virtual port in front of servos holding the calibration."""
    clock = VirtualClock()
    port = VirtualPort(emulator.ServoChain(chain_config(), seed=1), clock, timeout_s=0.002)
    monkeypatch.setattr(serial, "serial_for_url", lambda *args, **kwargs: port)
    arm = FeetechArm("emulated", write_calibration(tmp_path), max_velocity=3.0, gripper_open="range_max", clock=clock)
    return arm, port, clock


@pytest.fixture
def rig(parts) -> Iterator[tuple[FeetechArm, VirtualPort, VirtualClock]]:
    arm, port, clock = parts
    arm.connect()
    arm.poll_state()
    arm.send_target(target(arm, 0.0))
    yield arm, port, clock


def servos(port: VirtualPort) -> dict:
    return port.device.control("snapshot", {})


def target(arm: FeetechArm, q: float, gripper: float = 0.5) -> Target:
    mid = np.array([(j.lower + j.upper) / 2 for j in arm.calibration.joints])
    return Target.joint(mid + q, [gripper])


def tick(arm: FeetechArm, port: VirtualPort, clock: VirtualClock, goal: Target | None) -> ArmState:
    """One control tick; asserts it did not wait on the bus."""
    clock.now += PERIOD
    start, reads = clock.now, port.blocking_reads
    state = arm.poll_state()
    if goal is not None:
        arm.send_target(goal)
    assert (clock.now, port.blocking_reads) == (start, reads), "the tick waited on the bus"
    return state


def test_connect_holds_where_the_arm_is_and_enables_torque(parts):
    arm, port, _ = parts
    before = servos(port)
    caps = arm.connect()
    after = servos(port)
    assert caps.space == "joint" and caps.n_joints == 5 and caps.n_arms == 1
    assert [lim.max_velocity for lim in caps.joint_limits] == [3.0] * 5
    for motor in IDS:
        s = after[str(motor)]
        assert s["Torque_Enable"] == 1 and s["Goal_Position"] == s["Present_Position"] == before[str(motor)][
            "Present_Position"]


def test_the_tick_tracks_a_target_without_waiting(rig):
    arm, port, clock = rig
    port.latency_s = 0.003  # replies within the tick
    ages = []
    for i in range(300):
        state = tick(arm, port, clock, target(arm, min(0.002 * i, 0.3), gripper=0.8))
        ages.append(clock.now - state.timestamp)
    # each tick collects the read the previous tick sent, stamped when collected: never older than this tick
    assert max(ages) == 0.0 and arm.counters() == {"reads_missed": 0, "targets_skipped": 0}
    state = arm.poll_state()
    want = target(arm, 0.3).joints
    assert np.abs(state.joint_positions - want).max() < 0.01 and abs(state.gripper[0] - 0.8) < 0.01
    assert state.mode == "TRACKING" and not state.blocked
    goals = {m: servos(port)[str(m)]["Goal_Position"] for m in IDS}
    assert goals[6] == arm.calibration.gripper.to_ticks(0.8)
    assert [goals[j.motor_id] for j in arm.calibration.joints] == [j.to_ticks(q) for j, q in
                                                                   zip(arm.calibration.joints, want)]


def test_a_silent_bus_is_a_link_error_after_the_link_timeout_and_the_servos_hold(rig):
    arm, port, clock = rig
    for i in range(20):
        tick(arm, port, clock, target(arm, 0.001 * i))
    held = {m: servos(port)[str(m)]["Goal_Position"] for m in IDS}
    for motor in IDS:
        port.device.control("silence", {"motor_id": motor})
    lost_after = None
    for i in range(100):
        try:
            tick(arm, port, clock, target(arm, 0.02 + 0.001 * i))
        except ArmLinkError as exc:
            lost_after = i * PERIOD
            assert "no complete sync read" in str(exc) and "no status from motor(s) [1, 2, 3, 4, 5, 6]" in str(exc)
            break
    assert lost_after is not None and arm.link_timeout_s <= lost_after <= arm.link_timeout_s + 2 * PERIOD
    # a silent servo takes no goal: each keeps the last one it took (no deadman needed to hold)
    assert {m: servos(port)[str(m)]["Goal_Position"] for m in IDS} == held


def test_a_hardware_error_is_seen_in_the_ticks_own_read_and_latches(rig):
    arm, port, clock = rig
    tick(arm, port, clock, target(arm, 0.0))
    port.device.control("hardware_error", {"motor_id": 3, "bits": int(p.ErrorBit.OVERLOAD)})
    tick(arm, port, clock, target(arm, 0.0))  # collects the read sent before; its target carries the next read
    state = tick(arm, port, clock, None)  # two ticks after the fault: seen
    assert state.faults & FaultFlag.OVER_CURRENT and state.blocked and state.mode == "FAULT"
    with pytest.raises(ArmFault, match=r"motor 3: OVERLOAD") as refused:
        arm.send_target(target(arm, 0.0))
    assert refused.value.reason == "faulted"
    assert servos(port)["3"]["Torque_Enable"] == 0  # overload is in Unloading_Condition: the servo let go
    port.device.control("hardware_error", {"motor_id": 3, "bits": 0})
    assert tick(arm, port, clock, None).blocked  # latched until connect
    arm.connect()
    assert not arm.read_state().blocked


@pytest.mark.parametrize("bit, flag", [(p.ErrorBit.VOLTAGE, FaultFlag.SUPPLY_VOLTAGE),
                                       (p.ErrorBit.OVERHEAT, FaultFlag.OVER_TEMPERATURE),
                                       (p.ErrorBit.OVERCURRENT, FaultFlag.OVER_CURRENT)])
def test_each_hardware_bit_has_its_fault(rig, bit, flag):
    arm, port, clock = rig
    port.device.control("hardware_error", {"motor_id": 1, "bits": int(bit)})
    tick(arm, port, clock, target(arm, 0.0))
    assert tick(arm, port, clock, None).faults & flag
    port.device.control("hardware_error", {"motor_id": 1, "bits": 0})
    with pytest.raises(ArmFault, match=f"motor 1: {bit.name}"):
        arm.send_target(target(arm, 0.0))


def test_the_angle_limit_bit_is_a_warning(rig):
    arm, port, clock = rig
    arm.bus.write(2, t.GOAL_POSITION, 100)  # below Min_Position_Limit 612: clamped, the status says so
    state = tick(arm, port, clock, None)
    state = tick(arm, port, clock, target(arm, 0.0))
    assert state.faults & FaultFlag.AT_LIMIT and not state.blocked


def test_connect_refuses_servos_without_the_calibration_by_name(parts):
    arm, port, _ = parts
    port.device.control("set_register", {"motor_id": 4, "name": "Homing_Offset", "value": 0})
    port.device.control("set_register", {"motor_id": 5, "name": "Operating_Mode", "value": 1})
    with pytest.raises(ArmConfigError) as refused:
        arm.connect()
    text = str(refused.value)
    assert "motor 4 (wrist_flex) does not hold the calibration: Homing_Offset is 0, the file says -1009" in text
    assert "motor 5 (wrist_roll): Operating_Mode is 1; expected 0 (position)" in text
    assert all(s["Torque_Enable"] == 0 for s in servos(port).values())


def test_estop_latches_holds_and_refuses_targets_until_cleared(rig):
    arm, port, clock = rig
    for i in range(10):
        tick(arm, port, clock, target(arm, 0.01 * i))
    arm.estop()
    snap = servos(port)
    assert all(s["Goal_Position"] == s["Present_Position"] for s in snap.values())
    state = tick(arm, port, clock, None)
    assert state.mode == "ESTOPPED" and state.faults & FaultFlag.ESTOP
    with pytest.raises(ArmFault, match="e-stop latch is set"):
        arm.send_target(target(arm, 0.0))
    arm.clear_estop()
    tick(arm, port, clock, None)
    tick(arm, port, clock, target(arm, 0.0))


def test_the_probe_reads_and_moves_nothing(parts):
    arm, port, _ = parts
    port.device.control("hardware_error", {"motor_id": 2, "bits": int(p.ErrorBit.OVERHEAT)})
    port.device.control("silence", {"motor_id": 6})
    before = servos(port)
    found = arm.probe()
    assert servos(port) == before  # no register written: no goal, no torque
    assert found["link"] and found["driver"] == "feetech" and [m["id"] for m in found["motors"]] == IDS
    pan = found["motors"][0]
    assert pan["found"] and pan["model"] == "STS3215" and pan["torque"] is False and pan["errors"] == "none"
    assert pan["position_ticks"] == before["1"]["Present_Position"]
    assert pan["position"] == pytest.approx(arm.calibration.joints[0].to_rad(pan["position_ticks"]), abs=1e-6)
    assert pan["registers"] == {"Homing_Offset": -1470, "Min_Position_Limit": 758, "Max_Position_Limit": 3292}
    assert found["motors"][1]["errors"] == "OVERHEAT" and not found["motors"][5]["found"]
    assert found["problems"] == ["motor 6 (gripper) does not answer", "motor 2 (shoulder_lift) reports OVERHEAT"]
    assert not arm.bus.is_open  # it opened the bus itself, and closed it again


def test_the_probe_of_a_missing_port_is_a_link_error(tmp_path):
    arm = FeetechArm("/dev/no-such-serial-adapter", write_calibration(tmp_path), max_velocity=3.0,
                     gripper_open="range_max")
    with pytest.raises(ArmLinkError, match="cannot open Feetech bus '/dev/no-such-serial-adapter'"):
        arm.probe()


def test_construction_refuses_by_name(tmp_path):
    path = write_calibration(tmp_path)
    with pytest.raises(ArmConfigError, match=r"FeetechArm.baudrate: expected one of 19200, .*1000000"):
        FeetechArm("x", path, max_velocity=3.0, gripper_open="range_max", baudrate=2_000_000)
    with pytest.raises(ArmConfigError, match="FeetechArm.calibration: a LeRobot calibration file needs max_velocity"):
        FeetechArm("x", path)
