"""What the emulated servo chains (Dynamixel, Feetech) share: control-table memory, motion, replies, control.

A family's emulator subclasses :class:`ChainServo` (its control table, its registers' rules) and
:class:`ServoChain` (its packets: ``_handle`` one instruction, build each status and pass it to
:meth:`ServoChain._reply`). Held once here: the servo's memory and first-order motion toward the goal, the
half-duplex outbox with the fault injection of replies (``drop_replies``, ``corrupt_replies``), the control
commands every chain answers (``snapshot``, ``silence``, ``set_register``), and the child-process entry points
(:func:`start`, :func:`arguments`, :func:`config_fields`) that run a chain behind a pty.
"""

from __future__ import annotations

import abc
import argparse
import dataclasses
import json
import math
import random
from typing import Any, Callable, ClassVar, Optional

from drivers.emulation.pty_emulator import EmulatorProcess, flip_random_bit
from drivers.serial_bus import Register
from drivers.stream_parser import StreamParser


class ChainServo(abc.ABC):
    """One servo: control-table memory plus the continuous present position (ticks, as Present_Position reports).

    ``config`` needs ``start_ticks``, ``tau_s`` (the motion's time constant) and ``max_speed_ticks_s``.
    """

    MEMORY_SIZE: ClassVar[int] = 256
    REGISTERS: ClassVar[tuple[Register, ...]]
    TORQUE_ENABLE: ClassVar[Register]
    GOAL_POSITION: ClassVar[Register]

    def __init__(self, motor_id: int, config: Any) -> None:
        self.id = motor_id
        self.config = config
        self.memory = bytearray(self.MEMORY_SIZE)
        self.present = float(config.start_ticks)
        self.silent = False

    def get(self, reg: Register) -> int:
        return reg.decode(bytes(self.memory[reg.address : reg.address + reg.size]))

    def set(self, reg: Register, value: int) -> None:
        self.memory[reg.address : reg.address + reg.size] = reg.encode(value)

    @property
    def torque(self) -> bool:
        return bool(self.get(self.TORQUE_ENABLE))

    def tick(self, now: float, dt: float) -> None:
        """Move ``dt`` seconds toward the goal (first order, speed-limited) while torque is on."""
        before = self.present
        if self.torque and dt > 0:
            goal = self.get(self.GOAL_POSITION)
            step = (goal - self.present) * (1.0 - math.exp(-dt / self.config.tau_s))
            limit = self.config.max_speed_ticks_s * dt
            self.present += max(-limit, min(limit, step))
            if abs(goal - self.present) < 0.5:
                self.present = float(goal)
        self._sync_present((self.present - before) / dt if dt > 0 else 0.0)

    @abc.abstractmethod
    def _sync_present(self, ticks_per_s: float) -> None:
        """Write the present-state registers (position, speed, moving) from ``present`` and ``ticks_per_s``."""

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {reg.name: self.get(reg) for reg in self.REGISTERS}
        out.update(present_exact=self.present, silent=self.silent)
        return out


class ServoChain(abc.ABC):
    """All servos on one bus (implements ``pty_emulator.Device``): ``config`` (default ``CONFIG()``) names their
    ids; ``seed`` seeds the fault injection."""

    CONFIG: ClassVar[Callable[[], Any]]
    SERVO: ClassVar[type[ChainServo]]
    PARSER: ClassVar[type[StreamParser[Any]]]

    def __init__(self, config: Any = None, *, seed: Optional[int] = None) -> None:
        self.config = config or self.CONFIG()
        self.servos = {i: self.SERVO(i, self.config) for i in self.config.ids}
        self.outbox: list[tuple[float, bytes]] = []
        self._parser = self.PARSER()
        self._rng = random.Random(seed)
        self._last_tick: Optional[float] = None
        self._drop = self._corrupt = 0

    def feed(self, data: bytes, now: float) -> None:
        for packet in self._parser.feed(data):
            self._handle(packet, now)

    def tick(self, now: float) -> None:
        dt = 0.0 if self._last_tick is None else min(now - self._last_tick, 0.05)
        self._last_tick = now
        for servo in self.servos.values():
            servo.tick(now, dt)

    @abc.abstractmethod
    def _handle(self, packet: Any, now: float) -> None:
        """Carry out one instruction packet from the host."""

    def _reply(self, due: float, wire: bytes) -> None:
        """Queue a status packet's bytes at ``due``, unless a ``drop_replies`` drops it or ``corrupt_replies``
        flips one of its bits."""
        if self._drop:
            self._drop -= 1
            return
        if self._corrupt:
            self._corrupt -= 1
            wire = flip_random_bit(wire, self._rng)
        self._queue(due, wire)

    def _queue(self, due: float, data: bytes) -> None:
        if self.outbox:
            due = max(due, self.outbox[-1][0])  # the bus is half-duplex: one reply after the other
        self.outbox.append((due, data))

    # ---- control commands from the test ----------------------------------------------------------

    def control(self, command: str, args: dict[str, Any]) -> Any:
        handler = getattr(self, f"_ctl_{command}", None)
        if handler is None:
            raise ValueError(f"unknown emulator command {command!r}")
        return handler(**args)

    def _servo(self, motor_id: int) -> Any:
        if motor_id not in self.servos:
            raise ValueError(f"no emulated servo with id {motor_id} (ids: {sorted(self.servos)})")
        return self.servos[motor_id]

    def _ctl_snapshot(self) -> dict[str, Any]:
        return {str(i): servo.snapshot() for i, servo in self.servos.items()}

    def _ctl_drop_replies(self, n: int = 1) -> None:
        self._drop = n

    def _ctl_corrupt_replies(self, n: int = 1) -> None:
        self._corrupt = n

    def _ctl_silence(self, motor_id: int, on: bool = True) -> None:
        self._servo(motor_id).silent = on

    def _ctl_set_register(self, motor_id: int, name: str, value: int) -> None:
        regs = {reg.name: reg for reg in self.SERVO.REGISTERS}
        if name not in regs:
            raise ValueError(f"unknown register {name!r}; known: {sorted(regs)}")
        self._servo(motor_id).set(regs[name], value)


# ---- the chain's own process ---------------------------------------------------------------------


def start(module: str, config: Any, seed: Optional[int]) -> EmulatorProcess:
    """Start ``python -m module`` (a chain's emulator) on ``config`` (a dataclass) in a child process; ``.port``
    is its pty path. Stop with ``.stop()``."""
    args = ["--config", json.dumps(dataclasses.asdict(config))]
    proc = EmulatorProcess(module, args + ([] if seed is None else ["--seed", str(seed)]))
    proc.start()
    return proc


def arguments(doc: str, *extra: tuple[str, dict[str, Any]]) -> argparse.ArgumentParser:
    """The command line of a chain's emulator: ``--config``, the family's ``extra`` options, ``--seed``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--config", default="{}", help='ChainConfig fields as JSON, e.g. \'{"ids": [1, 2, 3]}\'')
    for flag, options in extra:
        parser.add_argument(flag, **options)
    parser.add_argument("--seed", type=int, default=None, help="seed for fault injection")
    return parser


def config_fields(text: str, tuples: tuple[str, ...] = ("ids",)) -> dict[str, Any]:
    """The ChainConfig fields in ``--config``'s JSON, the lists of the ``tuples`` fields made tuples."""
    fields = json.loads(text)
    for key in tuples:
        if key in fields:
            fields[key] = tuple(fields[key])
    return fields
