"""A joint-space :class:`~drivers.arm.Arm` on Feetech STS3215 servos: the SO-100 / SO-101 arms.

The control tick never waits on the bus, as on the Dynamixel arm: the bus is half-duplex, so the tick's read is
pipelined. :meth:`FeetechArm.poll_state` collects, without waiting, the statuses of the sync read sent in the
previous tick (Present_Position + Present_Velocity, addresses 56-59) and returns the newest state (its
``timestamp`` says when the statuses were collected, normally one tick old); :meth:`FeetechArm.send_target` writes
the Goal_Position sync write and the next sync read in one write, so the servos answer after the goal while the
host sends nothing until the next tick. A tick without a target has ``poll_state`` send the read itself; a target
that follows such a read in the same tick is skipped while its replies may be on the wire (``targets_skipped``).
A read whose statuses have not all arrived by the next ``poll_state`` is a miss (``reads_missed``), and so is one
reporting what no servo can do (a position beyond a turn, a speed beyond two turns a second: a status
well-formed on the wire, but not true); no complete
read for ``(retries + 1) * timeout_s`` (150 ms by default, on the arm's clock) is a lost link (``ArmLinkError``).

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

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Sequence, Union

import numpy as np

from drivers.arm import (
    Arm,
    ArmCapabilities,
    ArmConfigError,
    ArmFault,
    ArmLinkError,
    ArmState,
    FaultFlag,
    Target,
)
from drivers.feetech import protocol as p
from drivers.feetech import tables as t
from drivers.feetech.bus import FeetechBus, FeetechLinkError, PendingRead
from drivers.feetech.calibration import FeetechCalibration, FeetechCalibrationError, load_calibration

_BIT_TO_FAULT = {
    p.ErrorBit.VOLTAGE: FaultFlag.SUPPLY_VOLTAGE,
    p.ErrorBit.OVERHEAT: FaultFlag.OVER_TEMPERATURE,
    p.ErrorBit.OVERCURRENT: FaultFlag.OVER_CURRENT,
    p.ErrorBit.OVERLOAD: FaultFlag.OVER_CURRENT,
}
HARDWARE_BITS = p.ErrorBit.VOLTAGE | p.ErrorBit.OVERHEAT | p.ErrorBit.OVERCURRENT | p.ErrorBit.OVERLOAD
_AT_LIMIT_RAD = 0.01
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


@dataclass(frozen=True)
class _Measured:
    timestamp: float
    joint_positions: np.ndarray
    joint_velocities: np.ndarray
    gripper: float


class FeetechArm(Arm):
    """One SO-100/SO-101 arm (joints + gripper) on one Feetech bus.

    ``calibration``: a :class:`~drivers.feetech.calibration.FeetechCalibration`, or the path of a
    ``lerobot-calibrate`` file together with ``max_velocity`` (rad/s, one or per joint) and ``gripper_open``.
    ``baudrate``: one of the STS rates (:data:`BAUD_RATES`). ``clock`` stamps the states.
    """

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
        self.link_timeout_s = (retries + 1) * timeout_s
        self.bus = FeetechBus(port, baudrate=baudrate, timeout_s=timeout_s, retries=retries)
        self._clock = clock
        self._ids = self.calibration.motor_ids
        self._caps: Optional[ArmCapabilities] = None
        self._estopped = False
        self._faults: dict[int, int] = {}  # motor id → latched hardware bits
        self._measured: Optional[_Measured] = None
        self._pending: Optional[PendingRead] = None
        self._polled = False
        self._misses = 0
        self._missed = ""
        self._last_read = 0.0
        self._counters = {"reads_missed": 0, "targets_skipped": 0}

    # ---- Arm interface ---------------------------------------------------------------------------

    @property
    def capabilities(self) -> ArmCapabilities:
        self._connected()
        assert self._caps is not None
        return self._caps

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
            self._measure(raw)
            self._latch_errors()
        return self._state()

    def poll_state(self) -> ArmState:
        """The newest state, without waiting: collects the previous tick's read (see the module docstring)."""
        self._connected()
        if self._measured is None:
            return self.read_state()
        with self._errors("poll state"):
            pending, by_poll = self._pending, self._polled
            if pending is not None:
                self._take(pending)
            silent = self._clock() - self._last_read
            if self._misses and silent > self.link_timeout_s:
                raise FeetechLinkError(f"no complete sync read on {self.bus.port} for {silent * 1000:.0f} ms "
                                       f"({self._misses} in a row without all their statuses by the next tick; the "
                                       f"last one: {self._missed})")
            if pending is None or by_poll:
                self._request()
        return self._state()

    def counters(self) -> Dict[str, int]:
        return dict(self._counters)

    def send_target(self, target: Target) -> None:
        self._connected()
        if target.space != "joint" or target.joints is None:
            raise ArmConfigError(f"FeetechArm({self.bus.port}) takes joint targets, got a {target.space!r} target")
        joints = self.calibration.joints
        if target.joints.shape != (len(joints),) or target.n_arms != 1:
            raise ArmConfigError(f"FeetechArm({self.bus.port}): expected {len(joints)} joints and 1 gripper, got "
                                 f"{target.joints.shape[0]} joints and {target.n_arms} gripper values")
        self._refuse_if_blocked()
        try:
            goals = {j.motor_id: j.to_ticks(float(q)) for j, q in zip(joints, target.joints)}
            goals[self.calibration.gripper.motor_id] = self.calibration.gripper.to_ticks(float(target.gripper[0]))
        except FeetechCalibrationError as exc:
            raise ArmFault(f"FeetechArm({self.bus.port}): refusing target: {exc}", reason="out_of_limits") from exc
        with self._errors("send target"):
            if self._pending is not None:  # a read is on the wire (poll_state sent it this tick)
                self.bus.collect(self._pending)
                if not self._pending.complete:
                    self._counters["targets_skipped"] += 1
                    self._polled = False
                    return
                self._take(self._pending)
            self._request(after=self.bus.sync_write_packet(t.GOAL_POSITION, goals))

    def hold(self) -> None:
        self._connected()
        with self._errors("hold"):
            self._settle()
            self.bus.sync_write(t.GOAL_POSITION, self.bus.sync_read(t.PRESENT_POSITION, self._ids))

    def estop(self) -> None:
        self._estopped = True
        self.hold()

    def clear_estop(self) -> None:
        self._estopped = False

    def close(self) -> None:
        if self._caps is not None:
            with contextlib.suppress(ArmLinkError, ArmFault):
                self.hold()
        self._caps = None
        self._pending = None
        self.bus.close()

    def probe(self) -> Dict[str, object]:
        """What is on the bus, read-only: per configured motor whether it answers, its model and firmware,
        position (ticks and rad, or the gripper's opening), torque, error bits, voltage, temperature, and whether
        its registers hold the calibration; ``problems`` lists what would stop :meth:`connect`. Writes nothing
        (no goal, no torque). Raises ``ArmLinkError`` when the port cannot be opened."""
        opened_here = not self.bus.is_open
        with self._errors("probe"):
            self.bus.open()
        try:
            self._settle()
            motors = [self._probe_motor(m.name, m.id) for m in self.calibration.motors]
        finally:
            if opened_here:
                self.bus.close()
        problems = [f"motor {m['id']} ({m['name']}) does not answer" for m in motors if not m["found"]]
        problems += self._check_servos(motors)
        problems += [f"motor {m['id']} ({m['name']}) reports {m['errors']}" for m in motors
                     if m["found"] and m["error_bits"] & HARDWARE_BITS]
        return {"driver": "feetech", "port": self.bus.port, "baudrate": self.bus.baudrate,
                "robot_id": self.calibration.robot_id, "link": any(m["found"] for m in motors),
                "motors": motors, "problems": problems}

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
        joint = next((j for j in self.calibration.joints if j.motor_id == motor_id), None)
        position = joint.to_rad(ticks) if joint is not None else self.calibration.gripper.to_opening(ticks)
        found.update(found=True, model=t.MODEL_NUMBERS.get(model, model),
                     firmware=f"{values['Firmware_Major_Version']}.{values['Firmware_Minor_Version']}",
                     position_ticks=ticks, position=round(position, 6),
                     unit="rad" if joint is not None else "opening", torque=bool(values["Torque_Enable"]),
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

    def _connected(self) -> None:
        if self._caps is None:
            raise ArmConfigError(f"FeetechArm({self.bus.port}) is not connected. Run `.connect()` first.")

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except FeetechLinkError as exc:
            raise ArmLinkError(f"FeetechArm {what}: {exc}") from exc

    def _request(self, after: bytes = b"") -> None:
        self._pending = self.bus.request_sync_read(t.STATE_ADDRESS, t.STATE_LENGTH, self._ids,
                                                   name="Present_Position+Velocity", after=after)
        self._polled = not after

    def _take(self, pending: PendingRead) -> None:
        """Use ``pending``'s statuses that have arrived, without waiting; an incomplete read is a miss."""
        self._pending = None
        self.bus.collect(pending)
        raw = self.bus.result(pending)
        why = _implausible(raw) if raw is not None else (
            f"no status from motor(s) {[i for i in pending.motor_ids if i not in pending.statuses]}")
        if why:
            self._misses += 1
            self._counters["reads_missed"] += 1
            self._missed = why
            return
        assert raw is not None
        self._misses = 0
        self._measure(raw)
        self._latch_errors()

    def _settle(self) -> None:
        """Wait (up to ``timeout_s``) for the statuses of a pipelined read still on the wire, and drop it."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self.bus.collect(pending, wait_s=self.bus.timeout_s)

    def _measure(self, raw: dict[int, bytes]) -> None:
        ticks = {i: t.PRESENT_POSITION.decode(d[:2]) for i, d in raw.items()}
        speed = {i: t.PRESENT_VELOCITY.decode(d[2:]) for i, d in raw.items()}
        joints = self.calibration.joints
        self._measured = _Measured(
            timestamp=self._clock(),
            joint_positions=np.array([j.to_rad(ticks[j.motor_id]) for j in joints]),
            joint_velocities=np.array([speed[j.motor_id] * _RAD_PER_TICK for j in joints]),
            gripper=self.calibration.gripper.to_opening(ticks[self.calibration.gripper.motor_id]))
        self._last_read = self._measured.timestamp

    def _latch_errors(self) -> None:
        for motor_id, bits in self.bus.errors.items():
            if bits & HARDWARE_BITS:
                self._faults[motor_id] = self._faults.get(motor_id, 0) | bits & HARDWARE_BITS

    def _state(self) -> ArmState:
        m = self._measured
        assert m is not None
        return ArmState(timestamp=m.timestamp, faults=self._flags(m.joint_positions),
                        position=np.full((1, 3), np.nan), quaternion=np.full((1, 4), np.nan),
                        gripper=np.array([m.gripper]), joint_positions=m.joint_positions,
                        joint_velocities=m.joint_velocities, mode=self._mode())

    def _flags(self, q: np.ndarray) -> FaultFlag:
        flags = FaultFlag.ESTOP if self._estopped else FaultFlag(0)
        for bits in (*self._faults.values(), *(b & p.ErrorBit.ANGLE for b in self.bus.errors.values())):
            flags |= faults_of(bits)
        lower = np.array([j.lower for j in self.calibration.joints])
        upper = np.array([j.upper for j in self.calibration.joints])
        if np.any(q <= lower + _AT_LIMIT_RAD) or np.any(q >= upper - _AT_LIMIT_RAD):
            flags |= FaultFlag.AT_LIMIT
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
        if self._estopped:
            raise ArmFault(f"FeetechArm({self.bus.port}): e-stop latch is set; call clear_estop() first",
                           flags=FaultFlag.ESTOP, reason="estopped")
        if self._faults:
            raise self._fault("send target")
