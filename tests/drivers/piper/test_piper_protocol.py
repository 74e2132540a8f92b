"""drivers.piper.protocol and the Euler angles it carries: the fixed-axis X-Y-Z conversion against scipy, the
byte layouts on worked examples from the vendor's documentation, refusals by name. No python-can needed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from drivers.piper import protocol as p
from drivers.quaternion import from_euler_xyz_row, to_euler_xyz_row


def test_euler_angles_are_scipys_fixed_axis_xyz():
    rotations = Rotation.random(2000, random_state=1)
    for rotation in rotations:
        ours = to_euler_xyz_row(rotation.as_quat().tolist())
        assert np.allclose(ours, rotation.as_euler("xyz"), atol=1e-9) or abs(abs(ours[1]) - math.pi / 2) < 1e-6
        assert (Rotation.from_quat(from_euler_xyz_row(*ours)).inv() * rotation).magnitude() < 1e-9
    for angles in np.random.default_rng(2).uniform([-math.pi, -math.pi / 2, -math.pi], [math.pi, math.pi / 2, math.pi],
                                                   (500, 3)):
        q = Rotation.from_euler("xyz", angles).as_quat()
        assert abs(np.dot(from_euler_xyz_row(*angles), q)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("ry", [math.pi / 2, -math.pi / 2])
def test_euler_angles_at_gimbal_lock_still_make_the_rotation(ry):
    rotation = Rotation.from_euler("xyz", [0.7, ry, -0.4])
    rx, pitch, rz = to_euler_xyz_row(rotation.as_quat().tolist())
    assert pitch == pytest.approx(ry) and rz == 0.0
    assert (Rotation.from_quat(from_euler_xyz_row(rx, pitch, rz)).inv() * rotation).magnitude() < 1e-6


def test_host_frames_on_worked_examples():
    assert p.mode(p.MOVE_J, 100) == (0x151, bytes.fromhex("0101640000000000"))
    assert p.joints([1000, -2000, 3, 4, 5, -6]) == (
        (0x155, bytes.fromhex("000003e8fffff830")), (0x156, bytes.fromhex("0000000300000004")),
        (0x157, bytes.fromhex("00000005fffffffa")))
    assert p.pose([1, 2, 3, 4, 5, 6])[1] == (0x153, bytes.fromhex("0000000300000004"))
    assert p.gripper(12345, 1000) == (0x159, bytes.fromhex("0000303903e80100"))
    assert p.enable(True) == (0x471, bytes.fromhex("0702000000000000"))
    assert (p.millidegrees(math.pi / 2), p.micrometres(-0.25), p.radians(90_000), p.metres(250_000)) == (
        90_000, -250_000, pytest.approx(math.pi / 2), 0.25)


@pytest.mark.parametrize("call, message", [
    (lambda: p.joints([2**31, 0, 0, 0, 0, 0]), "joint 1/2 = 2147483648 does not fit the protocol's int32"),
    (lambda: p.gripper(0, 5001), r"gripper effort 5001 outside 0..5000"),
    (lambda: p.mode(0x02, 50), "move_mode 2 must be MOVE_P or MOVE_J"),
    (lambda: p.mode(p.MOVE_P, 101), "speed_percent 101 within 0..100"),
    (lambda: p.decode(0x2A5, bytes(7)), "frame 0x2a5 has 7 data bytes, expected 8"),
    (lambda: p.decode(0x2A1, bytes([9, 0, 0, 0, 0, 0, 0, 0])), "control mode 0x09 is not one of the protocol's codes"),
    (lambda: p.decode(0x2A1, bytes([1, 0x42, 0, 0, 0, 0, 0, 0])), "arm status 0x42"),
    (lambda: p.decode(0x2A6, bytes.fromhex("7fffffff00000000")), r"joint 3 = 2147483647 is beyond any arm"),
    (lambda: p.decode(0x2A3, bytes.fromhex("0000000000ffffff")), r"end pose 0x2a3\[4:8\] = 16777215"),
    (lambda: p.decode(0x2A8, bytes.fromhex("ffff000000000000")), r"gripper stroke = -65536"),
    (lambda: p.decode(0x251, bytes.fromhex("8000000000000000")), r"motor 1 speed = -32768"),
])
def test_what_cannot_be_carried_or_read_is_refused_by_name(call, message):
    with pytest.raises(p.ProtocolError, match=message):
        call()


def test_every_feedback_frame_the_emulator_writes_reads_back():
    status = p.Status(0x01, 0x07, 0x01, 0, 1, 3, 0b100101, 0b000010)
    assert p.decode(*p.status_frame(status)) == status
    assert p.decode(*p.gripper_feedback(p.Gripper(70_000, -1200, 0xC0))) == p.Gripper(70_000, -1200, 0xC0)
    assert p.decode(*p.high_speed_frame(p.HighSpeed(4, -3000, 12, 99))) == p.HighSpeed(4, -3000, 12, 99)
    low = p.LowSpeed(6, 245, -3, 41, 0x50, 1500)
    assert p.decode(*p.low_speed_frame(low)) == low
    assert p.decode(0x2A4, bytes.fromhex("fffffc1800000001")) == p.Pair(2, -1000, 1)
    assert p.decode(0x123, bytes(8)) is None  # not feedback this driver reads
    assert p.bits(0x50, p.DRIVER_STATUS_BITS) == ("collision_protection", "enabled")
