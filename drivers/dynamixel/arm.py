"""A joint-space :class:`~drivers.arm.Arm` on X-series Dynamixel servos (WidowX, Koch, ALOHA-style arms).

The control tick never waits on the bus: the pipelined read and the goal in one write are the servo-bus arm's
(:mod:`drivers.servo_arm`). When the link is lost (no complete read for ``(retries + 1) * timeout_s``), the control
loop stops streaming and the servos' Bus_Watchdog holds the arm.

Most pipelined reads are Present_Velocity + Present_Position (addresses 128-135). Every status carries
the hardware-alert bit: after a status with it set, the next read is Hardware_Error_Status of the
alerted servos; every ``watchdog_check_every``-th read is Bus_Watchdog (a tripped watchdog). Those
ticks keep the previous state.

The servos' own deadman, Bus_Watchdog, is armed on connect: if the host stops sending instructions for
``watchdog_ms``, every servo stops where it is and refuses goal writes until the next
:meth:`DynamixelArm.connect`. Torque is enabled on connect and never disabled here.

It runs on :mod:`.bus`, our own Protocol 2.0 implementation on pyserial, not on the vendor DynamixelSDK: the
SDK opens ports with ``serial.Serial`` and so cannot use pyserial URLs (``loop://``, ``socket://``,
``spy://``) or be pointed at an emulator without patching, and dynamixel-sdk 4.x changed its API.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Union

import numpy as np

from drivers.arm import ArmCapabilities, ArmConfigError, ArmFault, ArmLinkError, ArmState, FaultFlag, JointLimit
from drivers.dynamixel import tables as t
from drivers.dynamixel.bus import Bus, DynamixelLinkError, PendingRead, ServoError
from drivers.dynamixel.joint_offsets import ArmCalibration
from drivers.servo_arm import ServoBusArm

_HW_TO_FAULT = {
    t.HardwareError.INPUT_VOLTAGE: FaultFlag.SUPPLY_VOLTAGE,
    t.HardwareError.OVERHEATING: FaultFlag.OVER_TEMPERATURE,
    t.HardwareError.MOTOR_ENCODER: FaultFlag.ENCODER,
    t.HardwareError.ELECTRICAL_SHOCK: FaultFlag.SUPPLY_VOLTAGE,
    t.HardwareError.OVERLOAD: FaultFlag.OVER_CURRENT,
}
_RAD_S_PER_UNIT = t.VELOCITY_UNIT_RPM * 2 * math.pi / 60


def _probe_problems(motors: list[dict[str, object]]) -> list[str]:
    """What in the probed motors' readings would stop :meth:`DynamixelArm.connect` (besides silence)."""
    problems = []
    for m in motors:
        if m["found"] and m["hardware_error"]:
            problems.append(f"motor {m['id']} ({m['name']}) reports {m['errors']}")
        if m["found"] and m["operating_mode"] not in t.POSITION_MODES:
            problems.append(f"motor {m['id']} ({m['name']}): Operating_Mode is {m['operating_mode']}; expected a "
                            f"position mode {[int(x) for x in t.POSITION_MODES]}")
    return problems


def hardware_faults(bits: int) -> FaultFlag:
    """Arm fault flags for a Hardware_Error_Status value."""
    flags = FaultFlag(0)
    for hw, flag in _HW_TO_FAULT.items():
        if bits & hw:
            flags |= flag
    return flags


class DynamixelArm(ServoBusArm):
    """One arm (joints + gripper) on one Dynamixel bus.

    ``baudrate``: one of the servos' rates (:data:`~drivers.dynamixel.tables.BAUD_RATES`). ``watchdog_ms``
    (20-2540, rounded up to 20 ms steps) is the Bus_Watchdog time; the watchdog
    register is read every ``watchdog_check_every`` state reads. No complete pipelined read for
    ``(retries + 1) * timeout_s`` is a lost link (see the module docstring). ``clock`` stamps the states.
    """

    GOAL, PRESENT = t.GOAL_POSITION, t.PRESENT_POSITION

    def __init__(
        self,
        port: str,
        calibration: Union[ArmCalibration, str, Path],
        *,
        baudrate: int = 1_000_000,
        watchdog_ms: int = 100,
        timeout_s: float = 0.05,
        retries: int = 2,
        watchdog_check_every: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.calibration = calibration if isinstance(calibration, ArmCalibration) else ArmCalibration.load(calibration)
        if baudrate not in t.BAUD_RATES:
            raise ArmConfigError(f"DynamixelArm.baudrate: expected one of {', '.join(map(str, t.BAUD_RATES))} (the "
                                 f"X-series Baud_Rate settings), got {baudrate!r}")
        units = math.ceil(watchdog_ms / (t.WATCHDOG_UNIT_S * 1000))
        if not 1 <= units <= 127:
            raise ArmConfigError(f"DynamixelArm.watchdog_ms: expected 20..2540, got {watchdog_ms}")
        self._watchdog_units = units
        self._check_every = max(1, watchdog_check_every)
        super().__init__(Bus(port, baudrate=baudrate, timeout_s=timeout_s, retries=retries), self.calibration,
                         clock=clock)
        self._reads = 0
        self._hw_errors: dict[int, int] = {}
        self._tripped: list[int] = []

    # ---- Arm interface ---------------------------------------------------------------------------

    def connect(self) -> ArmCapabilities:
        with self._errors("connect"):
            self.bus.open()
            self._settle()
            self._measured, self._misses = None, 0
            for motor_id in self._ids:
                self.bus.ping(motor_id)
            self._check_modes_and_limits()
            self._hw_errors = {i: v for i, v in self.bus.sync_read(t.HARDWARE_ERROR_STATUS, self._ids).items() if v}
            self.bus.alerts.clear()
            if self._hw_errors:
                raise self._fault("connect")
            # The watchdogs are cleared and armed by broadcasts: a servo counts only instructions for its own id
            # (or broadcast), so one-by-one writes could trip an armed servo while the others are being written.
            self._set_watchdogs(0)  # also clears a tripped watchdog, so goals are accepted again
            self._tripped = []
            self.bus.sync_write(t.GOAL_POSITION, self.bus.sync_read(t.PRESENT_POSITION, self._ids))
            for motor_id in self._ids:
                self.bus.write(motor_id, t.TORQUE_ENABLE, 1)
            self._set_watchdogs(self._watchdog_units)
        self._caps = ArmCapabilities(
            space="joint",
            n_arms=1,
            joint_limits=tuple(JointLimit(j.lower, j.upper, j.max_velocity) for j in self.calibration.joints),
        )
        return self._caps

    def read_state(self) -> ArmState:
        """Measured state now, waiting for the servos' replies (start-up and reconnect use)."""
        self._connected()
        with self._errors("read state"):
            self._settle()
            raw = self.bus.sync_read_bytes(t.PRESENT_VELOCITY.address, 8, self._ids, name="Present_Velocity+Position")
            self._measure_state(raw)
            self._reads += 1
            if self.bus.alerts:
                self._read_hardware_errors()
            if self._reads % self._check_every == 0:
                self._check_watchdogs(self.bus.sync_read(t.BUS_WATCHDOG, self._ids))
        return self._state()

    def probe(self) -> dict[str, object]:
        """What is on the bus, read-only: per configured motor whether it answers, its model and firmware, position
        (ticks and rad, or the gripper's opening), torque, Operating_Mode, hardware errors, voltage and
        temperature; ``problems`` lists what would stop :meth:`connect`. Writes nothing (no goal, no torque, no
        watchdog). Raises ``ArmLinkError`` when the port cannot be opened."""
        names = [(j.name, j.motor_id) for j in self.calibration.joints]
        names.append(("gripper", self.calibration.gripper.motor_id))
        return self._probe_motors("dynamixel", names, _probe_problems)

    # ---- helpers ---------------------------------------------------------------------------------

    def _probe_motor(self, name: str, motor_id: int) -> dict[str, object]:
        found: dict[str, object] = {"name": name, "id": motor_id, "found": False}
        try:
            model, firmware = self.bus.ping(motor_id)
            values = {reg.name: self.bus.read(motor_id, reg) for reg in (
                t.PRESENT_POSITION, t.TORQUE_ENABLE, t.OPERATING_MODE, t.HARDWARE_ERROR_STATUS,
                t.PRESENT_INPUT_VOLTAGE, t.PRESENT_TEMPERATURE)}
        except (DynamixelLinkError, ServoError) as exc:
            found["why"] = str(exc)
            return found
        ticks, bits = values["Present_Position"], values["Hardware_Error_Status"]
        found.update(found=True, model=t.MODEL_NUMBERS.get(model, model), firmware=firmware, position_ticks=ticks,
                     **self._position(motor_id, ticks), torque=bool(values["Torque_Enable"]),
                     operating_mode=values["Operating_Mode"], hardware_error=bits,
                     errors=t.describe_hardware_error(bits),
                     voltage_v=values["Present_Input_Voltage"] / 10, temperature_c=values["Present_Temperature"])
        return found

    def _check_modes_and_limits(self) -> None:
        modes = self.bus.sync_read(t.OPERATING_MODE, self._ids)
        lows = self.bus.sync_read(t.MIN_POSITION_LIMIT, self._ids)
        highs = self.bus.sync_read(t.MAX_POSITION_LIMIT, self._ids)
        for motor_id, mode in modes.items():
            if mode not in t.POSITION_MODES:
                raise ArmConfigError(
                    f"motor {motor_id}: Operating_Mode is {mode}; expected a position mode "
                    f"{[int(m) for m in t.POSITION_MODES]} (set it with the torque off)"
                )
        for j in self.calibration.joints:
            ends = sorted(j.to_ticks(v) for v in (j.lower, j.upper))
            low, high = lows[j.motor_id], highs[j.motor_id]
            if modes[j.motor_id] == t.OperatingMode.POSITION and not low <= ends[0] <= ends[1] <= high:
                raise ArmConfigError(
                    f"joint {j.name!r} (motor {j.motor_id}): calibrated range {ends} ticks exceeds the servo's "
                    f"Min/Max_Position_Limit [{low}, {high}]; goals outside it would be dropped silently"
                )

    def _request(self, after: bytes = b"") -> None:
        """Send the next pipelined read (after ``after``): hardware errors of alerted servos, every
        ``watchdog_check_every``-th time Bus_Watchdog, else Present_Velocity + Present_Position."""
        if self.bus.alerts:
            ids, reg = sorted(self.bus.alerts), t.HARDWARE_ERROR_STATUS
        else:
            self._reads += 1
            ids = self._ids
            reg = t.BUS_WATCHDOG if self._reads % self._check_every == 0 else None
        if reg is None:
            self._send_read(t.PRESENT_VELOCITY.address, 8, ids, "Present_Velocity+Position", after)
        else:
            self._send_read(reg.address, reg.size, ids, reg.name, after)

    def _miss(self, pending: PendingRead, raw: dict[int, bytes] | None) -> str:
        if raw is None and all(i in pending.statuses for i in pending.motor_ids):
            return "a corrupted instruction (CRC_ERROR)"
        return super()._miss(pending, raw)

    def _use(self, pending: PendingRead, raw: dict[int, bytes]) -> None:
        if pending.address == t.HARDWARE_ERROR_STATUS.address:
            self._hw_errors.update({i: t.HARDWARE_ERROR_STATUS.decode(v) for i, v in raw.items()})
            self.bus.alerts.difference_update(raw)
        elif pending.address == t.BUS_WATCHDOG.address:
            self._check_watchdogs({i: t.BUS_WATCHDOG.decode(v) for i, v in raw.items()})
        else:
            self._measure_state(raw)

    def _measure_state(self, raw: dict[int, bytes]) -> None:
        ticks = {i: t.PRESENT_POSITION.decode(data[4:]) for i, data in raw.items()}
        units = {i: t.PRESENT_VELOCITY.decode(data[:4]) for i, data in raw.items()}
        joints = self.calibration.joints
        self._measure(ticks, np.array([j.direction * units[j.motor_id] * _RAD_S_PER_UNIT for j in joints]))

    def _check_watchdogs(self, values: dict[int, int]) -> None:
        self._tripped = [i for i, v in values.items() if v == t.WATCHDOG_TRIPPED]

    def _set_watchdogs(self, units: int) -> None:
        self.bus.sync_write(t.BUS_WATCHDOG, {i: units for i in self._ids})
        wrong = {i: v for i, v in self.bus.sync_read(t.BUS_WATCHDOG, self._ids).items() if v != units}
        if wrong:
            raise DynamixelLinkError(f"Bus_Watchdog should read {units} after a sync write, got {wrong}")

    def _read_hardware_errors(self) -> None:
        for motor_id in sorted(self.bus.alerts):
            self._hw_errors[motor_id] = self.bus.read(motor_id, t.HARDWARE_ERROR_STATUS)
        self.bus.alerts.clear()

    def _servo_faults(self) -> FaultFlag:
        return self._hw_flags() | (FaultFlag.HOST_TIMEOUT if self._tripped else FaultFlag(0))

    def _mode(self) -> str:
        if self._estopped:
            return "ESTOPPED"
        if self._hw_errors:
            return "FAULT"
        return "WATCHDOG_TRIPPED" if self._tripped else "TRACKING"

    def _fault(self, what: str) -> ArmFault:
        errors = ", ".join(f"motor {i}: {t.describe_hardware_error(v)}" for i, v in sorted(self._hw_errors.items()))
        return ArmFault(
            f"DynamixelArm {what}: hardware error ({errors}); fix the cause, then reboot the servo(s)",
            flags=self._hw_flags(),
            reason="faulted",
        )

    def _hw_flags(self) -> FaultFlag:
        flags = FaultFlag(0)
        for bits in self._hw_errors.values():
            flags |= hardware_faults(bits)
        return flags

    def _refuse_if_blocked(self) -> None:
        self._refuse_if_estopped()
        if self._hw_errors:
            raise self._fault("send target")
        if self._tripped:
            raise ArmLinkError(
                f"DynamixelArm({self.bus.port}): Bus_Watchdog tripped on motor(s) {self._tripped} (host silent for "
                f"more than {self._watchdog_units * 20} ms); the servos hold and refuse goals; call connect() again"
            )
