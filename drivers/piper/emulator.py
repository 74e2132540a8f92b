"""An emulated AgileX Piper for tests and bring-up without the arm.

:class:`PiperModel` is the arm, on whatever clock it is stepped with: it takes the host's frames
(:mod:`.protocol`: mode ``0x151``, Cartesian ``0x152``-``0x154``, joints ``0x155``-``0x157``, gripper ``0x159``,
enable ``0x471``, and the vendor's e-stop / reset ``0x150``) and streams feedback at ``rate_hz`` (status, end
pose, joints, gripper and the motors' high-speed frames every period, the low-speed frames every
``low_speed_every``-th). Modelled: standby until ``0x151`` asks for CAN control; motors and gripper disabled
until enabled (``enable_delay_s``), tracking nothing while disabled; first-order tracking (``tau_s``) of the
last joint target in MOVE J and of the last end pose in MOVE P, capped at the speed percent of its top speeds;
joint targets clamped to the joint ranges (the status then says ``TARGET_EXCEEDS_LIMIT`` and the joint's
angle-limit bit is set while it sits at the limit); the vendor's e-stop (``EMERGENCY_STOP``, targets ignored)
and reset (motors disabled, standby). Not modelled: kinematics (the end pose and the joints are tracked side
by side, each in its own move mode), the teach modes, MIT mode, the parameter frames (``0x470``-``0x47E``).

Fault injection (:meth:`PiperModel.control`): ``silence`` (no feedback), ``press_estop`` / ``release_estop``
(the arm's own emergency-stop status), ``set_status`` (any arm status code, e.g. ``0x07`` collision),
``set_ctrl_mode`` (e.g. teaching: the arm leaves CAN command control),
``joint_limit`` and ``comm_error`` (status bits of joints), ``driver_fault`` (a motor's or the gripper's status
bits by name), ``error_frames`` and ``bus_off`` (CAN error frames; python-can's virtual bus only),
``clear_faults``; ``set_state`` places the arm; ``snapshot`` says what it did, with the times of the host's
target frames.

Two ways to run it:

- in this process on a python-can bus: :class:`VirtualBusEmulator` (python-can's ``virtual`` interface; in a
  thread at real time, or stepped with :meth:`VirtualBusEmulator.pump` on the caller's clock);
- in its own process behind a pty that speaks slcan, the serial-line CAN adapters' ASCII protocol
  (``python -m drivers.piper.emulator``, :func:`start`): the control-loop process opens it with python-can's
  ``slcan`` interface. python-can's virtual bus does not reach across processes.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import threading
import time
from typing import Any, Deque, Dict, List, Optional, Tuple

from drivers.emulation.pty_emulator import EmulatorProcess, run
from drivers.piper import protocol as p

#: The joint ranges (rad) the emulated arm clamps its targets to: the vendor SDK's table.
JOINT_RANGES = ((-2.6179, 2.6179), (0.0, 3.14), (-2.967, 0.0), (-1.745, 1.745), (-1.22, 1.22), (-2.09439, 2.09439))
_MOTION_IDS = frozenset((*p.CARTESIAN, *p.JOINT_CTRL))


@dataclasses.dataclass(frozen=True)
class PiperConfig:
    """How the emulated arm streams and moves. ``joints`` (rad), ``pose`` (X, Y, Z in m; RX, RY, RZ in rad) and
    ``gripper_mm`` are where it starts."""

    rate_hz: float = 200.0
    low_speed_every: int = 10
    tau_s: float = 0.02
    max_joint_speed: float = 3.0  # rad/s at 100 %
    max_linear_speed: float = 1.0  # m/s at 100 %
    max_angular_speed: float = 3.0  # rad/s at 100 %
    enable_delay_s: float = 0.01
    joints: Tuple[float, ...] = (0.0, 0.3, -0.3, 0.0, 0.2, 0.0)
    pose: Tuple[float, ...] = (0.2, 0.0, 0.25, 0.0, 1.4835, 0.0)
    gripper_mm: float = 10.0
    gripper_max_mm: float = 70.0


def _first_order(current: float, target: float, alpha: float, step: float) -> float:
    return current + max(-step, min(step, (target - current) * alpha))


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


class PiperModel:
    """The emulated arm (see the module docstring); not thread-safe (its runners lock around it)."""

    def __init__(self, config: PiperConfig, now: float) -> None:
        self.config = config
        self.joints = list(config.joints)
        self.velocities = [0.0] * p.N_JOINTS
        self.pose = list(config.pose)
        self.gripper_mm = config.gripper_mm
        self.joint_target = list(self.joints)
        self.pose_target = list(self.pose)
        self.gripper_target = self.gripper_mm
        self.ctrl_mode, self.move_mode, self.speed_percent = 0x00, p.MOVE_P, 100
        self.enabled = False
        self.enable_at: Optional[float] = None
        self.gripper_enabled = False
        self.estopped = False  # the vendor's e-stop (0x150) or the injected emergency-stop status
        self.status_override: Optional[int] = None
        self.limit_bits = self.comm_bits = 0
        self.driver_bits = [0] * (p.N_JOINTS + 1)  # injected status bits, motors 1-6 and the gripper (7)
        self.exceeds = [False] * p.N_JOINTS  # per joint: its last target was beyond its range
        self.velocity_override: Optional[List[float]] = None
        self.silent = False
        self.bus_off = False
        self.pending_errors: List[int] = []  # error-frame class bits to send (virtual bus only)
        self.received: collections.Counter = collections.Counter()
        self.refused = 0
        self.frames_sent = 0
        self.command_times: Deque[float] = collections.deque(maxlen=4096)  # host target frames (0x152-0x157)
        self._last = now
        self._next_feedback = now
        self._periods = 0

    # ---- the host's frames -------------------------------------------------------------------------

    def receive(self, frame_id: int, data: bytes, now: float, *, plain: bool = True) -> None:
        """A frame from the host; ``plain``: standard ID, data frame (others are counted and ignored)."""
        if self.bus_off:
            return
        self.received[f"{frame_id:#05x}"] += 1
        if not plain or len(data) != p.DLC:
            self.refused += 1
            return
        self._advance(now)
        if frame_id in _MOTION_IDS:
            self.command_times.append(now)
        if frame_id == p.MOTION_CTRL_1:
            self._motion_ctrl_1(data[0])
        elif frame_id == p.MOTION_CTRL_2:
            if data[0] in p.CTRL_MODES and data[1] in (p.MOVE_P, p.MOVE_J) and data[2] <= 100:
                self.ctrl_mode, self.move_mode, self.speed_percent = data[0], data[1], data[2]
        elif frame_id in p.CARTESIAN or frame_id in p.JOINT_CTRL:
            a, b = int.from_bytes(data[:4], "big", signed=True), int.from_bytes(data[4:], "big", signed=True)
            self._target(frame_id, a, b)
        elif frame_id == p.GRIPPER_CTRL:
            stroke = int.from_bytes(data[:4], "big", signed=True) / 1000.0
            self.gripper_enabled = data[6] in (0x01, 0x03)
            self.gripper_target = max(0.0, min(self.config.gripper_max_mm, stroke))
        elif frame_id == p.MOTOR_ENABLE and data[0] in (p.ALL_MOTORS, 0xFF) and not self.estopped:
            if data[1] == p.ENABLE and not self.enabled and self.enable_at is None:
                self.enable_at = now + self.config.enable_delay_s
            elif data[1] == p.DISABLE:
                self.enabled, self.enable_at = False, None

    def _motion_ctrl_1(self, code: int) -> None:
        if code == 0x01:  # the vendor's emergency stop: the arm sinks slowly; targets are ignored
            self.estopped = True
        elif code == 0x02:  # reset: the motors lose power, back to standby
            self.estopped, self.enabled, self.enable_at, self.ctrl_mode = False, False, None, 0x00

    def _target(self, frame_id: int, a: int, b: int) -> None:
        if frame_id in p.JOINT_CTRL:
            index = p.JOINT_CTRL.index(frame_id)
            for j, value in ((2 * index, a), (2 * index + 1, b)):
                lo, hi = JOINT_RANGES[j]
                wanted = p.radians(value)
                self.joint_target[j] = min(hi, max(lo, wanted))
                self.exceeds[j] = not lo <= wanted <= hi
        else:
            index = p.CARTESIAN.index(frame_id)
            units = ((p.metres, p.metres), (p.metres, p.radians), (p.radians, p.radians))[index]
            self.pose_target[2 * index], self.pose_target[2 * index + 1] = units[0](a), units[1](b)

    # ---- time --------------------------------------------------------------------------------------

    def _tracking(self) -> bool:
        return self.enabled and not self.estopped and self.ctrl_mode == p.CTRL_CAN

    def _advance(self, now: float) -> None:
        dt = now - self._last
        if dt <= 0:
            return
        self._last = now
        if self.enable_at is not None and now >= self.enable_at:
            self.enabled, self.enable_at = True, None
        c = self.config
        alpha = 1.0 - math.exp(-dt / c.tau_s)
        scale = self.speed_percent / 100.0
        before = list(self.joints)
        if self._tracking() and self.move_mode == p.MOVE_J:
            step = c.max_joint_speed * scale * dt
            self.joints = [_first_order(q, t, alpha, step) for q, t in zip(self.joints, self.joint_target)]
        elif self._tracking():
            step = c.max_linear_speed * scale * dt
            self.pose[:3] = [_first_order(x, t, alpha, step) for x, t in zip(self.pose[:3], self.pose_target[:3])]
            step = c.max_angular_speed * scale * dt
            self.pose[3:] = [_wrap(a + _first_order(0.0, _wrap(t - a), alpha, step))
                             for a, t in zip(self.pose[3:], self.pose_target[3:])]
        if self.enabled and self.gripper_enabled and not self.estopped:
            self.gripper_mm = _first_order(self.gripper_mm, self.gripper_target, alpha, 100.0 * dt)
        self.velocities = [(q - b) / dt for q, b in zip(self.joints, before)]

    def step(self, now: float) -> List[p.Frame]:
        """Move to ``now``; the feedback frames due (one period's worth, however late the call)."""
        self._advance(now)
        if now < self._next_feedback:
            return []
        period = 1.0 / self.config.rate_hz
        self._next_feedback += period
        if self._next_feedback <= now:  # late by more than a period: the next batch one period from now
            self._next_feedback = now + period
        self._periods += 1
        if self.silent or self.bus_off:
            return []
        frames = self._feedback(low_speed=self._periods % self.config.low_speed_every == 0)
        self.frames_sent += len(frames)
        return frames

    # ---- feedback ----------------------------------------------------------------------------------

    def status(self) -> p.Status:
        at_limit = 0
        for j, (lo, hi) in enumerate(JOINT_RANGES):
            if self.joint_target[j] in (lo, hi) and abs(self.joints[j] - self.joint_target[j]) < 1e-3:
                at_limit |= 1 << j
        moving = any(abs(t - q) > 1e-3 for t, q in zip(self.joint_target, self.joints))
        exceeds = any(self.exceeds)
        arm_status = 0x01 if self.estopped else 0x04 if exceeds else 0x00
        if self.status_override is not None:
            arm_status = self.status_override
        return p.Status(self.ctrl_mode, arm_status, self.move_mode, 0, int(moving), 0,
                        self.limit_bits | (at_limit if exceeds else 0), self.comm_bits)

    def _feedback(self, *, low_speed: bool) -> List[p.Frame]:
        pose = [p.micrometres(v) for v in self.pose[:3]] + [p.millidegrees(a) for a in self.pose[3:]]
        joints = [p.millidegrees(q) for q in self.joints]
        frames = [p.status_frame(self.status())]
        frames += [p.pair(p.END_POSE[i], pose[2 * i], pose[2 * i + 1], "pose") for i in range(3)]
        frames += [p.pair(p.JOINTS[i], joints[2 * i], joints[2 * i + 1], "joint") for i in range(3)]
        grip_status = (p.ENABLED_BIT if self.gripper_enabled and self.enabled else 0) | 0x80 | self.driver_bits[6]
        frames.append(p.gripper_feedback(p.Gripper(round(self.gripper_mm * 1000), 0, grip_status)))
        velocities = self.velocities if self.velocity_override is None else self.velocity_override
        for m in range(p.N_JOINTS):
            speed = max(-20_000, min(20_000, round(velocities[m] * 1000)))
            frames.append(p.high_speed_frame(p.HighSpeed(m + 1, speed, 0, round(self.joints[m] * 1000))))
        if low_speed:
            enabled = p.ENABLED_BIT if self.enabled else 0
            frames += [p.low_speed_frame(p.LowSpeed(m + 1, 240, 30, 30, enabled | self.driver_bits[m], 0))
                       for m in range(p.N_JOINTS)]
        return frames

    # ---- control commands --------------------------------------------------------------------------

    def control(self, command: str, args: Dict[str, Any]) -> Any:
        handler = getattr(self, f"_ctl_{command}", None)
        if handler is None:
            raise ValueError(f"unknown command {command!r}")
        return handler(**args)

    def _ctl_snapshot(self) -> Dict[str, Any]:
        return {"joints": list(self.joints), "joint_target": list(self.joint_target), "pose": list(self.pose),
                "pose_target": list(self.pose_target), "gripper_mm": self.gripper_mm,
                "gripper_target_mm": self.gripper_target, "enabled": self.enabled,
                "gripper_enabled": self.gripper_enabled, "ctrl_mode": p.CTRL_MODES[self.ctrl_mode],
                "move_mode": p.MOVE_MODES[self.move_mode], "speed_percent": self.speed_percent,
                "arm_status": p.ARM_STATUSES.get(self.status().arm_status, "UNKNOWN"), "received": dict(self.received),
                "refused": self.refused, "frames_sent": self.frames_sent, "command_times": list(self.command_times),
                "silent": self.silent, "bus_off": self.bus_off}

    def _ctl_silence(self) -> None:
        self.silent = True

    def _ctl_speak(self) -> None:
        self.silent = False

    def _ctl_press_estop(self) -> None:
        self.status_override = 0x01

    def _ctl_release_estop(self) -> None:
        self.status_override = None

    def _ctl_set_status(self, arm_status: Optional[int]) -> None:
        if arm_status is not None and arm_status not in p.ARM_STATUSES:
            raise ValueError(f"set_status: {arm_status} is not an arm status code")
        self.status_override = arm_status

    def _ctl_set_ctrl_mode(self, ctrl_mode: int) -> None:
        """Leave (or take) CAN command control as the arm's own buttons do (e.g. ``0x02`` teaching)."""
        if ctrl_mode not in p.CTRL_MODES:
            raise ValueError(f"set_ctrl_mode: {ctrl_mode} is not a control mode code")
        self.ctrl_mode = ctrl_mode

    def _ctl_joint_limit(self, joints: List[int]) -> None:
        self.limit_bits = sum(1 << (j - 1) for j in joints)

    def _ctl_comm_error(self, joints: List[int]) -> None:
        self.comm_bits = sum(1 << (j - 1) for j in joints)

    def _ctl_driver_fault(self, motor: int, bits: List[str]) -> None:
        names = p.GRIPPER_STATUS_BITS if motor == 7 else p.DRIVER_STATUS_BITS
        by_name = {name: bit for bit, name in names.items()}
        self.driver_bits[motor - 1] = sum(1 << by_name[name] for name in bits)

    def _ctl_clear_faults(self) -> None:
        self.status_override, self.limit_bits, self.comm_bits = None, 0, 0
        self.driver_bits = [0] * (p.N_JOINTS + 1)

    def _ctl_error_frames(self, classes: List[int]) -> None:
        self.pending_errors += list(classes)

    def _ctl_bus_off(self) -> None:
        self.pending_errors.append(0x040)
        self.bus_off = True

    def _ctl_recover(self) -> None:
        self.bus_off = False

    def _ctl_set_state(self, joints: Optional[List[float]] = None, pose: Optional[List[float]] = None,
                       gripper_mm: Optional[float] = None, velocities: Optional[List[float]] = None) -> None:
        """Place the arm (rad; m and rad; mm) and make that its target; ``velocities`` (rad/s): report these
        instead of the measured ones, until the next ``set_state``."""
        if joints is not None:
            self.joints, self.joint_target = list(joints), list(joints)
        if pose is not None:
            self.pose, self.pose_target = list(pose), list(pose)
        if gripper_mm is not None:
            self.gripper_mm = self.gripper_target = gripper_mm
        self.velocity_override = None if velocities is None else list(velocities)
        self.exceeds = [False] * p.N_JOINTS


class VirtualBusEmulator:
    """The emulated arm on a python-can bus of this process (``interface="virtual"``, ``channel``).

    Either :meth:`start` a thread that runs it at real time, or call :meth:`pump` with the caller's clock.
    A context manager (starts the thread). :meth:`call` runs a control command.
    """

    def __init__(self, channel: str, config: Optional[PiperConfig] = None, *, now: Optional[float] = None,
                 interface: str = "virtual") -> None:
        import can

        self._can = can
        self.bus = can.Bus(interface=interface, channel=channel)
        self.model = PiperModel(config or PiperConfig(), time.monotonic() if now is None else now)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def pump(self, now: Optional[float] = None) -> int:
        """Take the host's frames, step to ``now`` (default: the monotonic clock), send what is due; how many
        frames were sent."""
        now = time.monotonic() if now is None else now
        with self._lock:
            while True:
                msg = self.bus.recv(timeout=0.0)
                if msg is None:
                    break
                plain = not (msg.is_error_frame or msg.is_remote_frame or msg.is_extended_id)
                self.model.receive(msg.arbitration_id, bytes(msg.data), now, plain=plain)
            frames = self.model.step(now)
            errors, self.model.pending_errors = self.model.pending_errors, []
        for bits in errors:
            self.bus.send(self._can.Message(arbitration_id=bits, is_error_frame=True, dlc=8, data=bytes(8),
                                            is_extended_id=False))
        for frame_id, data in frames:
            self.bus.send(self._can.Message(arbitration_id=frame_id, data=data, is_extended_id=False))
        return len(frames) + len(errors)

    def call(self, command: str, **args: Any) -> Any:
        with self._lock:
            return self.model.control(command, args)

    def start(self) -> "VirtualBusEmulator":
        self._thread = threading.Thread(target=self._run, name="piper-emulator", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.pump()
            time.sleep(0.0005)

    def stop(self) -> None:
        """Stop the thread (the bus stays open: :meth:`pump` may take over)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None

    def close(self) -> None:
        self.stop()
        self.bus.shutdown()

    def __enter__(self) -> "VirtualBusEmulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class SlcanDevice:
    """The emulated arm behind a serial-line CAN adapter (slcan): a :class:`~drivers.emulation.pty_emulator.Device`.

    Takes ``C``/``O``/``L``/``S0``-``S8`` (answered with CR) and ``tIIIL<data>`` frames; sends feedback as
    ``tIIIL<data>`` lines; answers anything else with BEL. Error frames have no slcan form: ``error_frames``
    is refused, ``bus_off`` only silences the arm.
    """

    def __init__(self, model: PiperModel) -> None:
        self.model = model
        self.outbox: List[Tuple[float, bytes]] = []
        self._buffer = b""
        self.garbage = 0

    def feed(self, data: bytes, now: float) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\r")
        for line in lines:
            self._line(line, now)

    def _line(self, line: bytes, now: float) -> None:
        if line in (b"", b"C", b"O", b"L") or (len(line) == 2 and line[:1] == b"S" and line[1:] in b"012345678"):
            self.outbox.append((now, b"\r"))  # an empty line: python-can's "no data bitrate"
            return
        try:
            if line[:1] != b"t" or len(line) < 5:
                raise ValueError(line)
            frame_id, length = int(line[1:4], 16), int(line[4:5])
            data = bytes.fromhex(line[5:].decode())
            if len(data) != length:
                raise ValueError(line)
        except (ValueError, UnicodeDecodeError):
            self.garbage += 1
            self.outbox.append((now, b"\a"))
            return
        self.model.receive(frame_id, data, now)

    def tick(self, now: float) -> None:
        frames = self.model.step(now)
        self.model.pending_errors.clear()
        if frames:
            text = "".join(f"t{frame_id:03X}{len(data)}{data.hex().upper()}\r" for frame_id, data in frames)
            self.outbox.append((now, text.encode()))

    def control(self, command: str, args: Dict[str, Any]) -> Any:
        if command == "error_frames":
            raise ValueError("error frames have no slcan form; use the virtual bus (VirtualBusEmulator)")
        if command == "snapshot":
            return {**self.model.control(command, args), "garbage": self.garbage}
        return self.model.control(command, args)


def start(config: Optional[PiperConfig] = None) -> EmulatorProcess:
    """Start the emulated arm in a child process behind a pty speaking slcan; ``.port`` is the pty path, for
    ``PiperArm(port, interface="slcan")``. Stop with ``.stop()``."""
    fields = dataclasses.asdict(config or PiperConfig())
    proc = EmulatorProcess("drivers.piper.emulator", ["--config", json.dumps(fields)])
    proc.start()
    return proc


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="{}", help='PiperConfig fields as JSON, e.g. \'{"rate_hz": 100}\'')
    args = parser.parse_args(argv)
    fields = json.loads(args.config)
    for name in ("joints", "pose"):
        if name in fields:
            fields[name] = tuple(fields[name])
    run(SlcanDevice(PiperModel(PiperConfig(**fields), time.monotonic())))


if __name__ == "__main__":
    main()
