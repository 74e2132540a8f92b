"""A joint-space :class:`~drivers.arm.Arm` on Feetech STS3215 servos: the SO-100 / SO-101 arms.

The control tick never waits on the bus: the pipelined read and the goal in one write are the servo-bus arm's
(:mod:`drivers.servo_arm`), as on the Dynamixel arm. The tick's read is Present_Position + Present_Velocity
(addresses 56-59). A read reporting what no servo can do (a position beyond a turn, a speed beyond two turns a
second: a status well-formed on the wire, but not true) is a miss like an incomplete one.

Every status carries the servo's error bits (voltage, angle limit, overheat, overcurrent, overload), so faults
are seen in the tick's own read: a hardware bit latches a fault that refuses targets until :meth:`connect` (which
refuses while a bit is still set); the angle-limit bit is a warning (``AT_LIMIT``).

Feetech servos have no bus watchdog: when the host goes silent they keep their last goal, which is where the arm
was commanded a tick earlier — a hold with power on. ``connect`` enables torque after setting each goal to the
present position; nothing here disables it. ``connect`` first checks that the servos hold the calibration
(Homing_Offset, Min/Max_Position_Limit, as ``lerobot-calibrate`` writes them) and are in position mode, and
refuses by name otherwise; :meth:`FeetechArm.probe` reports the same without moving anything.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Union

import numpy as np

from drivers.arm import ArmCapabilities, ArmConfigError, ArmFault, ArmState, FaultFlag
from drivers.feetech import protocol as p
from drivers.feetech import tables as t
from drivers.feetech.bus import FeetechBus, FeetechLinkError, PendingRead
from drivers.feetech.calibration import FeetechCalibration, load_calibration
from drivers.servo_arm import ServoBusArm

_BIT_TO_FAULT = {
    p.ErrorBit.VOLTAGE: FaultFlag.SUPPLY_VOLTAGE,
    p.ErrorBit.OVERHEAT: FaultFlag.OVER_TEMPERATURE,
    p.ErrorBit.OVERCURRENT: FaultFlag.OVER_CURRENT,
    p.ErrorBit.OVERLOAD: FaultFlag.OVER_CURRENT,
}
HARDWARE_BITS = p.ErrorBit.VOLTAGE | p.ErrorBit.OVERHEAT | p.ErrorBit.OVERCURRENT | p.ErrorBit.OVERLOAD
_RAD_PER_TICK = 2 * math.pi / t.TICKS_PER_REV
BAUD_RATES = tuple(sorted(t.BAUD_RATES.values()))


def faults_of(bits: int) -> FaultFlag:
    """Arm fault flags for a status error byte (the angle-limit bit: ``AT_LIMIT``)."""
    flags = FaultFlag.AT_LIMIT if bits & p.ErrorBit.ANGLE else FaultFlag(0)
    for bit, flag in _BIT_TO_FAULT.items():
        if bits & bit:
            flags |= flag
    return flags


def _implausible(raw: dict[int, bytes]) -> str:
    """Why a state read cannot be true (a position beyond a turn, a speed beyond two turns a second), or ""."""
    for i, d in raw.items():
        position, speed = t.PRESENT_POSITION.decode(d[:2]), t.PRESENT_VELOCITY.decode(d[2:])
        if position > t.MAX_TICK or abs(speed) > t.MAX_SPEED:
            return (f"motor {i} reported Present_Position {position} and Present_Velocity {speed}: beyond 0 ... "
                    f"{t.MAX_TICK} or ±{t.MAX_SPEED} ticks/s")
    return ""


class FeetechArm(ServoBusArm):
    """One SO-100/SO-101 arm (joints + gripper) on one Feetech bus.

    ``calibration``: a :class:`~drivers.feetech.calibration.FeetechCalibration`, or the path of a
    ``lerobot-calibrate`` file together with ``max_velocity`` (rad/s, one or per joint) and ``gripper_open``.
    ``baudrate``: one of the STS rates (:data:`BAUD_RATES`). ``clock`` stamps the states.
    """

    GOAL, PRESENT = t.GOAL_POSITION, t.PRESENT_POSITION

    def __init__(
        self,
        port: str,
        calibration: Union[FeetechCalibration, str, Path],
        *,
        max_velocity: Union[float, Sequence[float], None] = None,
        gripper_open: Optional[str] = None,
        baudrate: int = 1_000_000,
        timeout_s: float = 0.05,
        retries: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(calibration, FeetechCalibration):
            self.calibration = calibration
        elif max_velocity is None or gripper_open is None:
            raise ArmConfigError("FeetechArm.calibration: a LeRobot calibration file needs max_velocity and "
                                 "gripper_open as well (the file has no velocity limits and does not say which end "
                                 "of the gripper is open)")
        else:
            self.calibration = load_calibration(calibration, max_velocity=max_velocity, gripper_open=gripper_open)
        if baudrate not in BAUD_RATES:
            raise ArmConfigError(f"FeetechArm.baudrate: expected one of {', '.join(map(str, BAUD_RATES))} (the STS "
                                 f"series' Baud_Rate settings), got {baudrate!r}")
        super().__init__(FeetechBus(port, baudrate=baudrate, timeout_s=timeout_s, retries=retries), self.calibration,
                         clock=clock)
        self._faults: dict[int, int] = {}  # motor id → latched hardware bits

    # ---- Arm interface ---------------------------------------------------------------------------

    def connect(self) -> ArmCapabilities:
        with self._errors("connect"):
            self.bus.open()
            self._settle()
            self._measured, self._misses, self._faults = None, 0, {}
            self.bus.errors.clear()
            for motor_id in self._ids:
                model = self.bus.ping(motor_id)
                if model not in t.MODEL_NUMBERS:
                    raise ArmConfigError(f"motor {motor_id}: model number {model} is not an STS servo this driver "
                                         f"knows ({t.MODEL_NUMBERS})")
            problems = self._check_servos()
            if problems:
                raise ArmConfigError(f"FeetechArm({self.bus.port}): " + "; ".join(problems))
            self._latch_errors()
            if self._faults:
                raise self._fault("connect")
            self.bus.sync_write(t.GOAL_POSITION, self.bus.sync_read(t.PRESENT_POSITION, self._ids))
            for motor_id in self._ids:
                self.bus.write(motor_id, t.TORQUE_ENABLE, 1)
        self._caps = ArmCapabilities(space="joint", n_arms=1, joint_limits=self.calibration.joint_limits())
        return self._caps

    def read_state(self) -> ArmState:
        """Measured state now, waiting for the servos' replies (start-up and reconnect use)."""
        self._connected()
        with self._errors("read state"):
            self._settle()
            raw = self.bus.sync_read_bytes(t.STATE_ADDRESS, t.STATE_LENGTH, self._ids, name="Present_Position+Velocity")
            why = _implausible(raw)
            if why:
                raise FeetechLinkError(f"read state on {self.bus.port}: {why}")
            self._measure_state(raw)
            self._latch_errors()
        return self._state()

    def probe(self) -> Dict[str, object]:
        """What is on the bus, read-only: per configured motor whether it answers, its model and firmware,
        position (ticks and rad, or the gripper's opening), torque, error bits, voltage, temperature, and whether
        its registers hold the calibration; ``problems`` lists what would stop :meth:`connect`. Writes nothing
        (no goal, no torque). Raises ``ArmLinkError`` when the port cannot be opened."""
        return self._probe_motors("feetech", [(m.name, m.id) for m in self.calibration.motors], lambda motors: [
            *self._check_servos(motors), *(f"motor {m['id']} ({m['name']}) reports {m['errors']}" for m in motors
                                           if m["found"] and m["error_bits"] & HARDWARE_BITS)])

    # ---- helpers ---------------------------------------------------------------------------------

    def _probe_motor(self, name: str, motor_id: int) -> Dict[str, object]:
        found: Dict[str, object] = {"name": name, "id": motor_id, "found": False}
        try:
            model = self.bus.ping(motor_id)
            values = {reg.name: self.bus.read(motor_id, reg) for reg in (
                t.FIRMWARE_MAJOR, t.FIRMWARE_MINOR, t.PRESENT_POSITION, t.TORQUE_ENABLE, t.OPERATING_MODE,
                t.PRESENT_VOLTAGE, t.PRESENT_TEMPERATURE, *t.CALIBRATION_REGISTERS)}
        except FeetechLinkError as exc:
            found["why"] = str(exc)
            return found
        bits = self.bus.errors.get(motor_id, 0)
        ticks = values["Present_Position"]
        found.update(found=True, model=t.MODEL_NUMBERS.get(model, model),
                     firmware=f"{values['Firmware_Major_Version']}.{values['Firmware_Minor_Version']}",
                     position_ticks=ticks, **self._position(motor_id, ticks), torque=bool(values["Torque_Enable"]),
                     operating_mode=values["Operating_Mode"], error_bits=bits, errors=p.describe_error(bits),
                     voltage_v=values["Present_Voltage"] / 10, temperature_c=values["Present_Temperature"],
                     registers={reg.name: values[reg.name] for reg in t.CALIBRATION_REGISTERS})
        return found

    def _check_servos(self, probed: Optional[list] = None) -> list[str]:
        """What disagrees between the servos and the calibration (or position mode); ``probed``: the probe's
        readings, else read now."""
        problems = []
        for m in self.calibration.motors:
            if probed is None:
                regs = {reg.name: self.bus.read(m.id, reg) for reg in (*t.CALIBRATION_REGISTERS, t.OPERATING_MODE)}
            else:
                entry = next(e for e in probed if e["id"] == m.id)
                if not entry["found"]:
                    continue
                regs = {**entry["registers"], "Operating_Mode": entry["operating_mode"]}  # type: ignore[dict-item]
            want = {"Homing_Offset": m.homing_offset, "Min_Position_Limit": m.range_min,
                    "Max_Position_Limit": m.range_max}
            wrong = {k: (regs[k], v) for k, v in want.items() if regs[k] != v}
            if wrong:
                problems.append(f"motor {m.id} ({m.name}) does not hold the calibration: " + ", ".join(
                    f"{k} is {have}, the file says {v}" for k, (have, v) in wrong.items())
                    + " (write it with lerobot-calibrate, then check again)")
            if regs["Operating_Mode"] != t.OperatingMode.POSITION:
                problems.append(f"motor {m.id} ({m.name}): Operating_Mode is {regs['Operating_Mode']}; expected 0 "
                                "(position) — LeRobot sets it when it configures the arm")
        return problems

    def _request(self, after: bytes = b"") -> None:
        self._send_read(t.STATE_ADDRESS, t.STATE_LENGTH, self._ids, "Present_Position+Velocity", after)

    def _miss(self, pending: PendingRead, raw: Optional[Dict[int, bytes]]) -> str:
        return super()._miss(pending, raw) or _implausible(raw or {})

    def _use(self, pending: PendingRead, raw: Dict[int, bytes]) -> None:
        self._measure_state(raw)
        self._latch_errors()

    def _measure_state(self, raw: Dict[int, bytes]) -> None:
        ticks = {i: t.PRESENT_POSITION.decode(d[:2]) for i, d in raw.items()}
        speed = {i: t.PRESENT_VELOCITY.decode(d[2:]) for i, d in raw.items()}
        self._measure(ticks, np.array([speed[j.motor_id] * _RAD_PER_TICK for j in self.calibration.joints]))

    def _latch_errors(self) -> None:
        for motor_id, bits in self.bus.errors.items():
            if bits & HARDWARE_BITS:
                self._faults[motor_id] = self._faults.get(motor_id, 0) | bits & HARDWARE_BITS

    def _servo_faults(self) -> FaultFlag:
        flags = FaultFlag(0)
        for bits in (*self._faults.values(), *(b & p.ErrorBit.ANGLE for b in self.bus.errors.values())):
            flags |= faults_of(bits)
        return flags

    def _mode(self) -> str:
        return "ESTOPPED" if self._estopped else "FAULT" if self._faults else "TRACKING"

    def _fault(self, what: str) -> ArmFault:
        errors = ", ".join(f"motor {i}: {p.describe_error(b)}" for i, b in sorted(self._faults.items()))
        flags = FaultFlag(0)
        for bits in self._faults.values():
            flags |= faults_of(bits)
        return ArmFault(f"FeetechArm {what}: hardware error ({errors}); fix the cause (power, load, heat), then "
                        "connect again", flags=flags, reason="faulted")

    def _refuse_if_blocked(self) -> None:
        self._refuse_if_estopped()
        if self._faults:
            raise self._fault("send target")
