"""The emulated Piper: feedback at its rate, standby and enable, first-order tracking within its speed, joint
ranges and their status, the vendor's e-stop and reset, the slcan adapter it hides behind; and the arm driver
through a real pty to the emulator in its own process (the way the control loop and the daemon reach it)."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from drivers.piper import emulator as e
from drivers.piper import protocol as p
from tests.support.piper_bus import NEEDS_CAN

C = e.PiperConfig()


def run(model: e.PiperModel, start: float, seconds: float, dt: float = 0.001) -> Counter:
    """Step ``model`` every ``dt``; which IDs it sent, counted."""
    sent: Counter = Counter()
    for k in range(1, round(seconds / dt) + 1):
        sent.update(frame_id for frame_id, _ in model.step(start + k * dt))
    return sent


def command(model: e.PiperModel, now: float, *frames: p.Frame) -> None:
    for frame_id, data in frames:
        model.receive(frame_id, data, now)


def enabled(now: float = 0.0) -> e.PiperModel:
    model = e.PiperModel(C, now)
    command(model, now, p.mode(p.MOVE_J, 100), p.enable(True), p.gripper(10_000, 1000))
    run(model, now, 0.05)
    return model


def test_feedback_streams_at_the_arms_rate():
    sent = run(e.PiperModel(C, 0.0), 0.0, 1.0)
    assert {sent[i] for i in (*p.STREAMED, *p.HIGH_SPEED)} == {200} and {sent[i] for i in p.LOW_SPEED} == {20}


def test_standby_and_disabled_until_told_then_tracking_first_order_within_the_speed_limit():
    model = e.PiperModel(C, 0.0)
    command(model, 0.0, *p.joints([30_000, 60_000, -30_000, 0, 0, 0]))
    run(model, 0.0, 0.2)
    assert model.joints == list(C.joints)  # standby, disabled: nothing moves
    command(model, 0.2, p.mode(p.MOVE_J, 50), p.enable(True))
    run(model, 0.2, C.enable_delay_s / 2)
    assert not model.enabled
    before, last = list(model.joints), list(model.joints)
    worst = 0.0
    for k in range(1, 1001):
        model.step(0.2 + C.enable_delay_s / 2 + k * 0.001)
        worst = max(worst, max(abs(a - b) for a, b in zip(model.joints, last)))
        last = list(model.joints)
    assert model.enabled and worst <= C.max_joint_speed * 0.5 * 0.001 + 1e-12  # 50 %
    assert model.joints[:3] == pytest.approx([math.radians(30), math.radians(60), math.radians(-30)], abs=1e-6)
    assert before != model.joints


def test_a_joint_target_beyond_its_range_is_clamped_and_the_status_says_so():
    model = enabled()
    command(model, 0.05, *p.joints([0, 200_000, -30_000, 0, 0, 0]))  # joint 2 beyond 180 degrees
    run(model, 0.05, 1.5)
    status = model.status()
    assert model.joints[1] == pytest.approx(3.14, abs=1e-6) and status.arm_status == 0x04
    assert status.limit_bits == 0b10


def test_the_vendors_estop_stops_tracking_and_its_reset_drops_power():
    model = enabled()
    command(model, 0.05, (p.MOTION_CTRL_1, bytes([1, 0, 0, 0, 0, 0, 0, 0])), *p.joints([40_000] + [0] * 5))
    run(model, 0.05, 0.3)
    assert model.status().arm_status == 0x01 and model.joints[0] == C.joints[0]
    command(model, 0.35, (p.MOTION_CTRL_1, bytes([2, 0, 0, 0, 0, 0, 0, 0])))
    assert not model.enabled and model.ctrl_mode == 0x00 and model.status().arm_status == 0x00


def test_malformed_host_frames_are_counted_and_ignored():
    model = enabled()
    model.receive(0x155, bytes(4), 0.06)
    model.receive(0x155, bytes(8), 0.06, plain=False)
    assert model.refused == 2 and model.joint_target == list(C.joints)


def test_the_slcan_adapter_answers_and_carries_frames():
    device = e.SlcanDevice(enabled())
    device.feed(b"C\rS8\r\rO\r", 1.0)
    assert [reply for _, reply in device.outbox] == [b"\r"] * 4
    frame_id, data = p.joints([1000, 20_000, -3000, 0, 0, 0])[0]
    device.feed(f"t{frame_id:03X}8{data.hex().upper()}\r".encode() + b"t15\rxyz\r", 1.0)
    assert device.model.joint_target[0] == pytest.approx(math.radians(1.0)) and device.garbage == 2
    device.outbox.clear()
    device.tick(2.0)
    (due, text), = device.outbox
    lines = text.decode().split("\r")[:-1]
    assert len(lines) == 14 and all(line[0] == "t" and line[4] == "8" and len(line) == 21 for line in lines)
    assert {int(line[1:4], 16) for line in lines} == {*p.STREAMED, *p.HIGH_SPEED}
    with pytest.raises(ValueError, match="no slcan form"):
        device.control("error_frames", {"classes": [4]})


@NEEDS_CAN
@pytest.mark.subprocess
def test_the_arm_drives_the_emulator_in_its_own_process_over_a_pty_speaking_slcan():
    import time

    import numpy as np

    from drivers.arm import ArmLinkError, Target
    from drivers.piper.arm import PiperArm

    emulator = e.start(e.PiperConfig(rate_hz=100))
    arm = PiperArm(emulator.port, interface="slcan", space="joint", timeout_ms=300)
    try:
        arm.connect()  # python-can's slcan waits 2 s after opening the adapter
        goal = [0.2, 0.7, -0.5, 0.1, -0.2, 0.3]
        end = time.monotonic() + 5.0  # about 0.3 s when this process gets its share of the machine
        while not np.allclose(state := arm.poll_state().joint_positions, goal, atol=2e-3):
            assert time.monotonic() < end, state
            arm.send_target(Target.joint(goal, [0.6]))
            time.sleep(0.01)
        for _ in range(50):  # and the gripper (100 mm/s)
            arm.poll_state()
            arm.send_target(Target.joint(goal, [0.6]))
            time.sleep(0.01)
        snap = emulator.call("snapshot")
        assert snap["enabled"] and snap["ctrl_mode"] == "CAN_CTRL" and snap["refused"] == snap["garbage"] == 0
        assert snap["gripper_mm"] == pytest.approx(0.6 * 70, abs=0.5)
        emulator.call("silence")
        with pytest.raises(ArmLinkError, match="no feedback frame"):
            end = time.monotonic() + 2.0
            while time.monotonic() < end:
                arm.poll_state()
                time.sleep(0.01)
    finally:
        arm.close()
        emulator.stop()
