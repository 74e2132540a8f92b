"""Host side of the xvla-serial protocol (PROTOCOL.md): an :class:`~drivers.arm.Arm` over pyserial.

The port is opened with ``serial.serial_for_url``, so real ports (``/dev/ttyACM0``), pty paths and
pyserial URLs (``socket://host:port``, ``loop://``, ``spy://...``) all work.

TARGETs are pipelined: :meth:`XvlaSerialArm.send_target` writes the frame, handles whatever replies
have arrived and returns; it blocks only when ``max_in_flight`` TARGETs are unacknowledged. A NACK
arriving later is raised by the next call. There is no background thread: the control loop's own
TARGETs and state reads are the heartbeats, so a stalled loop lets the controller's deadman hold the arm.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import numpy as np
import serial

from drivers.arm import (
    Arm,
    ArmCapabilities,
    ArmConfigError,
    ArmError,
    ArmFault,
    ArmLinkError,
    ArmState,
    Box,
    FaultFlag,
    JointLimit,
    Space,
    Target,
)
from drivers.transport import Transport
from drivers.xvla_serial import codec as c

R = TypeVar("R", c.CapabilitiesMsg, c.StateMsg, c.AckMsg)
_MODES = {"ee": c.TargetMode.EE, "joint": c.TargetMode.JOINT}
_LINK_NACKS = {c.NackReason.NOT_READY: "controller rebooted", c.NackReason.TIMED_OUT: "controller deadman fired"}


@dataclass
class LinkStats:
    """Counters since the arm was created."""

    targets_sent: int = 0
    targets_acked: int = 0
    targets_nacked: int = 0
    replies_lost: int = 0  # requests whose reply never came (a later reply overtook them)
    frames_echoed: int = 0  # host-type frames received: the port echoes what we send
    frames_malformed: int = 0  # valid CRCs, undecodable payload
    frames_corrupt: int = 0  # candidate frames rejected by a CRC or length check
    bytes_discarded: int = 0  # bytes skipped while resynchronising


class XvlaSerialArm(Arm):
    """An arm controller speaking xvla-serial.

    ``space`` picks the target space streamed ("ee" or "joint"; the controller must support it).
    ``timeout_ms`` is the controller deadman requested in HELLO. ``reply_timeout_s`` and ``retries`` apply to
    HELLO/HEARTBEAT/HOLD/ESTOP; ``ack_timeout_s`` is how long :meth:`send_target` waits for a free slot when
    ``max_in_flight`` TARGETs are unacknowledged. These three may be changed between calls.
    """

    def __init__(
        self,
        port: str,
        *,
        space: Space = "ee",
        baudrate: int = 921_600,
        timeout_ms: int = 200,
        reply_timeout_s: float = 0.05,
        retries: int = 2,
        max_in_flight: int = 8,
        ack_timeout_s: float = 0.1,
    ) -> None:
        if space not in _MODES:
            raise ArmConfigError(f"XvlaSerialArm.space: expected 'ee' or 'joint', got {space!r}")
        if not 1 <= max_in_flight <= 8:
            raise ArmConfigError(f"XvlaSerialArm.max_in_flight: expected 1..8 (PROTOCOL.md §3), got {max_in_flight}")
        if not 0 <= timeout_ms <= 0xFFFF:
            raise ArmConfigError(f"XvlaSerialArm.timeout_ms: expected 0..65535 (0: controller's), got {timeout_ms}")
        if not (reply_timeout_s > 0 and ack_timeout_s > 0 and retries >= 0):
            raise ArmConfigError(
                f"XvlaSerialArm: need reply_timeout_s > 0, ack_timeout_s > 0, retries >= 0; got {reply_timeout_s}, "
                f"{ack_timeout_s}, {retries}"
            )
        self.port = port
        self.space = space
        self._baudrate = baudrate
        self._timeout_ms = timeout_ms
        self.reply_timeout_s = reply_timeout_s
        self.retries = retries
        self._max_in_flight = max_in_flight
        self.ack_timeout_s = ack_timeout_s
        self._link: Transport | None = None
        self._parser = c.FrameParser()
        self._seq = 0
        self._pending: OrderedDict[int, float] = OrderedDict()  # TARGET seq -> send time
        self._deferred: ArmError | None = None
        self._estopped = False
        self._caps: c.CapabilitiesMsg | None = None
        self._arm_caps: ArmCapabilities | None = None
        self.stats = LinkStats()

    # ---- Arm interface ---------------------------------------------------------------------------

    @property
    def capabilities(self) -> ArmCapabilities:
        if self._arm_caps is None:
            raise self._not_connected()
        return self._arm_caps

    @property
    def in_flight(self) -> int:
        """TARGETs sent but not yet acknowledged."""
        return len(self._pending)

    def connect(self) -> ArmCapabilities:
        if self._link is None:
            try:
                self._link = serial.serial_for_url(self.port, baudrate=self._baudrate, timeout=0.002, write_timeout=0.5)
            except (serial.SerialException, OSError, ValueError) as exc:
                raise ArmLinkError(f"cannot open xvla-serial port {self.port!r}: {exc}") from exc
        self._io(self._link.reset_input_buffer)
        self._parser.clear()
        self._pending.clear()
        self._deferred = None
        reply = self._request(c.HelloMsg(self._timeout_ms), c.CapabilitiesMsg)
        self._caps = reply
        self._arm_caps = self._to_arm_caps(reply)
        return self._arm_caps

    def read_state(self) -> ArmState:
        caps = self._connected()
        state = self._request(c.HeartbeatMsg(), c.StateMsg)
        if state.boot_id != caps.boot_id:
            raise ArmLinkError(
                f"{self.port}: controller rebooted (boot id {caps.boot_id:#010x} -> {state.boot_id:#010x}); "
                "call connect() again"
            )
        ee = np.asarray(state.ee, dtype=np.float64).reshape(-1, c.EE_VALUES)
        return ArmState(
            timestamp=time.monotonic(),
            faults=FaultFlag(int(state.faults)),
            position=ee[:, 0:3],
            quaternion=ee[:, 3:7],
            gripper=ee[:, 7],
            joint_positions=np.asarray(state.positions, dtype=np.float64),
            joint_velocities=np.asarray(state.velocities, dtype=np.float64),
            mode=state.mode.name,
        )

    def send_target(self, target: Target) -> None:
        caps = self._connected()
        self._raise_deferred()
        if self._estopped:
            raise ArmFault(f"{self.port}: e-stop latch is set; call clear_estop() first", flags=FaultFlag.ESTOP,
                           reason="estopped")
        message = self._to_message(target, caps)
        self._pump(time.monotonic() + self.ack_timeout_s, until_free=True)
        if len(self._pending) >= self._max_in_flight:
            oldest, sent = next(iter(self._pending.items()))
            self._pending.clear()
            raise ArmLinkError(
                f"{self.port}: {self._max_in_flight} TARGETs unacknowledged; the oldest (seq {oldest}) was sent "
                f"{(time.monotonic() - sent) * 1000:.0f} ms ago"
            )
        seq = self._send(message)
        self._pending[seq] = time.monotonic()
        self.stats.targets_sent += 1
        self._pump(None)

    def hold(self) -> None:
        self._request(c.HoldMsg(), c.AckMsg)

    def estop(self) -> None:
        self._estopped = True
        self._request(c.EstopMsg(True), c.AckMsg)

    def clear_estop(self) -> None:
        self._request(c.EstopMsg(False), c.AckMsg)
        self._estopped = False

    def close(self) -> None:
        if self._link is None:
            return
        try:
            if self._caps is not None:
                self.hold()
        except ArmError:
            pass
        finally:
            link, self._link = self._link, None
            self._caps = self._arm_caps = None
            try:
                link.close()
            except (serial.SerialException, OSError):
                pass

    # ---- requests and replies --------------------------------------------------------------------

    def _request(self, message: c.Message, reply_type: type[R]) -> R:
        """Send ``message`` and wait for its reply, retrying with a fresh seq; pending ACKs resolve meanwhile."""
        for _ in range(self.retries + 1):
            seq = self._send(message)
            reply = self._pump(time.monotonic() + self.reply_timeout_s, want=seq)
            if reply is None:
                continue
            if isinstance(reply, c.NackMsg):
                raise self._nack_error(reply, message.TYPE.name, seq)
            if not isinstance(reply, reply_type):
                raise ArmLinkError(
                    f"{self.port}: expected {reply_type.__name__} for {message.TYPE.name} seq {seq}, "
                    f"got {type(reply).__name__}"
                )
            return reply
        echo = ""
        if self.stats.frames_echoed:
            echo = " (the port echoes our own frames: loop:// or a half-duplex adapter?)"
        raise ArmLinkError(
            f"{self.port}: no reply to {message.TYPE.name} after {self.retries + 1} tries "
            f"of {self.reply_timeout_s * 1000:.0f} ms{echo}"
        )

    def _send(self, message: c.Message) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        wire = c.encode(message, self._seq)
        link = self._port()
        self._io(lambda: link.write(wire))
        return self._seq

    def _pump(self, deadline: float | None, *, want: int | None = None, until_free: bool = False) -> c.Message | None:
        """Handle incoming frames; wait for ``want``'s reply or a free TARGET slot until ``deadline``.

        With ``deadline`` None it only handles what has already arrived.
        """
        block = False
        while True:
            for frame in self._receive(block=block):
                reply = self._handle(frame)
                if want is not None and frame.seq == want and reply is not None:
                    return reply
            if until_free and len(self._pending) < self._max_in_flight:
                return None
            if deadline is None or time.monotonic() >= deadline:
                return None
            block = True

    def _receive(self, *, block: bool) -> list[c.Frame]:
        link = self._port()
        waiting = self._io(lambda: link.in_waiting)
        data = self._io(lambda: link.read(max(waiting, 1) if block else waiting)) if block or waiting else b""
        frames = self._parser.feed(data)
        self.stats.frames_corrupt, self.stats.bytes_discarded = self._parser.corrupt, self._parser.discarded
        return frames

    def _handle(self, frame: c.Frame) -> c.Message | None:
        if frame.type in c.HOST_TYPES:
            self.stats.frames_echoed += 1
            return None
        try:
            reply = c.decode(frame)
        except c.ProtocolError:
            self.stats.frames_malformed += 1
            return None
        self._resolve_pending(frame.seq, reply)
        return reply

    def _resolve_pending(self, seq: int, reply: c.Message) -> None:
        """Replies arrive in request order: every pending TARGET sent before ``seq`` lost its reply."""
        while self._pending and c.seq_newer(seq, next(iter(self._pending))):
            self._pending.popitem(last=False)
            self.stats.replies_lost += 1
        if seq not in self._pending:
            return
        del self._pending[seq]
        if isinstance(reply, c.AckMsg):
            self.stats.targets_acked += 1
        elif isinstance(reply, c.NackMsg):
            self.stats.targets_nacked += 1
            if self._deferred is None:
                self._deferred = self._nack_error(reply, "TARGET", seq)

    def _raise_deferred(self) -> None:
        error, self._deferred = self._deferred, None
        if error is not None:
            raise error

    def _nack_error(self, nack: c.NackMsg, what: str, seq: int) -> ArmError:
        caps = self._caps
        mode = _MODES[self.space]
        field = c.describe_field(mode, nack.field, caps) if caps is not None else str(nack.field)
        text = (
            f"{self.port}: controller refused {what} seq {seq}: {nack.reason.name} "
            f"(field {field}, mode {nack.mode.name})"
        )
        if nack.reason in _LINK_NACKS:
            return ArmLinkError(f"{text}: {_LINK_NACKS[nack.reason]}; call connect() again")
        return ArmFault(text, flags=int(nack.faults), reason=nack.reason.name.lower())

    def _io(self, op: Callable[[], Any]) -> Any:
        try:
            return op()
        except (serial.SerialException, OSError) as exc:
            raise ArmLinkError(f"{self.port}: serial I/O failed: {exc}") from exc

    # ---- conversions -----------------------------------------------------------------------------

    def _not_connected(self) -> ArmConfigError:
        return ArmConfigError(f"XvlaSerialArm({self.port}) is not connected. Run `.connect()` first.")

    def _port(self) -> Transport:
        if self._link is None:
            raise self._not_connected()
        return self._link

    def _connected(self) -> c.CapabilitiesMsg:
        if self._caps is None:
            raise self._not_connected()
        return self._caps

    def _to_arm_caps(self, caps: c.CapabilitiesMsg) -> ArmCapabilities:
        mode = _MODES[self.space]
        if not caps.supports(mode):
            offered = [m.name for m in caps.target_modes]
            raise ArmConfigError(f"{self.port}: controller does not take {self.space!r} targets (offers {offered})")
        return ArmCapabilities(
            space=self.space,
            n_arms=caps.n_arms,
            joint_limits=tuple(JointLimit(j.lower, j.upper, j.max_velocity) for j in caps.joints),
            workspaces=tuple(Box(w.lower, w.upper) for w in caps.workspaces),
            max_rate_hz=float(caps.max_rate_hz) or None,
        )

    def _to_message(self, target: Target, caps: c.CapabilitiesMsg) -> c.TargetMsg:
        if target.space != self.space:
            raise ArmConfigError(f"{self.port}: this arm streams {self.space!r} targets, got a {target.space!r} target")
        values = tuple(float(v) for v in target.to_vector())
        message = c.TargetMsg(_MODES[self.space], values)
        expected = caps.target_count(message.mode)
        if len(values) != expected:
            raise ArmConfigError(
                f"{self.port}: {self.space} target needs {expected} values for {caps.n_arms} arm(s) and "
                f"{caps.n_joints} joint(s), got {len(values)}"
            )
        violation = c.target_violation(message, caps)
        if violation is not None:
            reason, index = violation
            raise ArmFault(
                f"{self.port}: refusing to send target: {c.describe_field(message.mode, index, caps)} = "
                f"{values[index]!r} is outside the controller's limits",
                reason=reason.name.lower(),
            )
        return message
