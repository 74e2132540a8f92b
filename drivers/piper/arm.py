"""An :class:`~drivers.arm.Arm` for the AgileX Piper on a python-can bus, in end-effector or joint space.

The control tick never waits on the bus. The arm streams its feedback (status, end pose, joints, gripper, the
motors' high- and low-speed frames) at about 200 Hz whether asked or not, so :meth:`PiperArm.poll_state` only
takes what python-can has already received (``recv(timeout=0)``, at most ``max_frames_per_poll`` frames a tick)
and returns the newest state; :meth:`PiperArm.send_target` writes its five frames without waiting (the
transmit queue full: the target is skipped and counted). Frames are checked before use
(:mod:`.protocol`): a wrong length, an unknown code or an implausible value, a remote, FD or extended frame,
an ID this driver does not read are counted and dropped, never half-used.

**Link loss** is the age of the feedback: when one of the streamed frames (status, the three end-pose and
three joint frames, the gripper's) has not arrived for ``timeout_ms`` (100 ms, 20 of the arm's periods), or an
error frame says bus-off, or transmitting has failed for that long, ``poll_state`` raises ``ArmLinkError``;
the control loop stops streaming and the arm holds its last target (the Piper keeps tracking the last target
it received; it has no deadman). Other CAN error frames are counted by kind.

**Stopping** holds position with power on: :meth:`hold` commands the measured pose (joints in joint space,
end pose in end-effector space) once; the arm keeps it. An arm that has left CAN command control (its teach
button) is not taken back by a hold: only :meth:`connect` takes command. :meth:`estop` latches in this driver and holds:
targets are refused until :meth:`clear_estop`. The vendor's own emergency stop (``0x150``) lets the arm sink
and needs a power-cycling reset, so it is never sent (:mod:`.protocol`). Nothing here disables the motors.

**Faults** by name: the arm's status (``0x2A1``: emergency stop, collision, joint communication errors,
over-temperature, the joints' angle-limit bits, the control mode taken away by teaching) and every driver's
status bits (voltage, temperatures, over-current, collision and stall protection, a driver not enabled) map
onto :class:`~drivers.arm.FaultFlag` and are named in ``ArmState.mode``, in the :class:`~drivers.arm.ArmFault`
that refuses a target, and in :meth:`probe`.

:meth:`connect` waits (bounded) for the feedback, puts the arm in CAN command mode, commands where it is,
enables the motors and the gripper and waits until every motor reports itself enabled. :meth:`probe` only
listens: what is on the bus, the joints, the pose, the gripper, every status bit by name; it sends nothing.

Our own driver, not the vendor's SDK at runtime: the SDK (``piper_sdk``) reads the bus in two threads of its
own and hands out the newest values under locks with no age on the whole state, prints and logs on the
control path, opens its bus with socketcan's settings and a judge step that shells out to ``ip``, keeps one
interface object per channel name for the whole process, and checks no frame's length or values (a short or
corrupted frame is decoded anyway). The tick needs one non-blocking read with an age, refusal of bad frames,
and faults by name; so the protocol facts come from the SDK and the SDK is the tests' oracle
(``tests/drivers/piper/test_piper_sdk_oracle.py``), not a dependency of the robot.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import re
import time
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from drivers.arm import (
    Arm,
    ArmCapabilities,
    ArmConfigError,
    ArmFault,
    ArmLinkError,
    ArmState,
    FaultFlag,
    JointLimit,
    Space,
    SPACES,
    Target,
)
from drivers.piper import protocol as p
from drivers.quaternion import from_euler_xyz_row, to_euler_xyz_row

#: The Piper's joint ranges (rad) as the vendor's SDK lists them, and its default top joint speed (3 rad/s,
#: ``0x474``'s maximum).
JOINT_LIMITS: Tuple[JointLimit, ...] = tuple(JointLimit(lo, hi, 3.0) for lo, hi in (
    (-2.6179, 2.6179), (0.0, 3.14), (-2.967, 0.0), (-1.745, 1.745), (-1.22, 1.22), (-2.09439, 2.09439)))
#: The python-can interfaces a robot.toml may name: SocketCAN (USB-CAN adapters such as the one shipped with the
#: arm, brought up with ``ip link``) and serial-line adapters (slcan). Tests also use python-can's ``virtual``.
INTERFACES = ("socketcan", "slcan")
_BUS_OPTIONS: Dict[str, Dict[str, Any]] = {"slcan": {"timeout": 0.0}}  # reads return at once (no 1 ms wait)
MAX_REACH_M = 1.0  # an end-effector target beyond this on any axis is not for this arm (reach about 0.63 m)
LINK_TIMEOUT_MS = (20, 1000)
GRIPPER_OPEN_MM = (1.0, 150.0)
GRIPPER_EFFORT_NM = (0.1, 5.0)
PROBE_SECONDS = 0.5
EMPTY_READS = 8  # on slcan, a poll ends after this many reads in a row without a message (PiperArm._drain)
_AT_LIMIT_RAD = 0.01
_SOCKETCAN_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,15}")  # a Linux interface name (IFNAMSIZ - 1)

# Arm status (0x2A1 byte 1) → fault flag; names not listed are normal or informational.
_STATUS_FLAGS = {
    0x01: FaultFlag.ESTOP,
    0x02: FaultFlag.AT_LIMIT, 0x03: FaultFlag.AT_LIMIT, 0x04: FaultFlag.AT_LIMIT,  # no solution, singular, limit
    0x05: FaultFlag.ENCODER, 0x06: FaultFlag.ENCODER, 0x09: FaultFlag.ENCODER, 0x0A: FaultFlag.ENCODER,
    0x07: FaultFlag.OVER_CURRENT,  # collision protection
    0x08: FaultFlag.OVER_CURRENT,
    0x0B: FaultFlag.HOST_TIMEOUT, 0x0C: FaultFlag.HOST_TIMEOUT, 0x0D: FaultFlag.HOST_TIMEOUT,  # teaching
    0x0E: FaultFlag.OVER_TEMPERATURE, 0x0F: FaultFlag.OVER_TEMPERATURE,
}
# Driver status bits (low-speed byte 5 / gripper byte 6) → fault flag.
_DRIVER_FLAGS = {0: FaultFlag.SUPPLY_VOLTAGE, 1: FaultFlag.OVER_TEMPERATURE, 2: FaultFlag.OVER_CURRENT,
                 3: FaultFlag.OVER_TEMPERATURE, 4: FaultFlag.OVER_CURRENT, 5: FaultFlag.ENCODER,
                 7: FaultFlag.OVER_CURRENT}
_GRIPPER_FLAGS = {**{k: v for k, v in _DRIVER_FLAGS.items() if k != 7}, 4: FaultFlag.ENCODER}
# SocketCAN error frame classes (the arbitration ID of an error frame, linux/can/error.h).
_ERROR_CLASSES = {0x001: "tx_timeout", 0x002: "lost_arbitration", 0x004: "controller", 0x008: "protocol",
                  0x010: "transceiver", 0x020: "no_ack", 0x040: "bus_off", 0x080: "bus_error", 0x100: "restarted"}
BUS_OFF = 0x040


class _Feedback:
    """The newest value of each feedback frame and when it arrived (the driver's clock)."""

    def __init__(self) -> None:
        self.seen: Dict[int, float] = {}
        self.frames: Counter = Counter()
        self.status: Optional[p.Status] = None
        self.pose = [0] * 6  # X, Y, Z (0.001 mm), RX, RY, RZ (0.001 degree)
        self.joints = [0] * p.N_JOINTS  # 0.001 degree
        self.gripper: Optional[p.Gripper] = None
        self.speeds = [0] * p.N_JOINTS  # 0.001 rad/s
        self.drivers: Dict[int, p.LowSpeed] = {}

    def take(self, fb: p.Feedback, frame_id: int, now: float) -> None:
        if isinstance(fb, p.Status):
            self.status = fb
        elif isinstance(fb, p.Pair):
            values = self.pose if frame_id in p.END_POSE else self.joints
            values[2 * fb.index], values[2 * fb.index + 1] = fb.a, fb.b
        elif isinstance(fb, p.Gripper):
            self.gripper = fb
        elif isinstance(fb, p.HighSpeed):
            self.speeds[fb.motor - 1] = fb.speed
        else:
            self.drivers[fb.motor] = fb
        self.seen[frame_id] = now
        self.frames[frame_id] += 1

    def missing(self) -> List[int]:
        return [i for i in p.STREAMED if i not in self.seen]

    def oldest(self) -> Tuple[int, float]:
        """The streamed frame heard from longest ago, and when (all must have been seen)."""
        frame_id = min(p.STREAMED, key=lambda i: self.seen[i])
        return frame_id, self.seen[frame_id]


class PiperArm(Arm):
    """One Piper on a python-can bus.

    ``channel``: the CAN interface (``can0``) or, with ``interface="slcan"``, the adapter's serial device.
    ``interface``: a python-can interface (:data:`INTERFACES`, or ``virtual`` in tests). ``space``: ``"ee"``
    streams end poses (MOVE P), ``"joint"`` joint targets (MOVE J). ``timeout_ms``: the feedback age that is a
    lost link (:data:`LINK_TIMEOUT_MS`). ``speed_percent`` (1-100): the arm's own speed scale in its motion
    modes (the safety envelope limits what is commanded). ``gripper_open_mm``: the stroke the bundle's fully
    open gripper (1.0) maps to, 0.0 being closed (0 mm); ``gripper_effort``: N·m. ``connect_timeout_s`` bounds
    :meth:`connect`'s waits; ``max_frames_per_poll`` the frames one tick takes. ``clock`` stamps states.
    """

    def __init__(
        self,
        channel: str = "can0",
        *,
        space: Space = "ee",
        interface: str = "socketcan",
        timeout_ms: int = 100,
        speed_percent: int = 100,
        gripper_open_mm: float = 70.0,
        gripper_effort: float = 1.0,
        connect_timeout_s: float = 2.0,
        max_frames_per_poll: int = 512,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if space not in SPACES:
            raise ArmConfigError(f"PiperArm.space: expected one of {SPACES}, got {space!r}")
        if not isinstance(channel, str) or not channel or not channel.isprintable():
            raise ArmConfigError(f"PiperArm.channel: expected a CAN interface name or a device path, got {channel!r}")
        if interface == "socketcan" and not _SOCKETCAN_NAME.fullmatch(channel):
            raise ArmConfigError(f"PiperArm.channel: {channel!r} is not a network interface name (at most 15 of "
                                 "letters, digits, '_', '.', ':', '-'), such as \"can0\"")
        lo, hi = LINK_TIMEOUT_MS
        if not lo <= timeout_ms <= hi:
            raise ArmConfigError(f"PiperArm.timeout_ms: expected {lo}..{hi} ms, got {timeout_ms!r}")
        if not 1 <= speed_percent <= 100:
            raise ArmConfigError(f"PiperArm.speed_percent: expected 1..100, got {speed_percent!r}")
        if not GRIPPER_OPEN_MM[0] <= gripper_open_mm <= GRIPPER_OPEN_MM[1]:
            raise ArmConfigError(f"PiperArm.gripper_open_mm: expected {GRIPPER_OPEN_MM[0]:g}..{GRIPPER_OPEN_MM[1]:g} "
                                 f"mm, got {gripper_open_mm!r}")
        if not GRIPPER_EFFORT_NM[0] <= gripper_effort <= GRIPPER_EFFORT_NM[1]:
            lo, hi = GRIPPER_EFFORT_NM
            raise ArmConfigError(f"PiperArm.gripper_effort: expected {lo:g}..{hi:g} N·m, got {gripper_effort!r}")
        if importlib.util.find_spec("can") is None:
            raise ArmConfigError("PiperArm.interface: python-can is not installed; install the 'piper' extra: "
                                 "pip install 'xvla-edge[piper]'")
        self.channel, self.interface, self.space = channel, interface, space
        self.link_timeout_s = timeout_ms / 1000.0
        self.speed_percent = int(speed_percent)
        self.gripper_open_um = gripper_open_mm * 1000.0
        self.gripper_effort = round(gripper_effort * 1000)
        self.connect_timeout_s = connect_timeout_s
        self.max_frames_per_poll = max_frames_per_poll
        self._empty_reads = EMPTY_READS if interface == "slcan" else 1  # elsewhere no message means none waiting
        self._clock = clock
        self._bus: Any = None
        self._fb = _Feedback()
        self._caps: Optional[ArmCapabilities] = None
        self._estopped = False
        self._bus_off = False
        self._send_failing_since: Optional[float] = None
        self._send_error = ""
        self._rejected = ""  # why the last refused frame was refused
        self._errors: Counter = Counter()  # error frames by class
        self._counters: Counter = Counter()

    # ---- Arm interface ---------------------------------------------------------------------------

    @property
    def capabilities(self) -> ArmCapabilities:
        if self._caps is None:
            raise self._not_connected()
        return self._caps

    def connect(self) -> ArmCapabilities:
        """Wait for feedback (three link timeouts at most), take command (CAN mode), command where the arm is,
        enable every motor and the gripper, and wait until the motors report enabled (``connect_timeout_s``)."""
        if self._bus is None:
            self._bus = self._open()
        self._caps = None
        self._fb, self._bus_off, self._send_failing_since = _Feedback(), False, None
        self._wait("feedback from the arm (status, end pose, joints, gripper)", lambda: not self._fb.missing(),
                   timeout_s=min(self.connect_timeout_s, 3 * self.link_timeout_s))  # short: the loop retries
        self._raise_if_faulted("connect", ignore=FaultFlag.HOST_TIMEOUT)  # not yet in CAN mode: that is next
        deadline = self._clock() + self.connect_timeout_s
        while True:  # the vendor's tools repeat the enable until every motor reports it
            self._send(self._hold_frames() + [p.enable(True)])
            if self._wait_until(lambda: self._enabled() and self._in_can_mode(), self._clock() + 0.05):
                break
            if self._clock() > deadline:
                raise ArmLinkError(f"{self._name()}: the motors did not report enabled within "
                                   f"{self.connect_timeout_s:g} s ({self._describe()})")
        self._caps = ArmCapabilities(space=self.space, n_arms=1, joint_limits=JOINT_LIMITS, max_rate_hz=200.0)
        return self._caps

    def read_state(self) -> ArmState:
        """A state from feedback that arrived after this call (waits at most the link timeout)."""
        self._connected()
        start = self._clock()
        self._wait("fresh feedback", lambda: all(self._fb.seen.get(i, -math.inf) >= start for i in p.STREAMED),
                   timeout_s=self.link_timeout_s)
        return self._state()

    def poll_state(self) -> ArmState:
        """The newest state, without waiting (see the module docstring)."""
        self._connected()
        self._drain()
        self._check_link()
        return self._state()

    def counters(self) -> Dict[str, int]:
        out = dict(self._counters)
        out.update({f"error_frames_{kind}": n for kind, n in self._errors.items()})
        return out

    def send_target(self, target: Target) -> None:
        self._connected()
        if target.space != self.space:
            raise ArmConfigError(f"{self._name()} streams {self.space!r} targets, got a {target.space!r} target")
        if target.n_arms != 1 or (self.space == "joint" and target.joints.shape != (p.N_JOINTS,)):
            raise ArmConfigError(f"{self._name()}: expected 1 arm and {p.N_JOINTS} joints, got {target.n_arms} "
                                 f"gripper value(s)" + ("" if self.space == "ee" else f", {target.joints.size} joints"))
        if self._estopped:
            raise ArmFault(f"{self._name()}: e-stop latch is set; call clear_estop() first", flags=FaultFlag.ESTOP,
                           reason="estopped")
        self._raise_if_faulted("send target")
        self._send(self._target_frames(target), skip_when_full=True)

    def hold(self) -> None:
        """Command the measured pose, unless the arm has left CAN command control (teaching, another controller):
        then it is in other hands and nothing is sent; only :meth:`connect` takes command again."""
        self._connected()
        self._check_link()
        if self._in_can_mode():
            self._send(self._hold_frames())

    def estop(self) -> None:
        self._estopped = True
        self.hold()

    def clear_estop(self) -> None:
        self._estopped = False

    def close(self) -> None:
        """Hold (best effort), then shut the bus down. The motors stay enabled."""
        if self._bus is None:
            return
        with contextlib.suppress(ArmLinkError, ArmFault, ArmConfigError):
            if self._caps is not None:
                self.hold()
        bus, self._bus, self._caps = self._bus, None, None
        with contextlib.suppress(Exception):  # whatever the interface raises on the way out
            bus.shutdown()

    # ---- the read-only probe -------------------------------------------------------------------------

    def probe(self) -> Dict[str, object]:
        """Listen for :data:`PROBE_SECONDS` and say what is on the bus; sends nothing, moves nothing, enables
        nothing. JSON-able: frames seen per ID and the feedback rate, joints (degrees), end pose (m, degrees),
        gripper, the arm's status and every driver's status bits by name, error frames, refused frames, frames
        of another host commanding the arm, and which streamed frames never came."""
        opened = self._bus is None
        if opened:
            self._bus = self._open()
        before, self._fb = self._fb, _Feedback()
        try:
            start = self._clock()
            self._wait_until(lambda: False, start + PROBE_SECONDS)
            report = self._report(self._clock() - start)
        finally:
            self._fb = before  # what a connected arm knew stays as it was
            if opened:
                bus, self._bus = self._bus, None
                with contextlib.suppress(Exception):
                    bus.shutdown()
        return report

    def _report(self, seconds: float) -> Dict[str, object]:
        fb, status = self._fb, self._fb.status
        report: Dict[str, object] = {
            "interface": self.interface, "channel": self.channel, "seconds": round(seconds, 3),
            "frames_seen": {f"{i:#05x}": n for i, n in sorted(fb.frames.items())},
            "feedback_rate_hz": round(fb.frames[p.JOINTS[0]] / seconds, 1) if seconds > 0 else 0.0,
            "missing": [f"{i:#05x}" for i in fb.missing()],
            "error_frames": dict(self._errors), "bus_off": self._bus_off,
            "frames_refused": self._counters["frames_refused"], "last_refused": self._rejected,
            "foreign_commands": self._counters["foreign_commands"],
        }
        if p.JOINTS[0] in fb.seen:
            report["joint_positions_deg"] = [v / 1000 for v in fb.joints]
            report["joint_velocities_rad_s"] = [v / 1000 for v in fb.speeds]
        if p.END_POSE[0] in fb.seen:
            report["end_pose"] = {"position_m": [p.metres(v) for v in fb.pose[:3]],
                                  "euler_xyz_deg": [v / 1000 for v in fb.pose[3:]]}
        if fb.gripper is not None:
            report["gripper"] = {"stroke_mm": fb.gripper.stroke_um / 1000, "effort_nm": fb.gripper.effort / 1000,
                                 "status": list(p.bits(fb.gripper.status, p.GRIPPER_STATUS_BITS))}
        if status is not None:
            report["status"] = {
                "ctrl_mode": p.CTRL_MODES[status.ctrl_mode], "arm_status": p.ARM_STATUSES[status.arm_status],
                "move_mode": p.MOVE_MODES[status.move_mode], "teach_status": p.TEACH_STATUSES[status.teach_status],
                "motion_status": p.MOTION_STATUSES[status.motion_status],
                "joints_at_angle_limit": [j + 1 for j in range(p.N_JOINTS) if status.limit_bits >> j & 1],
                "joints_not_communicating": [j + 1 for j in range(p.N_JOINTS) if status.comm_bits >> j & 1]}
        report["drivers"] = [{"joint": m, "status": list(p.bits(d.status, p.DRIVER_STATUS_BITS)),
                              "voltage_v": d.voltage / 10, "driver_temp_c": d.driver_temp,
                              "motor_temp_c": d.motor_temp} for m, d in sorted(fb.drivers.items())]
        report["faults"] = self._fault_names()
        report["link"], report["problems"] = bool(fb.seen), self._problems(report)
        return report

    @staticmethod
    def _problems(report: Dict[str, Any]) -> List[str]:
        """What in ``report`` would stop :meth:`connect` or make a technician look twice, one sentence each (the
        ``problems`` of :meth:`drivers.arm.Arm.probe`)."""
        problems = []
        if not report["frames_seen"]:
            problems.append(f"no frame from the arm in {report['seconds']} s: is it powered, and the bus at 1 Mbit/s?")
        elif report["missing"]:
            problems.append(f"feedback frames never came: {', '.join(report['missing'])}")
        if report["bus_off"]:
            problems.append("the CAN controller went bus-off (wiring, termination or bit rate)")
        if report["foreign_commands"]:
            problems.append(f"{report['foreign_commands']} command frame(s) from another host: something else is "
                            "driving the arm")
        problems += [f"the arm reports {name}" for name in report.get("faults", [])]
        return problems

    # ---- the bus -----------------------------------------------------------------------------------

    def _open(self) -> Any:
        import can  # the [piper] extra; checked in __init__

        try:
            return can.Bus(interface=self.interface, channel=self.channel, bitrate=p.BITRATE,
                           **_BUS_OPTIONS.get(self.interface, {}))
        except (can.CanError, OSError, ValueError, ImportError) as exc:
            raise ArmLinkError(f"cannot open CAN {self.interface} channel {self.channel!r}: {exc}") from exc

    def _drain(self) -> int:
        """Take up to ``max_frames_per_poll`` frames already received; never waits. Returns how many.

        On slcan it stops only after :data:`EMPTY_READS` reads in a row without a message: python-can's slcan
        interface answers an adapter's acknowledgement line (CR, BEL, ``z``) as no message, with frames behind it."""
        import can

        now, empty = self._clock(), 0
        for n in range(self.max_frames_per_poll):
            try:
                msg = self._bus.recv(timeout=0.0)
            except (ValueError, IndexError) as exc:  # an interface's own parser choking on garbage (slcan lines)
                self._refuse(f"unreadable frame: {exc}")
                continue
            except (can.CanError, OSError) as exc:
                raise ArmLinkError(f"{self._name()}: receiving failed: {exc}") from exc
            if msg is None:
                empty += 1
                if empty == self._empty_reads:
                    return n
                continue
            empty = 0
            self._take(msg, now)
        self._counters["polls_full"] += 1  # more may be waiting: the next tick takes it
        return self.max_frames_per_poll

    def _take(self, msg: Any, now: float) -> None:
        """Use one received python-can message, or count why not."""
        if msg.is_error_frame:
            kinds = [name for bit, name in _ERROR_CLASSES.items() if msg.arbitration_id & bit] or ["unknown"]
            self._errors.update(kinds)
            self._bus_off = self._bus_off or bool(msg.arbitration_id & BUS_OFF)
            return
        if msg.is_remote_frame or msg.is_extended_id or getattr(msg, "is_fd", False):
            self._refuse(f"{msg.arbitration_id:#x}: remote, extended or FD frame")
            return
        frame_id, data = msg.arbitration_id, bytes(msg.data)
        if frame_id in p.COMMAND_IDS:
            self._counters["foreign_commands"] += 1  # another host commanding the arm
            return
        if msg.dlc != len(data):
            self._refuse(f"{frame_id:#05x}: DLC {msg.dlc} but {len(data)} data bytes")
            return
        try:
            fb = p.decode(frame_id, data)
        except p.ProtocolError as exc:
            self._refuse(str(exc))
            return
        if fb is None:
            self._counters["frames_ignored"] += 1
            return
        self._fb.take(fb, frame_id, now)

    def _refuse(self, why: str) -> None:
        self._counters["frames_refused"] += 1
        self._rejected = why

    def _send(self, frames: List[p.Frame], *, skip_when_full: bool = False) -> None:
        """Write ``frames`` without waiting. A full transmit queue skips the rest (counted); failing to
        transmit for the link timeout is a lost link."""
        import can

        now = self._clock()
        for frame_id, data in frames:
            try:
                self._bus.send(can.Message(arbitration_id=frame_id, data=data, is_extended_id=False), timeout=0.0)
            except (can.CanError, OSError, ValueError) as exc:
                self._counters["targets_skipped" if skip_when_full else "sends_failed"] += 1
                self._send_error = str(exc)
                if self._send_failing_since is None:
                    self._send_failing_since = now
                self._check_link()
                return
        self._send_failing_since = None
        self._counters["frames_sent"] += len(frames)

    def _check_link(self) -> None:
        now = self._clock()
        if self._bus_off:
            raise ArmLinkError(f"{self._name()}: the CAN controller reports bus-off (wiring, termination, bitrate, "
                               "or another node babbling); the arm holds its last target")
        if self._send_failing_since is not None and now - self._send_failing_since > self.link_timeout_s:
            raise ArmLinkError(f"{self._name()}: cannot transmit for {(now - self._send_failing_since) * 1e3:.0f} ms "
                               f"({self._send_error})")
        missing = self._fb.missing()
        if missing:
            raise ArmLinkError(f"{self._name()}: no feedback frame {', '.join(f'{i:#05x}' for i in missing)} since "
                               "connect")
        frame_id, seen = self._fb.oldest()
        if now - seen > self.link_timeout_s:
            raise ArmLinkError(f"{self._name()}: no feedback frame {frame_id:#05x} for {(now - seen) * 1e3:.0f} ms "
                               f"(timeout_ms {self.link_timeout_s * 1e3:.0f}); the arm holds its last target")

    def _wait_until(self, done: Callable[[], bool], deadline: float) -> bool:
        """Receive (waiting up to 5 ms at a time) until ``done()`` or ``deadline``; for connect, read_state, probe."""
        import can

        while not done():
            left = deadline - self._clock()
            if left <= 0:
                return False
            try:
                msg = self._bus.recv(timeout=min(left, 0.005))
            except (ValueError, IndexError) as exc:
                self._refuse(f"unreadable frame: {exc}")
                continue
            except (can.CanError, OSError) as exc:
                raise ArmLinkError(f"{self._name()}: receiving failed: {exc}") from exc
            if msg is not None:
                self._take(msg, self._clock())
                self._drain()
        return True

    def _wait(self, what: str, done: Callable[[], bool], timeout_s: Optional[float] = None) -> None:
        timeout_s = self.connect_timeout_s if timeout_s is None else timeout_s
        if not self._wait_until(done, self._clock() + timeout_s):
            missing = ", ".join(f"{i:#05x}" for i in self._fb.missing())
            raise ArmLinkError(f"{self._name()}: no {what} within {timeout_s * 1e3:.0f} ms"
                               + (f" (never received {missing})" if missing else "") + self._bus_hint())

    def _bus_hint(self) -> str:
        if self._bus_off:
            return "; the CAN controller is bus-off"
        if self._errors["no_ack"]:
            return "; error frames say nobody acknowledges: is the arm powered and the bus terminated?"
        return "; is the arm powered, the adapter up at 1 Mbit/s (ip link set can0 up type can bitrate 1000000)?"

    # ---- targets -----------------------------------------------------------------------------------

    def _target_frames(self, target: Target) -> List[p.Frame]:
        values = target.to_vector()
        if not np.isfinite(values).all():
            raise ArmFault(f"{self._name()}: refusing a non-finite target {values.tolist()}", reason="out_of_limits")
        grip = float(np.clip(target.gripper[0], 0.0, 1.0))
        if self.space == "joint":
            for j, (q, limit) in enumerate(zip(target.joints, JOINT_LIMITS)):
                if not limit.lower - 1e-6 <= q <= limit.upper + 1e-6:
                    raise ArmFault(f"{self._name()}: refusing joint {j + 1} = {float(q)!r} rad, outside the arm's "
                                   f"{limit.lower:g}..{limit.upper:g}", reason="out_of_limits")
            return self._frames(p.MOVE_J, [p.millidegrees(q) for q in target.joints], grip)
        position = target.position[0]
        if np.abs(position).max() > MAX_REACH_M:
            raise ArmFault(f"{self._name()}: refusing end-effector position {position.tolist()} m, beyond "
                           f"±{MAX_REACH_M:g} m", reason="out_of_limits")
        euler = to_euler_xyz_row(target.quaternion[0].tolist())
        pose = [p.micrometres(v) for v in position] + [p.millidegrees(a) for a in euler]
        return self._frames(p.MOVE_P, pose, grip)

    def _frames(self, move_mode: int, values: List[int], opening: float) -> List[p.Frame]:
        body = p.joints(values) if move_mode == p.MOVE_J else p.pose(values)
        stroke = round(opening * self.gripper_open_um)
        return [p.mode(move_mode, self.speed_percent), *body, p.gripper(stroke, self.gripper_effort)]

    def _hold_frames(self) -> List[p.Frame]:
        """Command the measured pose in this arm's space, gripper included."""
        fb = self._fb
        stroke = max(0, fb.gripper.stroke_um) if fb.gripper is not None else 0
        body = p.joints(fb.joints) if self.space == "joint" else p.pose(fb.pose)
        move_mode = p.MOVE_J if self.space == "joint" else p.MOVE_P
        return [p.mode(move_mode, self.speed_percent), *body, p.gripper(stroke, self.gripper_effort)]

    # ---- state and faults ----------------------------------------------------------------------------

    def _state(self) -> ArmState:
        fb = self._fb
        q = np.radians(np.array(fb.joints, dtype=np.float64) / 1000.0)
        position = np.array([[p.metres(v) for v in fb.pose[:3]]])
        quat = np.array([from_euler_xyz_row(*(math.radians(v / 1000.0) for v in fb.pose[3:]))])
        stroke = fb.gripper.stroke_um if fb.gripper is not None else 0
        faults, names = self._faults(q)
        return ArmState(
            timestamp=min(fb.seen[i] for i in (*p.JOINTS, *p.END_POSE)),
            faults=faults,
            position=position,
            quaternion=quat,
            gripper=np.array([stroke / self.gripper_open_um]),
            joint_positions=q,
            joint_velocities=np.array(fb.speeds, dtype=np.float64) / 1000.0,
            mode=" ".join((["ESTOPPED"] if self._estopped else []) + names) or "NORMAL",
        )

    def _faults(self, q: Optional[np.ndarray] = None) -> Tuple[FaultFlag, List[str]]:
        """The fault flags and their names from the newest status and driver frames (and the latch)."""
        flags, names = (FaultFlag.ESTOP if self._estopped else FaultFlag(0)), []
        status = self._fb.status
        if status is not None:
            if status.arm_status in _STATUS_FLAGS:
                flags |= _STATUS_FLAGS[status.arm_status]
                names.append(p.ARM_STATUSES[status.arm_status])
            if status.ctrl_mode != p.CTRL_CAN:
                flags |= FaultFlag.HOST_TIMEOUT
                names.append(f"ctrl_mode={p.CTRL_MODES[status.ctrl_mode]}")
            for j in range(p.N_JOINTS):
                if status.limit_bits >> j & 1:
                    flags |= FaultFlag.AT_LIMIT
                    names.append(f"joint{j + 1}_angle_limit")
                if status.comm_bits >> j & 1:
                    flags |= FaultFlag.ENCODER
                    names.append(f"joint{j + 1}_communication_error")
        for motor, driver in sorted(self._fb.drivers.items()):
            for bit, flag in _DRIVER_FLAGS.items():
                if driver.status >> bit & 1:
                    flags |= flag
                    names.append(f"joint{motor}_{p.DRIVER_STATUS_BITS[bit]}")
            if self._caps is not None and not driver.status & p.ENABLED_BIT:
                flags |= FaultFlag.HOST_TIMEOUT
                names.append(f"joint{motor}_disabled")
        gripper = self._fb.gripper
        if gripper is not None:
            for bit, flag in _GRIPPER_FLAGS.items():
                if gripper.status >> bit & 1:
                    flags |= flag
                    names.append(f"gripper_{p.GRIPPER_STATUS_BITS[bit]}")
        if q is not None and not flags & FaultFlag.AT_LIMIT:
            if any(q[j] <= lim.lower + _AT_LIMIT_RAD or q[j] >= lim.upper - _AT_LIMIT_RAD
                   for j, lim in enumerate(JOINT_LIMITS)):
                flags |= FaultFlag.AT_LIMIT
        return flags, names

    def _fault_names(self) -> List[str]:
        return self._faults()[1]

    def _raise_if_faulted(self, what: str, ignore: FaultFlag = FaultFlag(0)) -> None:
        flags, names = self._faults()
        blocking = flags & ~FaultFlag.AT_LIMIT & ~ignore & ~(FaultFlag.ESTOP if self._estopped else FaultFlag(0))
        if blocking:
            reason = "estop" if blocking & FaultFlag.ESTOP else "faulted"
            raise ArmFault(f"{self._name()} {what}: the arm reports {', '.join(names)}", flags=flags, reason=reason)

    def _enabled(self) -> bool:
        drivers = self._fb.drivers
        return len(drivers) == p.N_JOINTS and all(d.status & p.ENABLED_BIT for d in drivers.values())

    def _in_can_mode(self) -> bool:
        return self._fb.status is not None and self._fb.status.ctrl_mode == p.CTRL_CAN

    def _describe(self) -> str:
        names = self._fault_names()
        enabled = [m for m, d in sorted(self._fb.drivers.items()) if d.status & p.ENABLED_BIT]
        return f"motors enabled: {enabled or 'none'}; status: {', '.join(names) or 'normal'}"

    # ---- helpers ------------------------------------------------------------------------------------

    def _name(self) -> str:
        return f"PiperArm({self.interface}:{self.channel})"

    def _not_connected(self) -> ArmConfigError:
        return ArmConfigError(f"{self._name()} is not connected. Run `.connect()` first.")

    def _connected(self) -> None:
        if self._caps is None or self._bus is None:
            raise self._not_connected()
