"""The Piper's CAN protocol as this project uses it: frame IDs, byte layouts and scales (pure, no I/O).

The arm talks classic CAN at 1 Mbit/s: standard 11-bit IDs, always 8 data bytes, integers big-endian. Facts
from the vendor's SDK (``piper_sdk`` 0.6.2 on the package index: ``piper_msgs/msg_v2``, its protocol parser
``protocol/protocol_v2`` and ``interface/piper_interface_v2``), read for the facts and written anew here.

Host to arm (what :class:`~drivers.piper.arm.PiperArm` sends):

=========  =====================================================================================================
ID         bytes
=========  =====================================================================================================
``0x151``  motion control 2: control mode (``0x01`` CAN command control), move mode (``0x00`` MOVE P: Cartesian
           pose, ``0x01`` MOVE J: joints), speed percent 0-100, MIT mode (``0x00`` position-velocity), offline
           trajectory dwell (0), installation position (``0x00``: leave as set), two zero bytes
``0x152``  Cartesian target X, Y: int32 each, 0.001 mm
``0x153``  Z (0.001 mm), RX (0.001 degree)
``0x154``  RY, RZ (0.001 degree); RX, RY, RZ are fixed-axis X-Y-Z Euler angles: R = Rz(RZ) Ry(RY) Rx(RX)
``0x155``  joint targets 1, 2: int32 each, 0.001 degree (``0x156``: joints 3, 4; ``0x157``: joints 5, 6)
``0x159``  gripper: stroke int32 (0.001 mm), effort uint16 (0.001 N·m, 0-5000), code (``0x01`` enable),
           set-zero (``0x00``)
``0x471``  motor enable: motor (``7``: the SDK's ``EnablePiper`` uses 7 for every motor, though one docstring
           of its message calls 7 the gripper and ``0xFF`` all), flag (``0x02`` enable, ``0x01`` disable),
           six zero bytes
=========  =====================================================================================================

Not sent: ``0x150`` (motion control 1) byte 0 ``0x01``, the vendor's "emergency stop", lets the arm sink slowly
and needs a reset (``0x02``: the motors lose power and the arm falls) and two enables after it; the project's
stop holds position with power on (:mod:`drivers.arm`), so this driver never sends it. The emulator models it.

Arm to host (feedback, about 200 Hz): ``0x2A1`` status (control mode, arm status, move mode, teach status,
motion status, trajectory point, then a uint16 whose high byte has the joints' angle-limit bits 0-5 and low
byte the joints' communication-error bits 0-5); ``0x2A2``-``0x2A4`` end pose (X, Y | Z, RX | RY, RZ as in
``0x152``-``0x154``); ``0x2A5``-``0x2A7`` joints (as ``0x155``-``0x157``); ``0x2A8`` gripper (stroke int32
0.001 mm, effort int16 0.001 N·m, status bits :data:`GRIPPER_STATUS_BITS`, a reserved byte); per motor
``0x251``-``0x256`` high-speed (speed int16 0.001 rad/s, current int16 0.001 A, position int32) and
``0x261``-``0x266`` low-speed (bus voltage uint16 0.1 V, driver temperature int16 °C, motor temperature int8
°C, status bits :data:`DRIVER_STATUS_BITS`, bus current uint16 0.001 A).

A feedback frame is refused (:class:`ProtocolError`) unless it has exactly 8 data bytes, known codes and
plausible values (:data:`PLAUSIBLE`): a frame that fails is never half-used.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple, Union

from drivers.errors import ArmError

Frame = Tuple[int, bytes]  # (11-bit arbitration ID, 8 data bytes)
DLC = 8
BITRATE = 1_000_000
N_JOINTS = 6

# -- IDs ------------------------------------------------------------------------------------------------------
MOTION_CTRL_1 = 0x150  # e-stop / resume / trajectory control (never sent by the driver)
MOTION_CTRL_2 = 0x151
CARTESIAN = (0x152, 0x153, 0x154)
JOINT_CTRL = (0x155, 0x156, 0x157)
GRIPPER_CTRL = 0x159
MOTOR_ENABLE = 0x471
#: Every ID a host sends to make the arm move or change mode (seen on the bus from someone else: a second host).
COMMAND_IDS = frozenset((MOTION_CTRL_1, MOTION_CTRL_2, *CARTESIAN, *JOINT_CTRL, 0x158, GRIPPER_CTRL,
                         *range(0x15A, 0x160), MOTOR_ENABLE))

STATUS = 0x2A1
END_POSE = (0x2A2, 0x2A3, 0x2A4)
JOINTS = (0x2A5, 0x2A6, 0x2A7)
GRIPPER = 0x2A8
HIGH_SPEED = tuple(range(0x251, 0x257))  # motors 1-6
LOW_SPEED = tuple(range(0x261, 0x267))
#: The feedback the arm streams at its rate; a state needs each of them recently.
STREAMED = (STATUS, *END_POSE, *JOINTS, GRIPPER)

# -- codes ----------------------------------------------------------------------------------------------------
CTRL_CAN = 0x01
MOVE_P, MOVE_J = 0x00, 0x01
ALL_MOTORS = 7
ENABLE, DISABLE = 0x02, 0x01
GRIPPER_ENABLE = 0x01
MAX_GRIPPER_EFFORT = 5000  # 0.001 N·m

CTRL_MODES = {0x00: "STANDBY", 0x01: "CAN_CTRL", 0x02: "TEACHING", 0x03: "ETHERNET", 0x04: "WIFI",
              0x05: "REMOTE", 0x06: "LINKAGE_TEACHING_INPUT", 0x07: "OFFLINE_TRAJECTORY"}
ARM_STATUSES = {0x00: "NORMAL", 0x01: "EMERGENCY_STOP", 0x02: "NO_SOLUTION", 0x03: "SINGULARITY",
                0x04: "TARGET_EXCEEDS_LIMIT", 0x05: "JOINT_COMMUNICATION_ERROR", 0x06: "JOINT_BRAKE_NOT_RELEASED",
                0x07: "COLLISION", 0x08: "OVERSPEED_DURING_DRAG_TEACHING", 0x09: "JOINT_STATUS_ERROR",
                0x0A: "OTHER_ERROR", 0x0B: "TEACHING_RECORD", 0x0C: "TEACHING_EXECUTION", 0x0D: "TEACHING_PAUSE",
                0x0E: "MAIN_CONTROLLER_OVER_TEMPERATURE", 0x0F: "RELEASE_RESISTOR_OVER_TEMPERATURE"}
MOVE_MODES = {0x00: "MOVE_P", 0x01: "MOVE_J", 0x02: "MOVE_L", 0x03: "MOVE_C", 0x04: "MOVE_M", 0x05: "MOVE_CPV"}
TEACH_STATUSES = {0x00: "OFF", 0x01: "START_RECORDING", 0x02: "STOP_RECORDING", 0x03: "EXECUTE", 0x04: "PAUSE",
                  0x05: "RESUME", 0x06: "TERMINATE", 0x07: "MOVE_TO_START"}
MOTION_STATUSES = {0x00: "REACHED", 0x01: "MOVING"}
#: Status bits of a joint motor's driver (low-speed feedback byte 5), bit → name.
DRIVER_STATUS_BITS = {0: "voltage_low", 1: "motor_over_temperature", 2: "over_current", 3: "driver_over_temperature",
                      4: "collision_protection", 5: "driver_error", 6: "enabled", 7: "stall_protection"}
#: Status bits of the gripper's driver (``0x2A8`` byte 6), bit → name.
GRIPPER_STATUS_BITS = {0: "voltage_low", 1: "motor_over_temperature", 2: "over_current", 3: "driver_over_temperature",
                       4: "sensor_error", 5: "driver_error", 6: "enabled", 7: "homed"}
ENABLED_BIT = 1 << 6

#: Bounds beyond which a feedback value is corruption, not an arm (the arm's own ranges are far inside):
#: joints and pose angles in 0.001 degree, positions and the gripper stroke in 0.001 mm, speeds 0.001 rad/s.
PLAUSIBLE = {"joint": 360_000, "angle": 360_000, "position": 2_000_000, "stroke": (-10_000, 200_000),
             "speed": 20_000}


class ProtocolError(ArmError, ValueError):
    """A frame that is not valid Piper feedback (length, code or value), or a command value it cannot carry."""


# -- units ----------------------------------------------------------------------------------------------------


def millidegrees(rad: float) -> int:
    """Radians as the protocol's 0.001-degree integer."""
    return round(math.degrees(rad) * 1000.0)


def micrometres(metres: float) -> int:
    """Metres as the protocol's 0.001-mm integer."""
    return round(metres * 1e6)


def radians(mdeg: int) -> float:
    return math.radians(mdeg / 1000.0)


def metres(um: int) -> float:
    return um / 1e6


# -- host to arm ----------------------------------------------------------------------------------------------


def _int32(value: int, what: str) -> bytes:
    try:
        return struct.pack(">i", value)
    except struct.error:
        raise ProtocolError(f"{what} = {value} does not fit the protocol's int32") from None


def mode(move_mode: int, speed_percent: int) -> Frame:
    """``0x151``: CAN command control, ``move_mode`` (:data:`MOVE_P` or :data:`MOVE_J`), speed 0-100 %."""
    if move_mode not in (MOVE_P, MOVE_J) or not 0 <= speed_percent <= 100:
        raise ProtocolError(f"mode: move_mode {move_mode} must be MOVE_P or MOVE_J and speed_percent "
                            f"{speed_percent} within 0..100")
    return MOTION_CTRL_2, bytes((CTRL_CAN, move_mode, speed_percent, 0, 0, 0, 0, 0))


def pair(frame_id: int, a: int, b: int, what: str) -> Frame:
    """A frame of two int32 values (the Cartesian and joint targets)."""
    return frame_id, _int32(a, what) + _int32(b, what)


def pose(values: Sequence[int]) -> Tuple[Frame, Frame, Frame]:
    """``0x152``-``0x154`` from X, Y, Z (0.001 mm) and RX, RY, RZ (0.001 degree)."""
    x, y, z, rx, ry, rz = values
    return (pair(CARTESIAN[0], x, y, "X/Y"), pair(CARTESIAN[1], z, rx, "Z/RX"), pair(CARTESIAN[2], ry, rz, "RY/RZ"))


def joints(values: Sequence[int]) -> Tuple[Frame, Frame, Frame]:
    """``0x155``-``0x157`` from the six joint targets (0.001 degree)."""
    return tuple(pair(JOINT_CTRL[i], values[2 * i], values[2 * i + 1], f"joint {2 * i + 1}/{2 * i + 2}")
                 for i in range(3))  # type: ignore[return-value]


def gripper(stroke_um: int, effort: int) -> Frame:
    """``0x159``: stroke (0.001 mm), effort (0.001 N·m, 0..5000), enabled."""
    if not 0 <= effort <= MAX_GRIPPER_EFFORT:
        raise ProtocolError(f"gripper effort {effort} outside 0..{MAX_GRIPPER_EFFORT} (0.001 N·m)")
    return GRIPPER_CTRL, _int32(stroke_um, "gripper stroke") + struct.pack(">HBB", effort, GRIPPER_ENABLE, 0)


def enable(on: bool = True) -> Frame:
    """``0x471``: enable (or disable) every motor."""
    return MOTOR_ENABLE, bytes((ALL_MOTORS, ENABLE if on else DISABLE, 0, 0, 0, 0, 0, 0))


# -- arm to host ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Status:
    """``0x2A1``. ``limit_bits`` / ``comm_bits``: bit i = joint i+1 at its angle limit / not communicating."""

    ctrl_mode: int
    arm_status: int
    move_mode: int
    teach_status: int
    motion_status: int
    trajectory_point: int
    limit_bits: int
    comm_bits: int


@dataclass(frozen=True)
class Pair:
    """Two int32 values of a pose or joint frame; ``index`` 0-2: which frame of the three."""

    index: int
    a: int
    b: int


@dataclass(frozen=True)
class Gripper:
    stroke_um: int
    effort: int  # 0.001 N·m
    status: int


@dataclass(frozen=True)
class HighSpeed:
    motor: int  # 1..6
    speed: int  # 0.001 rad/s
    current: int  # 0.001 A
    position: int


@dataclass(frozen=True)
class LowSpeed:
    motor: int  # 1..6
    voltage: int  # 0.1 V
    driver_temp: int  # °C
    motor_temp: int  # °C
    status: int
    bus_current: int  # 0.001 A


Feedback = Union[Status, Pair, Gripper, HighSpeed, LowSpeed]
_POSE_LIMITS = (("position", "position"), ("position", "angle"), ("angle", "angle"))


def _code(table: Dict[int, str], value: int, what: str) -> int:
    if value not in table:
        raise ProtocolError(f"{what} {value:#04x} is not one of the protocol's codes")
    return value


def _within(value: int, bound: Union[int, Tuple[int, int]], what: str) -> int:
    low, high = bound if isinstance(bound, tuple) else (-bound, bound)
    if not low <= value <= high:
        raise ProtocolError(f"{what} = {value} is beyond any arm ({low}..{high})")
    return value


def decode(frame_id: int, data: bytes) -> Optional[Feedback]:
    """The feedback in one frame; None for an ID that is not feedback this driver reads. Raises
    :class:`ProtocolError` for a frame of a feedback ID that is not 8 bytes or carries unknown codes or
    implausible values."""
    if frame_id not in _DECODERS:
        return None
    if len(data) != DLC:
        raise ProtocolError(f"frame {frame_id:#05x} has {len(data)} data bytes, expected {DLC}")
    return _DECODERS[frame_id](frame_id, data)


def _status(frame_id: int, data: bytes) -> Status:
    ctrl, arm, move, teach, motion, point, limits, comm = struct.unpack(">8B", data)
    return Status(_code(CTRL_MODES, ctrl, "control mode"), _code(ARM_STATUSES, arm, "arm status"),
                  _code(MOVE_MODES, move, "move mode"), _code(TEACH_STATUSES, teach, "teach status"),
                  _code(MOTION_STATUSES, motion, "motion status"), point, limits & 0x3F, comm & 0x3F)


def _pose(frame_id: int, data: bytes) -> Pair:
    index = END_POSE.index(frame_id)
    a, b = struct.unpack(">ii", data)
    kind_a, kind_b = _POSE_LIMITS[index]
    return Pair(index, _within(a, PLAUSIBLE[kind_a], f"end pose {frame_id:#05x}[0:4]"),
                _within(b, PLAUSIBLE[kind_b], f"end pose {frame_id:#05x}[4:8]"))


def _joints(frame_id: int, data: bytes) -> Pair:
    index = JOINTS.index(frame_id)
    a, b = struct.unpack(">ii", data)
    return Pair(index, _within(a, PLAUSIBLE["joint"], f"joint {2 * index + 1}"),
                _within(b, PLAUSIBLE["joint"], f"joint {2 * index + 2}"))


def _gripper(frame_id: int, data: bytes) -> Gripper:
    stroke, effort, status, _reserved = struct.unpack(">ihBB", data)
    return Gripper(_within(stroke, PLAUSIBLE["stroke"], "gripper stroke"), effort, status)


def _high_speed(frame_id: int, data: bytes) -> HighSpeed:
    speed, current, position = struct.unpack(">hhi", data)
    motor = frame_id - HIGH_SPEED[0] + 1
    return HighSpeed(motor, _within(speed, PLAUSIBLE["speed"], f"motor {motor} speed"), current, position)


def _low_speed(frame_id: int, data: bytes) -> LowSpeed:
    voltage, driver_temp, motor_temp, status, bus_current = struct.unpack(">HhbBH", data)
    return LowSpeed(frame_id - LOW_SPEED[0] + 1, voltage, driver_temp, motor_temp, status, bus_current)


_DECODERS = {STATUS: _status, GRIPPER: _gripper, **{i: _pose for i in END_POSE}, **{i: _joints for i in JOINTS},
             **{i: _high_speed for i in HIGH_SPEED}, **{i: _low_speed for i in LOW_SPEED}}


# -- what the emulator sends ----------------------------------------------------------------------------------


def status_frame(s: Status) -> Frame:
    return STATUS, struct.pack(">8B", s.ctrl_mode, s.arm_status, s.move_mode, s.teach_status, s.motion_status,
                               s.trajectory_point, s.limit_bits, s.comm_bits)


def gripper_feedback(g: Gripper) -> Frame:
    return GRIPPER, struct.pack(">ihBB", g.stroke_um, g.effort, g.status, 0)


def high_speed_frame(h: HighSpeed) -> Frame:
    return HIGH_SPEED[h.motor - 1], struct.pack(">hhi", h.speed, h.current, h.position)


def low_speed_frame(s: LowSpeed) -> Frame:
    return LOW_SPEED[s.motor - 1], struct.pack(">HhbBH", s.voltage, s.driver_temp, s.motor_temp, s.status,
                                               s.bus_current)


def bits(value: int, names: Dict[int, str]) -> Tuple[str, ...]:
    """The names of the bits set in ``value``."""
    return tuple(name for bit, name in names.items() if value & (1 << bit))
