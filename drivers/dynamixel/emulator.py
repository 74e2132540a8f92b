"""Emulated chain of X-series Dynamixel servos behind a pty, for tests and bring-up without hardware.

Runs in its own process (see :mod:`drivers.emulation.pty_emulator`)::

    python -m drivers.dynamixel.emulator --config '{"ids": [1, 2, 3, 4, 5, 6]}'    # prints /dev/pts/N

Modelled: PING (unicast and broadcast), READ, WRITE (unicast and broadcast), SYNC READ, SYNC WRITE
and REBOOT with status packets after each servo's Return_Delay_Time; Status_Return_Level; control
table memory per id holding the registers of :mod:`.tables` (writes must cover whole registers;
read-only registers and EEPROM-with-torque-on refuse with ACCESS_ERROR); first-order motion of
Present_Position toward Goal_Position while torque is on, clamped to Min/Max_Position_Limit in
position mode (goals outside them are refused with DATA_LIMIT_ERROR); torque enable resets the goal to
the present position; Bus_Watchdog (e-Manual "Bus Watchdog(98)": with torque on, when no instruction
for this id or broadcast arrives within the set time, the servo stops, the register reads -1 and goal
writes fail with DATA_RANGE_ERROR until 0 is written); hardware errors (alert bit in every status,
torque off when the bit is in Shutdown; torque cannot come back until REBOOT).

Fault injection (control commands): ``drop_replies``, ``corrupt_replies``, ``silence``,
``hardware_error``, ``echo`` (a half-duplex adapter that echoes TX), ``set_register``; ``snapshot``
returns every servo's registers and counters. Not modelled: wire timing at the baud rate, CRC_ERROR
replies (corrupted instructions are dropped), REG_WRITE/ACTION, bulk and fast sync read.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from drivers.dynamixel import protocol as p
from drivers.dynamixel import tables as t
from drivers.emulation import servo_chain
from drivers.emulation.pty_emulator import EmulatorProcess, run

MEMORY_SIZE = servo_chain.ChainServo.MEMORY_SIZE
_BY_ADDRESS = {reg.address: reg for reg in t.X_SERIES}
_E = p.ResultError


@dataclasses.dataclass(frozen=True)
class ChainConfig:
    """The emulated servos and how they move."""

    ids: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    model_number: int = 1020  # XM430-W350
    firmware: int = 48
    start_ticks: int = 2048
    return_delay: int = 250  # factory default: 500 us
    tau_s: float = 0.02
    max_speed_ticks_s: float = 4096.0


class Servo(servo_chain.ChainServo):
    """One servo: control-table memory plus the continuous present position."""

    REGISTERS = t.X_SERIES
    TORQUE_ENABLE, GOAL_POSITION = t.TORQUE_ENABLE, t.GOAL_POSITION

    def __init__(self, motor_id: int, config: ChainConfig) -> None:
        super().__init__(motor_id, config)
        self.last_instruction = 0.0
        self.limit_refusals = 0  # goal writes outside Min/Max_Position_Limit
        self.watchdog_refusals = 0  # goal writes while the Bus_Watchdog is tripped
        for reg, value in (
            (t.MODEL_NUMBER, config.model_number), (t.FIRMWARE_VERSION, config.firmware), (t.ID, motor_id),
            (t.BAUD_RATE, 3), (t.RETURN_DELAY_TIME, config.return_delay),
            (t.OPERATING_MODE, t.OperatingMode.POSITION), (t.VELOCITY_LIMIT, 265),
            (t.MAX_POSITION_LIMIT, t.TICKS_PER_REV - 1), (t.MIN_POSITION_LIMIT, 0), (t.SHUTDOWN, 0x34),
        ):
            self.set(reg, value)
        self.reboot()

    def reboot(self) -> None:
        """RAM back to defaults: torque off, watchdog off, hardware errors cleared, goal = present."""
        self.memory[t.EEPROM_END :] = bytes(MEMORY_SIZE - t.EEPROM_END)
        for reg, value in (
            (t.STATUS_RETURN_LEVEL, 2), (t.POSITION_P_GAIN, 800), (t.PRESENT_INPUT_VOLTAGE, 120),
            (t.PRESENT_TEMPERATURE, 30),
        ):
            self.set(reg, value)
        self._sync_present(0.0)
        self.set(t.GOAL_POSITION, round(self.present))

    @property
    def error_byte(self) -> int:
        return p.ALERT_BIT if self.get(t.HARDWARE_ERROR_STATUS) else 0

    # ---- instructions ----------------------------------------------------------------------------

    def read(self, address: int, length: int) -> tuple[int, bytes]:
        if address + length > MEMORY_SIZE or length == 0:
            return _E.DATA_RANGE_ERROR, b""
        return _E.NONE, bytes(self.memory[address : address + length])

    def write(self, address: int, data: bytes) -> int:
        """Apply a write atomically; returns the result code."""
        regs = []
        cursor, end = address, address + len(data)
        while cursor < end:
            reg = _BY_ADDRESS.get(cursor)
            if reg is None:
                return _E.ACCESS_ERROR
            if cursor + reg.size > end:
                return _E.DATA_LENGTH_ERROR
            regs.append(reg)
            cursor += reg.size
        values = {reg: reg.decode(data[reg.address - address : reg.address - address + reg.size]) for reg in regs}
        for reg, value in values.items():
            error = self._check_write(reg, value)
            if error == _E.DATA_LIMIT_ERROR:
                self.limit_refusals += 1
            elif error and reg in t.GOAL_REGISTERS:
                self.watchdog_refusals += 1
            if error:
                return error
        for reg, value in values.items():
            if reg is t.TORQUE_ENABLE and value and not self.torque:
                self.set(t.GOAL_POSITION, round(self.present))
            self.set(reg, value)
        return _E.NONE

    def _check_write(self, reg: t.Register, value: int) -> int:
        if not reg.writable or (reg.eeprom and self.torque):
            return _E.ACCESS_ERROR
        if reg in t.GOAL_REGISTERS and self.get(t.BUS_WATCHDOG) == t.WATCHDOG_TRIPPED:
            return _E.DATA_RANGE_ERROR
        if reg is t.BUS_WATCHDOG and value < 0:
            return _E.DATA_RANGE_ERROR
        if reg is t.TORQUE_ENABLE and value and self.get(t.HARDWARE_ERROR_STATUS):
            return _E.RESULT_FAIL
        if reg is t.GOAL_POSITION and self.get(t.OPERATING_MODE) == t.OperatingMode.POSITION:
            if not self.get(t.MIN_POSITION_LIMIT) <= value <= self.get(t.MAX_POSITION_LIMIT):
                return _E.DATA_LIMIT_ERROR
        return _E.NONE

    # ---- time ------------------------------------------------------------------------------------

    def tick(self, now: float, dt: float) -> None:
        watchdog = self.get(t.BUS_WATCHDOG)
        if self.torque and watchdog > 0 and now - self.last_instruction > watchdog * t.WATCHDOG_UNIT_S:
            self.set(t.BUS_WATCHDOG, t.WATCHDOG_TRIPPED)
            self.set(t.GOAL_POSITION, round(self.present))  # stop where it is
        super().tick(now, dt)

    def _sync_present(self, ticks_per_s: float) -> None:
        self.set(t.PRESENT_POSITION, round(self.present))
        self.set(t.PRESENT_VELOCITY, round(ticks_per_s * 60 / t.TICKS_PER_REV / t.VELOCITY_UNIT_RPM))
        self.set(t.MOVING, int(abs(self.get(t.GOAL_POSITION) - self.present) > 1 and self.torque))

    def snapshot(self) -> dict[str, Any]:
        out = super().snapshot()
        out.update(limit_refusals=self.limit_refusals, watchdog_refusals=self.watchdog_refusals)
        return out


class ServoChain(servo_chain.ServoChain):
    """All servos on one bus (implements ``pty_emulator.Device``)."""

    CONFIG, SERVO, PARSER = ChainConfig, Servo, p.PacketParser
    servos: dict[int, Servo]
    _echo = False  # a half-duplex adapter's echo of what the host sends (``echo``)

    def feed(self, data: bytes, now: float) -> None:
        if self._echo:
            self._queue(now, data)
        super().feed(data, now)

    # ---- instruction handling --------------------------------------------------------------------

    def _live(self, motor_id: int) -> Servo | None:
        servo = self.servos.get(motor_id)
        return None if servo is None or servo.silent else servo

    def _handle(self, packet: p.Packet, now: float) -> None:
        if packet.instruction == p.Instruction.STATUS:
            return
        broadcast = packet.id == p.BROADCAST_ID
        addressed = [s for s in self.servos.values() if not s.silent and (broadcast or s.id == packet.id)]
        for servo in addressed:
            servo.last_instruction = now
        inst, params = packet.instruction, packet.params
        if inst == p.Instruction.SYNC_READ and broadcast:
            self._sync_read(params, now)
        elif inst == p.Instruction.SYNC_WRITE and broadcast:
            self._sync_write(params)
        elif inst == p.Instruction.PING:
            for servo in addressed:
                model = t.MODEL_NUMBER.encode(servo.get(t.MODEL_NUMBER))
                self._status(servo, now, data=model + bytes([servo.get(t.FIRMWARE_VERSION)]), level=0)
        elif broadcast and inst == p.Instruction.WRITE and len(params) > 2:
            for servo in addressed:
                servo.write(int.from_bytes(params[:2], "little"), params[2:])
        elif not broadcast and addressed:
            self._unicast(addressed[0], inst, params, now)

    def _unicast(self, servo: Servo, inst: int, params: bytes, now: float) -> None:
        if inst == p.Instruction.READ:
            if len(params) != 4:
                return self._status(servo, now, error=_E.DATA_LENGTH_ERROR, level=1)
            error, data = servo.read(int.from_bytes(params[:2], "little"), int.from_bytes(params[2:], "little"))
            return self._status(servo, now, error=error, data=data, level=1)
        if inst == p.Instruction.WRITE:
            if len(params) < 3:
                return self._status(servo, now, error=_E.DATA_LENGTH_ERROR)
            return self._status(servo, now, error=servo.write(int.from_bytes(params[:2], "little"), params[2:]))
        if inst == p.Instruction.REBOOT:
            self._status(servo, now)
            return servo.reboot()
        return self._status(servo, now, error=_E.INSTRUCTION_ERROR)

    def _sync_read(self, params: bytes, now: float) -> None:
        if len(params) < 5:
            return
        address, length = int.from_bytes(params[:2], "little"), int.from_bytes(params[2:4], "little")
        for motor_id in params[4:]:
            servo = self._live(motor_id)
            if servo is not None:
                error, data = servo.read(address, length)
                self._status(servo, now, error=error, data=data, level=1)

    def _sync_write(self, params: bytes) -> None:
        if len(params) < 4:
            return
        address, length = int.from_bytes(params[:2], "little"), int.from_bytes(params[2:4], "little")
        blocks = params[4:]
        if length == 0 or len(blocks) % (length + 1):
            return
        for start in range(0, len(blocks), length + 1):
            servo = self._live(blocks[start])
            if servo is not None:
                servo.write(address, blocks[start + 1 : start + 1 + length])

    def _status(self, servo: Servo, now: float, *, error: int = 0, data: bytes = b"", level: int = 2) -> None:
        """Queue a status packet after the servo's return delay, if its Status_Return_Level allows."""
        if servo.get(t.STATUS_RETURN_LEVEL) < level:
            return
        wire = p.Status(servo.id, error | servo.error_byte, data).to_packet().encode()
        self._reply(now + servo.get(t.RETURN_DELAY_TIME) * t.RETURN_DELAY_UNIT_S, wire)

    # ---- control commands from the test (the shared ones: servo_chain.ServoChain) -----------------

    def _ctl_echo(self, on: bool = True) -> None:
        self._echo = on

    def _ctl_hardware_error(self, motor_id: int, bits: int) -> None:
        servo = self._servo(motor_id)
        servo.set(t.HARDWARE_ERROR_STATUS, bits)
        if bits & servo.get(t.SHUTDOWN):
            servo.set(t.TORQUE_ENABLE, 0)


def start(config: ChainConfig | None = None, *, seed: int | None = None) -> EmulatorProcess:
    """Start an emulated servo chain in a child process; ``.port`` is its pty path. Stop with ``.stop()``."""
    return servo_chain.start("drivers.dynamixel.emulator", config or ChainConfig(), seed)


def main(argv: list[str] | None = None) -> None:
    args = servo_chain.arguments(__doc__).parse_args(argv)
    run(ServoChain(ChainConfig(**servo_chain.config_fields(args.config)), seed=args.seed))


if __name__ == "__main__":
    main()
