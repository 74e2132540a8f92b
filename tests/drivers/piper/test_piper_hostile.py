"""Hostile input on the CAN wire: 100,000 frames (truncated, over-long, corrupted, wrong IDs, remote, extended,
FD, error frames, values out of range, DLC and data disagreeing, another host's commands) reach the driver's
frame handler; 10,000 hostile slcan lines reach it through python-can's slcan parser; a flood arrives on the
bus while the tick runs. Nothing raises, and the driver's feedback only ever holds what a valid frame said.

Valid is restated here from the protocol's definition (the vendor's documentation of each frame: 8 bytes,
big-endian, the code tables, the plausible ranges of :mod:`drivers.piper.protocol`), and the values a valid
frame carries are decoded here with ``struct`` independently of the driver."""

from __future__ import annotations

import random
import struct
from typing import Any, Optional

import pytest

from drivers.arm import ArmLinkError, Target
from drivers.piper import protocol as p
from drivers.piper.arm import PiperArm
from tests.support.piper_bus import NEEDS_CAN, emulated

pytestmark = NEEDS_CAN
FEEDBACK = (p.STATUS, *p.END_POSE, *p.JOINTS, p.GRIPPER, *p.HIGH_SPEED, *p.LOW_SPEED)
CODE_RANGES = (range(0, 8), range(0, 16), range(0, 6), range(0, 8), range(0, 2))  # status bytes 0-4


def expected(frame_id: int, data: bytes) -> Optional[Any]:
    """What a valid 8-byte frame of a feedback ID carries, as the driver should store it; None when invalid."""
    if frame_id == p.STATUS:
        if any(b not in r for b, r in zip(data, CODE_RANGES)):
            return None
        return (*data[:6], data[6] & 0x3F, data[7] & 0x3F)
    if frame_id in p.END_POSE or frame_id in p.JOINTS:
        a, b = struct.unpack(">ii", data)
        bounds = {p.END_POSE[0]: (2_000_000, 2_000_000), p.END_POSE[1]: (2_000_000, 360_000),
                  p.END_POSE[2]: (360_000, 360_000)}.get(frame_id, (360_000, 360_000))
        return (a, b) if abs(a) <= bounds[0] and abs(b) <= bounds[1] else None
    if frame_id == p.GRIPPER:
        stroke, effort, status = struct.unpack(">ihB", data[:7])
        return (stroke, effort, status) if -10_000 <= stroke <= 200_000 else None
    if frame_id in p.HIGH_SPEED:
        speed = struct.unpack(">h", data[:2])[0]
        return speed if abs(speed) <= 20_000 else None
    return struct.unpack(">HhbBH", data)  # low speed: every value is in range


def stored(arm: PiperArm, frame_id: int) -> Any:
    """What the driver holds for ``frame_id``."""
    fb = arm._fb
    if frame_id == p.STATUS:
        s = fb.status
        return (s.ctrl_mode, s.arm_status, s.move_mode, s.teach_status, s.motion_status, s.trajectory_point,
                s.limit_bits, s.comm_bits)
    for ids, values in ((p.END_POSE, fb.pose), (p.JOINTS, fb.joints)):
        if frame_id in ids:
            i = ids.index(frame_id)
            return tuple(values[2 * i: 2 * i + 2])
    if frame_id == p.GRIPPER:
        return (fb.gripper.stroke_um, fb.gripper.effort, fb.gripper.status)
    if frame_id in p.HIGH_SPEED:
        return fb.speeds[frame_id - p.HIGH_SPEED[0]]
    d = fb.drivers[frame_id - p.LOW_SPEED[0] + 1]
    return (d.voltage, d.driver_temp, d.motor_temp, d.status, d.bus_current)


def _valid_data(rng: random.Random, frame_id: int) -> bytes:
    if frame_id == p.STATUS:
        return bytes([rng.choice(r) for r in CODE_RANGES] + [rng.randrange(256) for _ in range(3)])
    if frame_id in p.END_POSE or frame_id in p.JOINTS:
        return struct.pack(">ii", rng.randint(-300_000, 300_000), rng.randint(-300_000, 300_000))
    if frame_id == p.GRIPPER:
        return struct.pack(">ihBB", rng.randint(0, 100_000), rng.randint(-5000, 5000), rng.randrange(256), 0)
    if frame_id in p.HIGH_SPEED:
        return struct.pack(">hhi", rng.randint(-20_000, 20_000), rng.randint(-5000, 5000), rng.randint(-10**6, 10**6))
    return bytes(rng.randrange(256) for _ in range(8))


def hostile(rng: random.Random) -> Any:
    """One frame off a hostile wire (python-can keyword arguments)."""
    import can

    frame_id = rng.choice(FEEDBACK)
    kind = rng.randrange(12)
    data = _valid_data(rng, frame_id)
    fields: dict = {"arbitration_id": frame_id, "data": data, "is_extended_id": False}
    if kind == 0:  # truncated
        fields["data"] = data[: rng.randrange(8)]
    elif kind == 1:  # random bytes (valid or not, by chance)
        fields["data"] = bytes(rng.randrange(256) for _ in range(8))
    elif kind == 2:  # one byte corrupted
        i = rng.randrange(8)
        fields["data"] = data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1:]
    elif kind == 3:  # out of range on purpose
        fields["data"] = struct.pack(">ii", rng.choice([2**31 - 1, -2**31, 10**9, -400_000]), 0)
    elif kind == 4:  # a wrong ID: anything 11-bit
        fields["arbitration_id"] = rng.randrange(0x800)
    elif kind == 5:  # the same ID, extended
        fields["is_extended_id"] = True
    elif kind == 6:  # remote frame
        fields.update(is_remote_frame=True, data=b"", dlc=8)
    elif kind == 7:  # FD, over-long
        fields.update(is_fd=True, data=data + bytes(rng.randrange(256) for _ in range(rng.choice([4, 8, 16, 56]))))
    elif kind == 8:  # error frame
        fields.update(is_error_frame=True, arbitration_id=rng.randrange(0x200) & ~0x040, data=bytes(8))
    elif kind == 9:  # DLC and data disagree
        fields.update(data=data[:5], dlc=8)
    elif kind == 10:  # another host commanding the arm
        fields["arbitration_id"] = rng.choice(sorted(p.COMMAND_IDS))
    return can.Message(**fields)  # kind 11: a valid frame


def test_100000_hostile_frames_crash_nothing_and_no_corrupt_frame_is_accepted():
    rng = random.Random(2026)
    arm = PiperArm("fuzz", interface="virtual")
    accepted = refused = 0
    for n in range(100_000):
        msg = hostile(rng)
        before = arm._fb.frames[msg.arbitration_id]
        arm._take(msg, float(n))  # must not raise
        plain = not (msg.is_error_frame or msg.is_remote_frame or msg.is_extended_id or msg.is_fd)
        valid = (plain and msg.arbitration_id in FEEDBACK and msg.dlc == len(msg.data) == 8
                 and expected(msg.arbitration_id, bytes(msg.data)) is not None)
        assert arm._fb.frames[msg.arbitration_id] - before == valid, (n, msg)
        if valid:
            accepted += 1
            assert stored(arm, msg.arbitration_id) == expected(msg.arbitration_id, bytes(msg.data)), (n, msg)
        elif plain and msg.arbitration_id in FEEDBACK:
            refused += 1
    counters = arm.counters()
    assert counters["frames_refused"] >= refused > 10_000 and accepted > 10_000
    assert sum(v for k, v in counters.items() if k.startswith("error_frames_")) > 5_000
    assert counters["foreign_commands"] > 5_000


def test_10000_hostile_slcan_lines_are_refused_or_read_right():
    """Through python-can's own slcan parser (a pyserial ``loop://`` port stands in for the adapter): lines cut
    short, bad hex, a DLC that disagrees, bytes that are no line at all."""
    arm = PiperArm("loop://", interface="slcan", timeout_ms=1000)
    arm._bus = arm._open()  # python-can's slcan bus on the loop port (it waits 2 s after opening, as for adapters)
    port = arm._bus.serialPortOrig
    rng = random.Random(7)
    for n in range(10_000):
        frame_id = rng.choice(FEEDBACK)
        data = _valid_data(rng, frame_id)
        line = f"t{frame_id:03X}8{data.hex().upper()}"
        cut = rng.randrange(6)
        if cut == 0:
            line = line[: rng.randrange(len(line))]
        elif cut == 1:
            line = line[:6] + "Z" + line[7:]
        elif cut == 2:
            line = line[:4] + str(rng.randrange(8)) + line[5:]
        elif cut == 3:
            line = "".join(rng.choice("t0123456789ABCDEFGxz\a ") for _ in range(rng.randrange(30)))
        before = dict(arm._fb.frames)
        port.write(line.encode("latin-1") + b"\r")
        arm._drain()  # must not raise
        taken = [i for i, count in arm._fb.frames.items() if count != before.get(i, 0)]
        if cut >= 4:  # untouched: read as sent
            assert taken == [frame_id] and stored(arm, frame_id) == expected(frame_id, data)
        for i in taken:  # whatever was taken is a whole valid frame, stored as it said
            assert line[0] == "t" and int(line[1:4], 16) == i and line[4] == "8", line
            assert stored(arm, i) == expected(i, bytes.fromhex(line[5:21])), line
    assert arm.counters()["frames_refused"] > 1000
    arm.close()  # python-can's shutdown writes a last close command to the adapter


def test_a_flood_on_the_bus_neither_blocks_the_tick_nor_bends_the_state(channel):
    """An attacker's 200 hostile frames per 5 ms tick, for a second, while the arm streams: every tick returns
    (its receiving never waits), the state stays the arm's own, and targets keep flowing."""
    import can

    emulator, clock, arm = emulated(channel, space="joint", max_frames_per_poll=1024)
    arm.connect()
    attacker = can.Bus(interface="virtual", channel=channel)
    rng = random.Random(3)
    target = Target.joint([0.2, 0.6, -0.4, 0.1, 0.1, 0.1], [0.5])
    for _ in range(200):
        for _ in range(200):
            msg = hostile(rng)
            if msg.arbitration_id in p.COMMAND_IDS or msg.is_error_frame and msg.arbitration_id & 0x040:
                continue  # an attacker who commands the arm or fakes bus-off is another test's business
            if msg.arbitration_id in FEEDBACK and len(msg.data) == 8 and expected(msg.arbitration_id, bytes(msg.data)) \
                    is not None and not (msg.is_extended_id or msg.is_remote_frame or msg.is_fd):
                continue  # valid but false frames would be believed: CAN has no sender authentication
            attacker.send(msg)
        state = arm.poll_state()
        arm.send_target(target)
        clock.advance(0.005)
    snap = emulator.call("snapshot")
    assert state.joint_positions == pytest.approx(snap["joints"], abs=0.05)
    assert snap["joints"] == pytest.approx([0.2, 0.6, -0.4, 0.1, 0.1, 0.1], abs=1e-3)
    assert arm.counters()["frames_refused"] > 10_000
    attacker.shutdown()
    arm.close()
    emulator.close()


def test_a_forged_bus_off_is_taken_at_its_word():
    """An error frame saying bus-off stops streaming: holding is the safe reading of a lie."""
    import can

    arm = PiperArm("forged", interface="virtual")
    arm._take(can.Message(is_error_frame=True, arbitration_id=0x040, data=bytes(8)), 0.0)
    with pytest.raises(ArmLinkError, match="bus-off"):
        arm._check_link()
