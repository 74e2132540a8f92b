"""Emulated chain of Feetech STS3215 servos (an SO-100/SO-101 arm) behind a pty, for tests and bring-up.

Runs in its own process (see :mod:`drivers.emulation.pty_emulator`)::

    python -m drivers.feetech.emulator --config '{"ids": [1, 2, 3, 4, 5, 6]}'    # prints /dev/pts/N
    python -m drivers.feetech.emulator --lerobot so101_follower.json              # servos holding that calibration

Modelled: PING (unicast and broadcast), READ, WRITE, SYNC READ, SYNC WRITE, each servo answering with a status
packet after its Return_Delay_Time, the one after the other; Response_Status_Level (0: only PING and READ are
answered); control-table memory per id holding the registers of :mod:`.tables` (a write must cover whole
registers; read-only registers are left as they are); Homing_Offset (Present_Position = actual − offset, and
goals and motion are in that frame); Min/Max_Position_Limit (a goal outside is clamped to the limit and the
status carries the angle-limit bit until a goal inside arrives); first-order motion toward the goal while
torque is on; Present_Velocity in ticks/s, sign-magnitude. Every status carries the servo's error bits;
a hardware bit in Unloading_Condition turns torque off, and torque cannot come back while the bit is set.
No deadman: a servo the host stops talking to keeps its last goal.

Fault injection (control commands): ``drop_replies``, ``corrupt_replies``, ``silence``, ``hardware_error``
(set or clear error bits), ``set_register``; ``snapshot`` returns every servo's registers and counters, and
``goal_log`` the times and values of the last goal writes. Not modelled: wire timing at the baud rate,
REG_WRITE/ACTION, EEPROM persistence and Lock.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from typing import Any, Optional

from drivers.emulation import servo_chain
from drivers.emulation.pty_emulator import EmulatorProcess, run
from drivers.feetech import protocol as p
from drivers.feetech import tables as t

MEMORY_SIZE = servo_chain.ChainServo.MEMORY_SIZE
GOAL_LOG = 4096  # goal writes kept for ``goal_log``
_BY_ADDRESS = {reg.address: reg for reg in t.STS_SERIES}
_I = p.Instruction
#: A ``lerobot-calibrate`` file of an SO-101 follower (six STS3215, ids 1-6, the gripper last), as the
#: emulated arm's servos hold it with ``--so101``; the tests and the tick benchmark use it too.
SO101_CALIBRATION: dict[str, dict[str, int]] = {
    "shoulder_pan": {"id": 1, "drive_mode": 0, "homing_offset": -1470, "range_min": 758, "range_max": 3292},
    "shoulder_lift": {"id": 2, "drive_mode": 0, "homing_offset": 157, "range_min": 612, "range_max": 3401},
    "elbow_flex": {"id": 3, "drive_mode": 0, "homing_offset": -1276, "range_min": 881, "range_max": 3047},
    "wrist_flex": {"id": 4, "drive_mode": 0, "homing_offset": -1009, "range_min": 854, "range_max": 3288},
    "wrist_roll": {"id": 5, "drive_mode": 0, "homing_offset": -1164, "range_min": 212, "range_max": 3957},
    "gripper": {"id": 6, "drive_mode": 0, "homing_offset": 1480, "range_min": 2031, "range_max": 3395},
}


@dataclasses.dataclass(frozen=True)
class ChainConfig:
    """The emulated servos, their calibration registers and how they move. ``calibration``: motor id →
    [homing_offset, range_min, range_max], as ``lerobot-calibrate`` leaves them (default: 0, 0, 4095)."""

    ids: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    model_number: int = 777  # STS3215
    firmware: tuple[int, int] = (3, 10)
    start_ticks: int = 2048
    return_delay: int = 0  # LeRobot configures 0 (the factory default is 250: 500 us)
    tau_s: float = 0.02
    max_speed_ticks_s: float = 4096.0
    calibration: Optional[dict] = None

    @classmethod
    def from_lerobot(cls, data: dict[str, Any], **fields: Any) -> ChainConfig:
        """Servos holding a ``lerobot-calibrate`` file's offsets and ranges (ids from the file)."""
        calibration = {str(m["id"]): [m["homing_offset"], m["range_min"], m["range_max"]] for m in data.values()}
        return cls(ids=tuple(m["id"] for m in data.values()), calibration=calibration, **fields)


class Servo(servo_chain.ChainServo):
    """One servo: control-table memory plus the continuous position (ticks, in the frame Present_Position reports:
    after the homing offset, where goals are taken)."""

    REGISTERS = t.STS_SERIES
    TORQUE_ENABLE, GOAL_POSITION = t.TORQUE_ENABLE, t.GOAL_POSITION

    def __init__(self, motor_id: int, config: ChainConfig) -> None:
        super().__init__(motor_id, config)
        self.errors = 0  # hardware bits injected (voltage, overheat, overcurrent, overload)
        self.angle_error = False
        offset, low, high = (config.calibration or {}).get(str(motor_id), (0, 0, t.MAX_TICK))
        for reg, value in ((t.FIRMWARE_MAJOR, config.firmware[0]), (t.FIRMWARE_MINOR, config.firmware[1]),
                           (t.MODEL_NUMBER, config.model_number), (t.ID, motor_id), (t.BAUD_RATE, 0),
                           (t.RETURN_DELAY_TIME, config.return_delay), (t.RESPONSE_STATUS_LEVEL, 1),
                           (t.MIN_POSITION_LIMIT, low), (t.MAX_POSITION_LIMIT, high), (t.HOMING_OFFSET, offset),
                           (t.UNLOADING_CONDITION, 0x2C), (t.OPERATING_MODE, t.OperatingMode.POSITION),
                           (t.P_COEFFICIENT, 32), (t.LOCK, 1), (t.PRESENT_VOLTAGE, 120), (t.PRESENT_TEMPERATURE, 30)):
            self.set(reg, value)
        self._sync_present(0.0)
        self.set(t.GOAL_POSITION, self.get(t.PRESENT_POSITION))

    @property
    def error_byte(self) -> int:
        return self.errors | (p.ErrorBit.ANGLE if self.angle_error else 0)

    def read(self, address: int, length: int) -> Optional[bytes]:
        if length == 0 or address + length > MEMORY_SIZE:
            return None
        return bytes(self.memory[address : address + length])

    def write(self, address: int, data: bytes) -> bool:
        """Apply a write to whole registers (read-only ones are skipped); False when it does not fit the table."""
        regs, cursor = [], address
        while cursor < address + len(data):
            reg = _BY_ADDRESS.get(cursor)
            if reg is None or cursor + reg.size > address + len(data):
                return False
            regs.append(reg)
            cursor += reg.size
        for reg in regs:
            if not reg.writable:
                continue
            value = reg.decode(data[reg.address - address : reg.address - address + reg.size])
            if reg is t.TORQUE_ENABLE:
                if value and self.errors & self.get(t.UNLOADING_CONDITION):
                    continue  # the servo keeps torque off while the condition lasts
                if value and not self.torque:
                    self.set(t.GOAL_POSITION, self.get(t.PRESENT_POSITION))
            if reg is t.HOMING_OFFSET:  # the encoder stays where it is: what it reports moves
                self.present = float((self.present - (value - self.get(t.HOMING_OFFSET))) % t.TICKS_PER_REV)
            if reg is t.GOAL_POSITION:
                low, high = self.get(t.MIN_POSITION_LIMIT), self.get(t.MAX_POSITION_LIMIT)
                self.angle_error = not low <= value <= high
                value = min(high, max(low, value))
            self.set(reg, value)
        return True

    @property
    def actual(self) -> int:
        """The encoder's own reading: Present_Position + Homing_Offset, within a turn."""
        return (round(self.present) + self.get(t.HOMING_OFFSET)) % t.TICKS_PER_REV

    def _sync_present(self, ticks_per_s: float) -> None:
        present = round(self.present) % t.TICKS_PER_REV
        self.set(t.PRESENT_POSITION, present)
        self.set(t.PRESENT_VELOCITY, max(-32767, min(32767, round(ticks_per_s))))
        self.set(t.MOVING, int(self.torque and abs(self.get(t.GOAL_POSITION) - present) > 1))
        self.set(t.STATUS, self.error_byte)

    def snapshot(self) -> dict[str, Any]:
        out = super().snapshot()
        out.update(actual=self.actual, error_bits=self.error_byte)
        return out


class ServoChain(servo_chain.ServoChain):
    """All servos on one bus (implements ``pty_emulator.Device``)."""

    CONFIG, SERVO, PARSER = ChainConfig, Servo, p.PacketParser
    servos: dict[int, Servo]

    def __init__(self, config: ChainConfig | None = None, *, seed: int | None = None) -> None:
        super().__init__(config, seed=seed)
        self.goal_log: collections.deque = collections.deque(maxlen=GOAL_LOG)

    def _handle(self, packet: p.Packet, now: float) -> None:
        broadcast = packet.id == p.BROADCAST_ID
        live = [s for s in self.servos.values() if not s.silent and (broadcast or s.id == packet.id)]
        inst, params = packet.code, packet.params
        if inst == _I.SYNC_READ and broadcast and len(params) >= 3:
            for motor_id in params[2:]:
                servo = self.servos.get(motor_id)
                if servo is not None and not servo.silent:
                    data = servo.read(params[0], params[1])
                    if data is not None:
                        self._status(servo, now, data, always=True)
        elif inst == _I.SYNC_WRITE and broadcast and len(params) >= 2:
            self._sync_write(params, now)
        elif inst == _I.PING:
            for servo in live:
                self._status(servo, now, always=True)
        elif inst == _I.READ and not broadcast and live and len(params) == 2:
            data = live[0].read(params[0], params[1])
            if data is not None:
                self._status(live[0], now, data, always=True)
        elif inst == _I.WRITE and len(params) >= 2:
            for servo in live:
                if servo.write(params[0], params[1:]):
                    self._log_goal(servo, params[0], now)
                    if not broadcast:
                        self._status(servo, now)

    def _sync_write(self, params: bytes, now: float) -> None:
        address, length, blocks = params[0], params[1], params[2:]
        if length == 0 or len(blocks) % (length + 1):
            return
        for start in range(0, len(blocks), length + 1):
            servo = self.servos.get(blocks[start])
            if servo is not None and not servo.silent and servo.write(address, blocks[start + 1 : start + 1 + length]):
                self._log_goal(servo, address, now)

    def _log_goal(self, servo: Servo, address: int, now: float) -> None:
        if address == t.GOAL_POSITION.address:
            self.goal_log.append((now, servo.id, servo.get(t.GOAL_POSITION)))

    def _status(self, servo: Servo, now: float, data: bytes = b"", *, always: bool = False) -> None:
        """Queue a status packet after the servo's return delay (a write's only at Response_Status_Level 1)."""
        if not always and servo.get(t.RESPONSE_STATUS_LEVEL) == 0:
            return
        wire = p.Status(servo.id, servo.error_byte, data).to_packet().encode()
        self._reply(now + servo.get(t.RETURN_DELAY_TIME) * t.RETURN_DELAY_UNIT_S, wire)

    # ---- control commands from the test (the shared ones: servo_chain.ServoChain) -----------------

    def _ctl_goal_log(self) -> list:
        return list(self.goal_log)

    def _ctl_hardware_error(self, motor_id: int, bits: int) -> None:
        """Set the servo's hardware bits (0 clears them); a bit of Unloading_Condition turns torque off."""
        servo = self._servo(motor_id)
        servo.errors = bits & ~p.ErrorBit.ANGLE
        servo.set(t.STATUS, servo.error_byte)
        if servo.errors & servo.get(t.UNLOADING_CONDITION):
            servo.set(t.TORQUE_ENABLE, 0)


def start(config: ChainConfig | None = None, *, seed: int | None = None) -> EmulatorProcess:
    """Start an emulated servo chain in a child process; ``.port`` is its pty path. Stop with ``.stop()``."""
    return servo_chain.start("drivers.feetech.emulator", config or ChainConfig(), seed)


def main(argv: list[str] | None = None) -> None:
    lerobot = ("--lerobot", {"metavar": "FILE", "help": "servos holding this lerobot-calibrate file's calibration"})
    args = servo_chain.arguments(__doc__, lerobot).parse_args(argv)
    fields = servo_chain.config_fields(args.config, ("ids", "firmware"))
    if args.lerobot:
        with open(args.lerobot) as f:
            config = ChainConfig.from_lerobot(json.load(f), **fields)
    else:
        config = ChainConfig(**fields)
    run(ServoChain(config, seed=args.seed))


if __name__ == "__main__":
    main()
