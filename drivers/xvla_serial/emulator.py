"""Emulated xvla-serial arm controller (PROTOCOL.md), for tests and bring-up without hardware.

Runs in its own process on a pty (see :mod:`drivers.emulation.pty_emulator`)::

    python -m drivers.xvla_serial.emulator --config '{"n_joints": 7}'    # prints /dev/pts/N

Joints and end-effector poses follow their targets with first-order dynamics (time constant
``tau_s``) capped at the advertised velocities; the EE and joint states are independent (the
emulator has no kinematics). It enforces the limits it advertises, holds on its own host-silence
timeout, and takes fault-injection commands (``drop_rx``, ``drop_tx``, ``corrupt_tx``, ``garbage``,
``silence``, ``latency``, ``reboot``, ``press_estop`` (``held=True``: the button stays pressed, so the host
cannot clear the e-stop until ``release_estop``), ``set_fault``, ``clear_fault``) plus ``snapshot`` (with
``estop_times``: the ``time.monotonic()`` at which each ESTOP frame arrived, to time an e-stop end to end),
``ee`` (the measured poses) and ``place`` (put the arm somewhere: a simulated scene reset) from the test. Its memory stays flat however long it runs: it counts accepted and refused TARGETs and keeps
only the last :data:`HISTORY` of each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import time
from collections import deque
from typing import Any

from drivers.emulation.pty_emulator import EmulatorProcess, flip_random_bit, run
from drivers.xvla_serial import codec as c

HISTORY = 1000  # accepted sequence numbers and NACKs kept for ``snapshot`` (the counts cover every one)


@dataclasses.dataclass(frozen=True)
class ControllerConfig:
    """What the emulated controller advertises and how it moves."""

    n_joints: int = 6
    n_arms: int = 1
    target_modes: tuple[c.TargetMode, ...] = (c.TargetMode.EE, c.TargetMode.JOINT)
    joint_limit_rad: float = 2.5
    joint_max_velocity: float = 6.0  # rad/s
    workspace_lower: tuple[float, float, float] = (-0.8, -0.8, -0.2)
    workspace_upper: tuple[float, float, float] = (0.8, 0.8, 1.0)
    ee_max_speed: float = 2.0  # m/s
    default_timeout_ms: int = 200
    timeout_range_ms: tuple[int, int] = (20, 2000)
    max_rate_hz: int = 1000
    tau_s: float = 0.01
    home_ee: tuple[float, ...] = (0.3, 0.0, 0.3, 0.0, 0.0, 0.0, 1.0, 0.0)

    def capabilities(self, timeout_ms: int, boot_id: int) -> c.CapabilitiesMsg:
        lim = self.joint_limit_rad
        return c.CapabilitiesMsg(
            target_modes=self.target_modes,
            timeout_ms=timeout_ms,
            max_rate_hz=self.max_rate_hz,
            boot_id=boot_id,
            joints=tuple(c.JointLimit(-lim, lim, self.joint_max_velocity) for _ in range(self.n_joints)),
            workspaces=tuple(c.Workspace(self.workspace_lower, self.workspace_upper) for _ in range(self.n_arms)),
        )


class ControllerEmulator:
    """The controller's behaviour, independent of the transport (implements ``pty_emulator.Device``)."""

    def __init__(self, config: ControllerConfig | None = None, *, seed: int | None = None) -> None:
        self.config = config or ControllerConfig()
        self.outbox: list[tuple[float, bytes]] = []
        self._rng = random.Random(seed)
        self._drop_rx = self._drop_tx = self._corrupt_tx = 0
        self._silent = False
        self._latency_s = 0.0  # every reply leaves this long after its request arrived
        self.positions = [0.0] * self.config.n_joints
        self.velocities = [0.0] * self.config.n_joints
        self.ee = [list(self.config.home_ee) for _ in range(self.config.n_arms)]
        self._last_tick: float | None = None
        self.accepted = 0  # accepted TARGETs, across reboots
        self.accepted_seqs: deque[int] = deque(maxlen=HISTORY)  # the last ones' sequence numbers
        self.nacked = 0
        self.nacks: deque[tuple[int, str]] = deque(maxlen=HISTORY)  # the last NACKs: (seq, reason)
        self.seq_gaps = 0  # host frames that never arrived, judged by gaps in the host's sequence numbers
        self.last_target: list[float] = []  # values of the last accepted TARGET
        self.estop_times: deque[float] = deque(maxlen=HISTORY)  # time.monotonic() of each ESTOP (engage) frame read
        self._last_rx_seq: int | None = None
        self._boot(time.monotonic())

    # ---- lifecycle and modes ---------------------------------------------------------------------

    def _boot(self, now: float) -> None:
        self.boot_id = self._rng.getrandbits(32)
        self._boot_time = now
        self._session = False
        self._base_mode = c.ControllerMode.NOT_READY
        self.faults = c.Fault(0)
        self._conditions = c.Fault(0)  # hardware faults whose cause is still present
        self._estop_held = False  # the e-stop input is pressed: a host release is refused
        self.timeout_ms = self.config.default_timeout_ms
        self._last_rx = now
        self._last_target_seq = 0
        self._parser = c.FrameParser()
        self.caps = self.config.capabilities(self.timeout_ms, self.boot_id)
        self._hold()

    @property
    def mode(self) -> c.ControllerMode:
        if self.faults & c.Fault.ESTOP:
            return c.ControllerMode.ESTOPPED
        if self.faults & c.HARDWARE_FAULTS:
            return c.ControllerMode.FAULT
        return self._base_mode

    def _hold(self) -> None:
        """Freeze the targets at the present pose (stop category 2)."""
        self.joint_target = list(self.positions)
        self.ee_target = [list(arm) for arm in self.ee]
        self.velocities = [0.0] * self.config.n_joints
        if self._session and self._base_mode != c.ControllerMode.NOT_READY:
            self._base_mode = c.ControllerMode.HOLDING

    # ---- bytes in, replies out -------------------------------------------------------------------

    def feed(self, data: bytes, now: float) -> None:
        if self._silent:
            return
        for frame in self._parser.feed(data):
            if self._drop_rx:
                self._drop_rx -= 1
                continue
            self._last_rx = now
            if self._last_rx_seq is not None and frame.seq != (self._last_rx_seq + 1) & 0xFFFF:
                self.seq_gaps += 1
            self._last_rx_seq = frame.seq
            self._send(c.encode(self._handle(frame, now), frame.seq), now)

    def _send(self, wire: bytes, now: float) -> None:
        if self._drop_tx:
            self._drop_tx -= 1
            return
        if self._corrupt_tx:
            self._corrupt_tx -= 1
            wire = flip_random_bit(wire, self._rng)
        self.outbox.append((now + self._latency_s, wire))

    def _handle(self, frame: c.Frame, now: float) -> c.Message:
        if frame.version != c.VERSION:
            return self._nack(frame, c.NackReason.UNSUPPORTED_VERSION)
        if frame.type not in c.HOST_TYPES:
            return self._nack(frame, c.NackReason.UNKNOWN_TYPE)
        try:
            message = c.decode(frame)
        except c.ProtocolError:
            return self._nack(frame, c.NackReason.MALFORMED)
        if isinstance(message, c.HelloMsg):
            return self._hello(message, frame.seq)
        if isinstance(message, c.TargetMsg):
            return self._target(message, frame)
        if isinstance(message, c.EstopMsg):
            if message.engage:
                self.estop_times.append(now)
            if message.engage or not self._estop_held:
                self.faults = (self.faults | c.Fault.ESTOP) if message.engage else (self.faults & ~c.Fault.ESTOP)
            self._hold()
        elif isinstance(message, c.HoldMsg) and self.mode in _HOLDABLE:
            self._hold()
        elif isinstance(message, c.HeartbeatMsg):
            return self._state(now)
        return c.AckMsg(self.mode, self.faults)

    def _nack(self, frame: c.Frame, reason: c.NackReason, field: int = c.NO_FIELD) -> c.NackMsg:
        self.nacked += 1
        self.nacks.append((frame.seq, reason.name))
        return c.NackMsg(reason, field, self.mode, self.faults)

    def _hello(self, hello: c.HelloMsg, seq: int) -> c.CapabilitiesMsg:
        lo, hi = self.config.timeout_range_ms
        self.timeout_ms = min(max(hello.timeout_ms or self.config.default_timeout_ms, lo), hi)
        self.caps = self.config.capabilities(self.timeout_ms, self.boot_id)
        self.faults &= ~(c.Fault.HOST_TIMEOUT | (c.HARDWARE_FAULTS & ~self._conditions))
        self._session = True
        self._last_target_seq = seq
        self._hold()
        self._base_mode = c.ControllerMode.IDLE
        return self.caps

    def _target(self, target: c.TargetMsg, frame: c.Frame) -> c.Message:
        mode = self.mode
        if mode == c.ControllerMode.NOT_READY:
            return self._nack(frame, c.NackReason.NOT_READY)
        if mode == c.ControllerMode.ESTOPPED:
            return self._nack(frame, c.NackReason.ESTOPPED)
        if mode == c.ControllerMode.FAULT:
            return self._nack(frame, c.NackReason.FAULTED)
        if self.faults & c.Fault.HOST_TIMEOUT:
            return self._nack(frame, c.NackReason.TIMED_OUT)
        if not c.seq_newer(frame.seq, self._last_target_seq):
            return self._nack(frame, c.NackReason.STALE_SEQUENCE)
        violation = c.target_violation(target, self.caps)
        if violation is not None:
            return self._nack(frame, *violation)
        values = list(target.values)
        if target.mode == c.TargetMode.EE:
            self.ee_target = [_normalised(values[i : i + c.EE_VALUES]) for i in range(0, len(values), c.EE_VALUES)]
        else:
            n = self.config.n_joints
            self.joint_target = values[:n]
            for arm, gripper in zip(self.ee_target, values[n:]):
                arm[7] = gripper
        self._last_target_seq = frame.seq
        self.accepted += 1
        self.accepted_seqs.append(frame.seq)
        self.last_target = values
        self._base_mode = c.ControllerMode.TRACKING
        return c.AckMsg(self.mode, self.faults)

    def _state(self, now: float) -> c.StateMsg:
        return c.StateMsg(
            mode=self.mode,
            faults=self.faults,
            last_target_seq=self._last_target_seq,
            boot_id=self.boot_id,
            uptime_ms=int((now - self._boot_time) * 1000),
            positions=tuple(self.positions),
            velocities=tuple(self.velocities),
            ee=tuple(v for arm in self.ee for v in arm),
        )

    # ---- motion and deadman ----------------------------------------------------------------------

    def tick(self, now: float) -> None:
        dt = 0.0 if self._last_tick is None else min(now - self._last_tick, 0.05)
        self._last_tick = now
        if self._session and not self.faults & c.Fault.HOST_TIMEOUT and now - self._last_rx > self.timeout_ms / 1000:
            self.faults |= c.Fault.HOST_TIMEOUT
            self._hold()
        if dt > 0:
            self._move(dt)

    def _move(self, dt: float) -> None:
        alpha = 1.0 - math.exp(-dt / self.config.tau_s)
        at_limit = False
        for i, (pos, goal, lim) in enumerate(zip(self.positions, self.joint_target, self.caps.joints)):
            step = _clamp((goal - pos) * alpha, self.config.joint_max_velocity * dt)
            new = min(max(pos + step, lim.lower), lim.upper)
            self.velocities[i] = (new - pos) / dt
            self.positions[i] = new
            at_limit |= new in (lim.lower, lim.upper)
        for arm, pose in zip(self.ee, self.ee_target):
            delta = [(g - p) * alpha for p, g in zip(arm[:3], pose[:3])]
            norm = math.sqrt(sum(d * d for d in delta))
            scale = min(1.0, self.config.ee_max_speed * dt / norm) if norm > 0 else 1.0
            arm[:3] = [p + d * scale for p, d in zip(arm[:3], delta)]
            arm[3:7] = _nlerp(arm[3:7], pose[3:7], alpha)
            arm[7] += (pose[7] - arm[7]) * alpha
        self.faults = (self.faults | c.Fault.AT_LIMIT) if at_limit else (self.faults & ~c.Fault.AT_LIMIT)

    # ---- control commands from the test ----------------------------------------------------------

    def control(self, command: str, args: dict[str, Any]) -> Any:
        handler = getattr(self, f"_ctl_{command}", None)
        if handler is None:
            raise ValueError(f"unknown emulator command {command!r}")
        return handler(**args)

    def _ctl_snapshot(self) -> dict[str, Any]:
        return {
            "mode": self.mode.name,
            "faults": int(self.faults),
            "boot_id": self.boot_id,
            "timeout_ms": self.timeout_ms,
            "positions": list(self.positions),
            "joint_target": list(self.joint_target),
            "ee": [list(arm) for arm in self.ee],
            "ee_target": [list(arm) for arm in self.ee_target],
            "accepted": self.accepted,
            "accepted_seqs": list(self.accepted_seqs),
            "nacked": self.nacked,
            "nacks": list(self.nacks),
            "seq_gaps": self.seq_gaps,
            "last_target": list(self.last_target),
            "corrupt_frames": self._parser.corrupt,
            "estop_times": list(self.estop_times),
        }

    def _ctl_drop_rx(self, n: int = 1) -> None:
        self._drop_rx = n

    def _ctl_drop_tx(self, n: int = 1) -> None:
        self._drop_tx = n

    def _ctl_corrupt_tx(self, n: int = 1) -> None:
        self._corrupt_tx = n

    def _ctl_garbage(self, data: bytes | str) -> None:
        """Send ``data`` (bytes, or a hex string from the command line) unsolicited."""
        self.outbox.append((0.0, bytes.fromhex(data) if isinstance(data, str) else bytes(data)))

    def _ctl_silence(self, on: bool = True) -> None:
        self._silent = on

    def _ctl_latency(self, ms: float = 0.0) -> None:
        """A slow controller: replies leave ``ms`` after their request arrived (still in order)."""
        self._latency_s = ms / 1000

    def _ctl_ee(self) -> list[list[float]]:
        """The measured EE pose of every arm: ``x y z qx qy qz qw gripper`` (lighter than ``snapshot``)."""
        return [list(arm) for arm in self.ee]

    def _ctl_place(self, ee: list[list[float]]) -> None:
        """Put every arm at a pose (``x y z qx qy qz qw gripper`` each) and hold it there: a scene reset
        between simulated episodes, as if the arm had been moved there by hand."""
        if len(ee) != self.config.n_arms or any(len(arm) != 8 for arm in ee):
            raise ValueError(f"place: expected {self.config.n_arms} poses of 8 values, got {ee!r}")
        values = [[float(v) for v in arm] for arm in ee]
        if not all(math.isfinite(v) for arm in values for v in arm):
            raise ValueError(f"place: non-finite pose {ee!r}")
        if any(sum(v * v for v in arm[3:7]) < 0.5 for arm in values):
            raise ValueError(f"place: quaternion far from unit norm in {ee!r}")
        self.ee = [_normalised(arm[:7] + [min(max(arm[7], 0.0), 1.0)]) for arm in values]
        self._hold()

    def _ctl_reboot(self) -> None:
        self._boot(time.monotonic())

    def _ctl_press_estop(self, held: bool = False) -> None:
        """The controller's own e-stop input: latch and hold, as an ESTOP frame would; ``held``: the button
        stays pressed (the host cannot release the e-stop until :meth:`_ctl_release_estop`)."""
        self.faults |= c.Fault.ESTOP
        self._estop_held = bool(held)
        self._hold()

    def _ctl_release_estop(self) -> None:
        """The e-stop button is let go: the latch stays until the host releases it."""
        self._estop_held = False

    def _ctl_set_fault(self, flags: int) -> None:
        bits = c.Fault(flags) & c.HARDWARE_FAULTS
        self._conditions |= bits
        self.faults |= bits
        self._hold()

    def _ctl_clear_fault(self, flags: int) -> None:
        self._conditions &= ~c.Fault(flags)


_HOLDABLE = (c.ControllerMode.IDLE, c.ControllerMode.TRACKING, c.ControllerMode.HOLDING)


def _clamp(value: float, limit: float) -> float:
    return max(-limit, min(limit, value))


def _normalised(arm: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in arm[3:7]))
    return arm[:3] + [v / norm for v in arm[3:7]] + arm[7:]


def _nlerp(q0: list[float], q1: list[float], alpha: float) -> list[float]:
    if sum(a * b for a, b in zip(q0, q1)) < 0:
        q1 = [-v for v in q1]
    q = [a + (b - a) * alpha for a, b in zip(q0, q1)]
    norm = math.sqrt(sum(v * v for v in q)) or 1.0
    return [v / norm for v in q]


def start(config: ControllerConfig | None = None, *, seed: int | None = None) -> EmulatorProcess:
    """Start an emulated controller in a child process; ``.port`` is its pty path. Stop with ``.stop()``."""
    args = ["--config", json.dumps(dataclasses.asdict(config or ControllerConfig()))]
    proc = EmulatorProcess("drivers.xvla_serial.emulator", args + ([] if seed is None else ["--seed", str(seed)]))
    proc.start()
    return proc


def _config_from_json(text: str) -> ControllerConfig:
    fields = json.loads(text)
    for name in ("workspace_lower", "workspace_upper", "timeout_range_ms", "home_ee"):
        if name in fields:
            fields[name] = tuple(fields[name])
    if "target_modes" in fields:
        fields["target_modes"] = tuple(c.TargetMode(m) for m in fields["target_modes"])
    return ControllerConfig(**fields)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="{}", help='ControllerConfig fields as JSON, e.g. \'{"n_joints": 7}\'')
    parser.add_argument("--seed", type=int, default=None, help="seed for boot ids and fault injection")
    args = parser.parse_args(argv)
    run(ControllerEmulator(_config_from_json(args.config), seed=args.seed))


if __name__ == "__main__":
    main()
