"""The vendor's SDK (``piper_sdk`` 0.6.2) as the independent oracle, on the same python-can virtual bus as ours.

How the SDK is pointed at a virtual bus, unchanged: ``C_PiperInterface_V2(can_name=ch, judge_flag=False,
can_auto_init=False)`` (no socketcan checks, no bus yet), then its own ``CreateCanBus(ch, bustype="virtual",
judge_flag=False)`` (its ``C_STD_CAN`` opens python-can's ``virtual`` interface where it would open
``socketcan``) and ``ConnectPort(piper_init=False)`` (its reading threads; no parameter queries sent). The SDK
keeps one interface object per channel name for the whole process, so every test has a channel of its own.

- What we send: for the same command, the SDK's API sends byte-identical frames (ID, standard 11-bit, 8 data
  bytes). Commands are drawn as the SDK's integers (0.001 degree, 0.001 mm); our driver gets them as a
  :class:`~drivers.arm.Target` in rad and m (the orientation made by the SDK's own ``euler_convert_quat``) and
  must arrive at the same integers.
- What we read: the SDK parses the emulator's feedback frames into the values our driver reads (joints, end
  pose, gripper, status codes and bits, motor speeds, the drivers' status bits, voltages and temperatures).
  The SDK's low-speed parser leaves two bits undecoded (collision and stall protection: its setter never
  sets them), so those two are checked against the frame's documented bit positions instead.
"""

from __future__ import annotations

import math
import random
import time
from typing import Iterator, List, Tuple

import numpy as np
import pytest

from drivers.arm import Target
from drivers.piper import protocol as p
from drivers.piper.arm import JOINT_LIMITS, PiperArm
from drivers.piper.emulator import VirtualBusEmulator
from tests.support.piper_bus import NEEDS_CAN, fresh_channel

pytestmark = [NEEDS_CAN, pytest.mark.filterwarnings("ignore:The 'bustype' argument:DeprecationWarning")]
sdk_module = pytest.importorskip("piper_sdk", reason="piper_sdk (the vendor's SDK, a test oracle) is not installed")
tf = pytest.importorskip("piper_sdk.utils.tf", reason="piper_sdk (the vendor's SDK, a test oracle) is not installed")


class Rig:
    """Our arm, connected to the emulator running in a thread, and the SDK, all on one virtual channel; a
    listener bus that records every host frame."""

    def __init__(self, space: str, **options: object) -> None:
        import can

        self.channel = fresh_channel()
        self.emulator = VirtualBusEmulator(self.channel).start()
        self.listener = can.Bus(interface="virtual", channel=self.channel)
        self.arm = PiperArm(self.channel, interface="virtual", space=space, **options)  # type: ignore[arg-type]
        self.arm.connect()
        self.sdk = sdk_module.C_PiperInterface_V2(can_name=self.channel, judge_flag=False, can_auto_init=False)
        self.sdk.CreateCanBus(self.channel, bustype="virtual", judge_flag=False)
        self.sdk.ConnectPort(piper_init=False)

    def sent(self) -> List[Tuple[int, bytes, int, bool]]:
        """The host frames heard since the last call: (ID, data, DLC, extended). Silences the emulator (then only
        hosts talk: a quiet bus ends the listening)."""
        self.emulator.call("silence")
        frames = []
        while (msg := self.listener.recv(timeout=0.05)) is not None:
            if msg.arbitration_id in p.COMMAND_IDS:
                frames.append((msg.arbitration_id, bytes(msg.data), msg.dlc, msg.is_extended_id))
        return frames

    def close(self) -> None:
        self.sdk.DisconnectPort()
        self.arm.close()
        self.emulator.close()
        self.listener.shutdown()


@pytest.fixture
def rig() -> Iterator:
    made: List[Rig] = []

    def make(space: str, **options: object) -> Rig:
        made.append(Rig(space, **options))
        return made[-1]

    yield make
    for r in made:
        r.close()


def _joint_command(rng: random.Random) -> List[int]:
    return [rng.randint(math.ceil(math.degrees(j.lower) * 1000), math.floor(math.degrees(j.upper) * 1000))
            for j in JOINT_LIMITS]


def test_connect_enables_the_motors_as_the_sdks_enable_does(rig):
    r = rig("joint")
    ours = {frame for frame in r.sent() if frame[0] == p.MOTOR_ENABLE}  # what connect sent (repeated until enabled)
    r.sdk.EnableArm(7)  # what the SDK's EnablePiper sends
    assert ours == set(r.sent()) == {(p.MOTOR_ENABLE, bytes([7, 2, 0, 0, 0, 0, 0, 0]), 8, False)}


@pytest.mark.parametrize("speed", [100, 37])
def test_joint_targets_are_the_sdks_frames_byte_for_byte(rig, speed):
    rng = random.Random(speed)
    r = rig("joint", speed_percent=speed, gripper_effort=2.5)
    r.sent()
    for _ in range(12):
        mdeg, stroke = _joint_command(rng), rng.randint(0, 70_000)
        r.arm.send_target(Target.joint([math.radians(v / 1000) for v in mdeg], [stroke / 70_000]))
        ours = r.sent()
        r.sdk.MotionCtrl_2(0x01, 0x01, speed, 0x00)
        r.sdk.JointCtrl(*mdeg)
        r.sdk.GripperCtrl(stroke, 2500, 0x01, 0)
        theirs = r.sent()
        assert ours == theirs and [f[0] for f in ours] == [0x151, 0x155, 0x156, 0x157, 0x159]


def test_end_pose_targets_are_the_sdks_frames_byte_for_byte(rig):
    rng = random.Random(5)
    r = rig("ee")
    r.sent()
    for _ in range(20):
        xyz = [rng.randint(-600_000, 600_000) for _ in range(3)]
        angles = [rng.randint(-179_000, 179_000), rng.randint(-85_000, 85_000), rng.randint(-179_000, 179_000)]
        quat = tf.euler_convert_quat(*(math.radians(a / 1000) for a in angles))
        stroke = rng.randint(0, 70_000)
        r.arm.send_target(Target.ee([[v / 1e6 for v in xyz]], [quat], [stroke / 70_000]))
        ours = r.sent()
        r.sdk.MotionCtrl_2(0x01, 0x00, 100, 0x00)
        r.sdk.EndPoseCtrl(*xyz, *angles)
        r.sdk.GripperCtrl(stroke, 1000, 0x01, 0)
        assert ours == r.sent()


def test_the_sdk_reads_our_emulators_feedback_as_our_driver_does(rig):
    rng = random.Random(11)
    r = rig("joint")
    for trial in range(4):
        joints = [math.radians(v / 1000) for v in _joint_command(rng)]
        pose = [rng.uniform(-0.6, 0.6) for _ in range(3)] + [rng.uniform(-3.1, 3.1), rng.uniform(-1.5, 1.5),
                                                             rng.uniform(-3.1, 3.1)]
        velocities = [rng.uniform(-3, 3) for _ in range(6)]
        r.emulator.call("set_state", joints=joints, pose=pose, gripper_mm=rng.uniform(0, 70), velocities=velocities)
        r.emulator.call("joint_limit", joints=rng.sample(range(1, 7), trial))
        r.emulator.call("comm_error", joints=rng.sample(range(1, 7), trial))
        r.emulator.call("set_status", arm_status=rng.choice(sorted(p.ARM_STATUSES)))
        motor, bits = rng.randint(1, 6), rng.sample(
            ["voltage_low", "motor_over_temperature", "over_current", "driver_over_temperature", "driver_error"], 2)
        r.emulator.call("driver_fault", motor=motor, bits=bits)
        settle(r, joints, motor, bits)
        state, report = r.arm.poll_state(), r.arm.probe()
        joints_sdk = r.sdk.GetArmJointMsgs().joint_state
        sdk_q = [getattr(joints_sdk, f"joint_{i}") for i in range(1, 7)]
        assert state.joint_positions == pytest.approx([math.radians(v / 1000) for v in sdk_q], abs=1e-12)
        end = r.sdk.GetArmEndPoseMsgs().end_pose
        assert state.position[0] == pytest.approx([end.X_axis / 1e6, end.Y_axis / 1e6, end.Z_axis / 1e6], abs=1e-12)
        sdk_quat = tf.euler_convert_quat(*(math.radians(v / 1000) for v in (end.RX_axis, end.RY_axis, end.RZ_axis)))
        assert abs(float(np.dot(sdk_quat, state.quaternion[0]))) == pytest.approx(1.0, abs=1e-12)
        gripper = r.sdk.GetArmGripperMsgs().gripper_state
        assert state.gripper[0] == pytest.approx(gripper.grippers_angle / 70_000, abs=1e-12)
        assert report["gripper"]["stroke_mm"] == gripper.grippers_angle / 1000
        assert set(report["gripper"]["status"]) == {name for name in p.GRIPPER_STATUS_BITS.values()
                                                    if getattr(gripper.foc_status, _SDK_GRIPPER[name])}
        status = r.sdk.GetArmStatus().arm_status
        ours = report["status"]
        assert (ours["ctrl_mode"], ours["arm_status"]) == (_sdk_name(status.ctrl_mode), _sdk_name(status.arm_status))
        assert ours["joints_at_angle_limit"] == [j for j in range(1, 7)
                                                  if getattr(status.err_status, f"joint_{j}_angle_limit")]
        assert ours["joints_not_communicating"] == [j for j in range(1, 7)
                                                     if getattr(status.err_status, f"communication_status_joint_{j}")]
        high = r.sdk.GetArmHighSpdInfoMsgs()
        assert state.joint_velocities == pytest.approx([getattr(high, f"motor_{i}").motor_speed / 1000
                                                        for i in range(1, 7)], abs=1e-12)
        low = r.sdk.GetArmLowSpdInfoMsgs()
        for driver in report["drivers"]:
            theirs = getattr(low, f"motor_{driver['joint']}")
            decoded = {name for name, attr in _SDK_DRIVER.items() if getattr(theirs.foc_status, attr)}
            assert decoded == set(driver["status"]) & set(_SDK_DRIVER), driver
            assert (driver["voltage_v"], driver["driver_temp_c"], driver["motor_temp_c"]) == (
                theirs.vol / 10, theirs.foc_temp, theirs.motor_temp)


def settle(r: Rig, joints: List[float], motor: int, bits: List[str], timeout_s: float = 10.0) -> None:
    """Wait until the SDK's reading thread has caught up with what the emulator now sends (it parses each frame
    in Python under locks: on a loaded machine it can lag the bus by a fraction of a second)."""
    wanted = [p.millidegrees(q) for q in joints]
    deadline = time.monotonic() + timeout_s
    while True:
        state = r.sdk.GetArmJointMsgs().joint_state
        driver = getattr(r.sdk.GetArmLowSpdInfoMsgs(), f"motor_{motor}").foc_status
        if [getattr(state, f"joint_{i}") for i in range(1, 7)] == wanted and all(
                getattr(driver, _SDK_DRIVER[b]) for b in bits):
            break
        assert time.monotonic() < deadline, "the SDK did not catch up with the emulator"
        time.sleep(0.02)
    time.sleep(0.1)  # the last of the other frames


# Our bit names → the SDK's attribute names (its foc_status objects).
_SDK_DRIVER = {"voltage_low": "voltage_too_low", "motor_over_temperature": "motor_overheating",
               "over_current": "driver_overcurrent", "driver_over_temperature": "driver_overheating",
               "driver_error": "driver_error_status", "enabled": "driver_enable_status"}
_SDK_GRIPPER = {**_SDK_DRIVER, "sensor_error": "sensor_status", "homed": "homing_status"}
# The SDK's enum names where they are spelt differently from ours.
_SDK_NAMES = {"CAN_CTRL": "CAN_CTRL", "TEACHING_MODE": "TEACHING", "ETHERNET_CONTROL_MODE": "ETHERNET",
              "WIFI_CONTROL_MODE": "WIFI", "REMOTE_CONTROL_MODE": "REMOTE",
              "OFFLINE_TRAJECTORY_MODE": "OFFLINE_TRAJECTORY",
              "SINGULARITY_POINT": "SINGULARITY", "TARGET_POS_EXCEEDS_LIMIT": "TARGET_EXCEEDS_LIMIT",
              "JOINT_COMMUNICATION_ERR": "JOINT_COMMUNICATION_ERROR", "COLLISION_OCCURRED": "COLLISION",
              "JOINT_STATUS_ERR": "JOINT_STATUS_ERROR", "OTHER_ERR": "OTHER_ERROR",
              "MAIN_CONTROLLER_NTC_OVER_TEMPERATURE": "MAIN_CONTROLLER_OVER_TEMPERATURE",
              "RELEASE_RESISTOR_NTC_OVER_TEMPERATURE": "RELEASE_RESISTOR_OVER_TEMPERATURE",
              "OVERSPEED_DURING_TEACHING_DRAG": "OVERSPEED_DURING_DRAG_TEACHING",
              "LINKAGE_TEACHING_INPUT_MODE": "LINKAGE_TEACHING_INPUT"}


def _sdk_name(member: object) -> str:
    name = getattr(member, "name")
    return _SDK_NAMES.get(name, name)
