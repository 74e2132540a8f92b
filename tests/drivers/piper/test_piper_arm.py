"""PiperArm on the emulated arm (python-can's virtual bus, a virtual clock): connect takes command and enables,
both spaces track, the gripper maps to the stroke, hold / e-stop / refusals, link loss by feedback age and by
bus-off, the arm's faults by name, the tick never waits, and the read-only probe."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from drivers.arm import ArmConfigError, ArmFault, ArmLinkError, FaultFlag, Target
from drivers.piper.arm import JOINT_LIMITS, PiperArm
from drivers.piper.emulator import PiperConfig
from tests.support.piper_bus import NEEDS_CAN, emulated

pytestmark = NEEDS_CAN
PERIOD = 0.005  # a 200 Hz control loop


def ticks(arm: PiperArm, clock, target: Target, seconds: float) -> None:
    """The control tick's calls at 200 Hz for ``seconds`` of the arm's clock."""
    for _ in range(round(seconds / PERIOD)):
        arm.poll_state()
        arm.send_target(target)
        clock.advance(PERIOD)


def test_connect_takes_command_enables_and_commands_where_the_arm_is(channel):
    emulator, clock, arm = emulated(channel, space="joint")
    before = emulator.call("snapshot")
    assert (before["enabled"], before["ctrl_mode"]) == (False, "STANDBY")
    caps = arm.connect()
    after = emulator.call("snapshot")
    assert after["enabled"] and after["gripper_enabled"] and after["ctrl_mode"] == "CAN_CTRL"
    assert after["move_mode"] == "MOVE_J" and after["joint_target"] == pytest.approx(PiperConfig().joints, abs=1e-5)
    assert (caps.space, caps.n_arms, caps.joint_limits) == ("joint", 1, JOINT_LIMITS)
    state = arm.read_state()
    assert state.joint_positions == pytest.approx(PiperConfig().joints, abs=1e-5)
    assert state.gripper[0] == pytest.approx(10.0 / 70.0) and state.faults == FaultFlag(0) and state.mode == "NORMAL"
    arm.close()
    assert emulator.call("snapshot")["enabled"]  # close holds; it never disables the motors
    emulator.close()


def test_joint_targets_are_tracked_and_the_gripper_opening_maps_to_the_stroke(joint_arm):
    emulator, clock, arm = joint_arm
    goal = [0.3, 0.8, -0.6, 0.2, -0.3, 0.5]
    ticks(arm, clock, Target.joint(goal, [0.25]), 0.6)
    state = arm.poll_state()
    assert state.joint_positions == pytest.approx(goal, abs=1e-4)
    assert emulator.call("snapshot")["gripper_mm"] == pytest.approx(0.25 * 70.0, abs=0.01)
    assert state.gripper[0] == pytest.approx(0.25, abs=1e-3)
    assert np.abs(state.joint_velocities).max() < 0.05  # arrived: the motors' speed frames say so


def test_end_pose_targets_are_tracked(ee_arm):
    emulator, clock, arm = ee_arm
    rotation = Rotation.from_euler("xyz", [10, 60, -20], degrees=True)
    ticks(arm, clock, Target.ee([[0.25, 0.05, 0.3]], [rotation.as_quat()], [1.0]), 0.8)
    state = arm.poll_state()
    assert state.position[0] == pytest.approx([0.25, 0.05, 0.3], abs=1e-5)
    assert (Rotation.from_quat(state.quaternion[0]).inv() * rotation).magnitude() < 1e-4
    snap = emulator.call("snapshot")
    assert snap["move_mode"] == "MOVE_P"
    assert snap["pose_target"][3:] == pytest.approx(np.radians([10, 60, -20]), abs=1e-5)
    assert state.gripper[0] == pytest.approx(1.0, abs=1e-3)


def test_hold_commands_the_measured_pose_and_the_estop_latch_refuses_targets(joint_arm):
    emulator, clock, arm = joint_arm
    ticks(arm, clock, Target.joint([1.0, 1.5, -1.0, 0.5, 0.5, 0.5], [0.5]), 0.1)  # on the way
    measured = arm.poll_state().joint_positions
    arm.estop()
    clock.advance(0.001)  # the emulator takes the frames
    snap = emulator.call("snapshot")
    assert snap["joint_target"] == pytest.approx(measured, abs=1e-4)  # told to stay where it was measured
    with pytest.raises(ArmFault) as info:
        arm.send_target(Target.joint([0.0] * 6, [0.5]))
    assert info.value.reason == "estopped" and info.value.flags & FaultFlag.ESTOP
    state = arm.poll_state()
    assert state.faults & FaultFlag.ESTOP and state.mode.startswith("ESTOPPED")
    clock.advance(0.5)
    held = emulator.call("snapshot")
    assert held["joints"] == pytest.approx(snap["joint_target"], abs=2e-3) and held["enabled"]  # power on
    arm.clear_estop()
    arm.send_target(Target.joint([0.0, 0.5, -0.5, 0.0, 0.0, 0.0], [0.5]))
    clock.advance(0.001)
    assert emulator.call("snapshot")["joint_target"][1] == pytest.approx(0.5, abs=1e-5)


def test_no_feedback_for_the_timeout_is_a_lost_link_and_the_arm_holds_its_last_target(joint_arm):
    emulator, clock, arm = joint_arm
    ticks(arm, clock, Target.joint([0.2, 0.6, -0.4, 0.1, 0.1, 0.1], [0.5]), 0.4)
    emulator.call("silence")
    silent_from = clock.now
    with pytest.raises(ArmLinkError, match=r"no feedback frame 0x2a\d for 10\d ms \(timeout_ms 100\)"):
        while True:
            arm.poll_state()
            clock.advance(PERIOD)
    assert 0.1 <= clock.now - silent_from <= 0.1 + 2 * PERIOD
    before = emulator.call("snapshot")
    clock.advance(0.5)  # nobody commands it now
    after = emulator.call("snapshot")
    assert after["joints"] == pytest.approx(before["joints"], abs=1e-4)
    assert after["joints"] == pytest.approx(after["joint_target"], abs=1e-3)
    emulator.call("speak")
    arm.connect()  # the control loop's reconnect: holds the measured pose
    assert arm.poll_state().joint_positions == pytest.approx(after["joints"], abs=1e-4)


def test_bus_off_is_a_lost_link_and_other_error_frames_are_counted(joint_arm):
    emulator, clock, arm = joint_arm
    emulator.call("error_frames", classes=[0x004, 0x020, 0x020])
    clock.advance(PERIOD)
    arm.poll_state()  # error frames alone are no lost link
    assert {k: v for k, v in arm.counters().items() if k.startswith("error_frames")} == {
        "error_frames_controller": 1, "error_frames_no_ack": 2}
    emulator.call("bus_off")
    clock.advance(PERIOD)
    with pytest.raises(ArmLinkError, match="bus-off"):
        arm.poll_state()


@pytest.mark.parametrize("command, args, flag, name", [
    ("press_estop", {}, FaultFlag.ESTOP, "EMERGENCY_STOP"),
    ("set_status", {"arm_status": 0x07}, FaultFlag.OVER_CURRENT, "COLLISION"),
    ("set_status", {"arm_status": 0x0E}, FaultFlag.OVER_TEMPERATURE, "MAIN_CONTROLLER_OVER_TEMPERATURE"),
    ("set_status", {"arm_status": 0x0B}, FaultFlag.HOST_TIMEOUT, "TEACHING_RECORD"),
    ("joint_limit", {"joints": [2, 5]}, FaultFlag.AT_LIMIT, "joint5_angle_limit"),
    ("comm_error", {"joints": [3]}, FaultFlag.ENCODER, "joint3_communication_error"),
    ("driver_fault", {"motor": 4, "bits": ["collision_protection"]}, FaultFlag.OVER_CURRENT,
     "joint4_collision_protection"),
    ("driver_fault", {"motor": 1, "bits": ["voltage_low"]}, FaultFlag.SUPPLY_VOLTAGE, "joint1_voltage_low"),
    ("driver_fault", {"motor": 6, "bits": ["stall_protection"]}, FaultFlag.OVER_CURRENT, "joint6_stall_protection"),
    ("driver_fault", {"motor": 7, "bits": ["driver_over_temperature"]}, FaultFlag.OVER_TEMPERATURE,
     "gripper_driver_over_temperature"),
])
def test_the_arms_faults_are_flagged_and_named(joint_arm, command, args, flag, name):
    emulator, clock, arm = joint_arm
    target = Target.joint([0.0, 0.3, -0.3, 0.0, 0.2, 0.0], [0.5])
    emulator.call(command, **args)
    clock.advance(0.06)  # the low-speed driver frames come every 50 ms
    state = arm.poll_state()
    assert state.faults & flag and name in state.mode.split(), state.mode
    if flag == FaultFlag.AT_LIMIT:  # a warning: targets still go out
        arm.send_target(target)
    else:
        with pytest.raises(ArmFault, match=name) as info:
            arm.send_target(target)
        assert info.value.flags & flag and info.value.reason in ("faulted", "estop")
    emulator.call("clear_faults")
    clock.advance(0.06)
    assert not arm.poll_state().faults & ~FaultFlag.AT_LIMIT
    arm.send_target(target)


def test_an_arm_taken_out_of_can_control_is_a_fault_and_a_hold_does_not_take_it_back(joint_arm):
    emulator, clock, arm = joint_arm
    emulator.call("set_ctrl_mode", ctrl_mode=0x02)  # the teach button
    clock.advance(PERIOD)
    state = arm.poll_state()
    assert state.faults & FaultFlag.HOST_TIMEOUT and "ctrl_mode=TEACHING" in state.mode.split()
    received = emulator.call("snapshot")["received"]
    arm.hold()
    arm.estop()
    clock.advance(PERIOD)
    snap = emulator.call("snapshot")
    assert snap["received"] == received and snap["ctrl_mode"] == "TEACHING"  # nothing sent: not ours now
    with pytest.raises(ArmFault, match="ctrl_mode=TEACHING"):
        arm.clear_estop() or arm.send_target(Target.joint([0.0, 0.3, -0.3, 0.0, 0.2, 0.0], [0.5]))
    arm.connect()  # taking command again is connect's
    assert emulator.call("snapshot")["ctrl_mode"] == "CAN_CTRL" and not arm.poll_state().faults & ~FaultFlag.AT_LIMIT


def test_targets_the_arm_cannot_take_are_refused_before_anything_is_sent(joint_arm):
    emulator, clock, arm = joint_arm
    sent = emulator.call("snapshot")["received"]
    for joints, why in [([3.0, 0.3, -0.3, 0, 0, 0], "joint 1 = 3.0 rad, outside the arm's -2.6179..2.6179"),
                        ([0, 0.3, math.nan, 0, 0, 0], "non-finite"), ([0, 0.3, -0.3, 0, math.inf, 0], "non-finite")]:
        with pytest.raises(ArmFault, match=why) as info:
            arm.send_target(Target.joint(joints, [0.5]))
        assert info.value.reason == "out_of_limits"
    with pytest.raises(ArmConfigError, match="streams 'joint' targets"):
        arm.send_target(Target.ee([[0.2, 0, 0.2]], [[0, 0, 0, 1]], [0.5]))
    with pytest.raises(ArmConfigError, match="expected 1 arm and 6 joints"):
        arm.send_target(Target.joint([0.0] * 7, [0.5]))
    clock.advance(PERIOD)
    assert emulator.call("snapshot")["received"] == sent


def test_an_end_pose_beyond_reach_is_refused(ee_arm):
    emulator, clock, arm = ee_arm
    with pytest.raises(ArmFault, match=r"beyond ±1 m") as info:
        arm.send_target(Target.ee([[0.2, 1.5, 0.2]], [[0, 0, 0, 1]], [0.5]))
    assert info.value.reason == "out_of_limits"


def test_the_tick_never_waits(joint_arm):
    """poll_state and send_target only ever ask python-can for what has already arrived (timeout 0), with the
    arm streaming, silent, or flooding; a flood is taken ``max_frames_per_poll`` frames a tick."""
    emulator, clock, arm = joint_arm
    asked = []
    recv, bus = arm._bus.recv, arm._bus

    def spy(timeout=None):
        asked.append(timeout)
        return recv(timeout=timeout)

    bus.recv = spy
    ticks(arm, clock, Target.joint([0.1, 0.4, -0.4, 0.1, 0.1, 0.1], [0.5]), 0.2)
    emulator.call("silence")
    clock.advance(0.05)
    arm.poll_state()  # silent, not yet lost: returns the newest state at once
    import can

    flood = can.Bus(interface="virtual", channel=arm.channel)
    for i in range(2000):
        flood.send(can.Message(arbitration_id=0x3FF, data=bytes(8), is_extended_id=False))
    arm.poll_state()
    assert set(asked) == {0.0} and arm.counters()["polls_full"] == 1
    assert arm.counters()["frames_ignored"] == arm.max_frames_per_poll
    flood.shutdown()


def test_a_full_transmit_queue_skips_the_target_and_a_lasting_one_is_a_lost_link(joint_arm):
    import can

    emulator, clock, arm = joint_arm

    def full(msg, timeout=None):
        raise can.CanOperationError("Transmit buffer full")

    arm._bus.send = full
    target = Target.joint([0.0, 0.3, -0.3, 0.0, 0.2, 0.0], [0.5])
    arm.send_target(target)  # skipped, counted: the next tick's target is newer
    assert arm.counters()["targets_skipped"] == 1
    with pytest.raises(ArmLinkError, match=r"cannot transmit for \d+ ms \(Transmit buffer full\)"):
        for _ in range(40):
            clock.advance(PERIOD)
            arm.send_target(target)


def test_the_probe_reads_everything_and_sends_nothing(channel):
    emulator, clock, arm = emulated(channel, step=0.005, space="ee")
    emulator.call("joint_limit", joints=[6])
    emulator.call("driver_fault", motor=2, bits=["over_current"])
    report = arm.probe()
    snap = emulator.call("snapshot")
    assert snap["received"] == {} and not snap["enabled"] and snap["ctrl_mode"] == "STANDBY"  # nothing sent
    report = json.loads(json.dumps(report))  # JSON-able
    assert report["joint_positions_deg"] == pytest.approx(np.degrees(PiperConfig().joints), abs=1e-3)
    assert report["end_pose"]["position_m"] == pytest.approx(PiperConfig().pose[:3])
    assert report["status"]["ctrl_mode"] == "STANDBY" and report["status"]["joints_at_angle_limit"] == [6]
    assert "over_current" in report["drivers"][1]["status"] and "enabled" not in report["drivers"][1]["status"]
    assert report["feedback_rate_hz"] == pytest.approx(200, rel=0.02) and report["missing"] == []
    assert {"joint6_angle_limit", "joint2_over_current", "ctrl_mode=STANDBY"} <= set(report["faults"])
    assert report["gripper"]["stroke_mm"] == pytest.approx(10.0) and "homed" in report["gripper"]["status"]
    assert report["link"] and "the arm reports joint2_over_current" in report["problems"]  # `xvla-edge arm check`
    emulator.close()


def test_the_probe_of_a_silent_bus_says_what_never_came(channel):
    emulator, clock, arm = emulated(channel, step=0.01)
    emulator.call("silence")
    report = arm.probe()
    assert len(report["missing"]) == 8 and report["frames_seen"] == {} and "joint_positions_deg" not in report
    assert not report["link"] and report["problems"][0].startswith("no frame from the arm in ")
    emulator.close()


def test_connect_to_a_silent_arm_fails_naming_what_never_came(channel):
    emulator, clock, arm = emulated(channel, step=0.01)
    emulator.call("silence")
    with pytest.raises(ArmLinkError, match=r"no feedback from the arm .* within 300 ms \(never received 0x2a1, "
                                           r".*is the arm powered"):
        arm.connect()
    emulator.close()


@pytest.mark.parametrize("keywords, message", [
    ({"space": "cartesian"}, "PiperArm.space: expected one of ('ee', 'joint')"),
    ({"channel": "can0; rm -rf /"}, "PiperArm.channel: 'can0; rm -rf /' is not a network interface name"),
    ({"channel": ""}, "PiperArm.channel: expected a CAN interface name"),
    ({"timeout_ms": 5}, "PiperArm.timeout_ms: expected 20..1000 ms, got 5"),
    ({"speed_percent": 0}, "PiperArm.speed_percent: expected 1..100, got 0"),
    ({"gripper_open_mm": 1e9}, "PiperArm.gripper_open_mm: expected 1..150 mm, got 1000000000.0"),
    ({"gripper_effort": -1}, "PiperArm.gripper_effort: expected 0.1..5 N·m, got -1"),
])
def test_the_constructor_names_what_it_refuses(keywords, message):
    with pytest.raises(ArmConfigError) as info:
        PiperArm(**keywords)
    assert str(info.value).startswith(message)


def test_nothing_works_before_connect():
    arm = PiperArm("can0")
    with pytest.raises(ArmConfigError, match="not connected"):
        arm.poll_state()
    with pytest.raises(ArmConfigError, match="not connected"):
        arm.capabilities
    arm.close()  # nothing to close: fine
