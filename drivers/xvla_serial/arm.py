"""Host side of the xvla-serial protocol (PROTOCOL.md): an :class:`~drivers.arm.Arm` over pyserial.

The port is opened with ``serial.serial_for_url``, so real ports (``/dev/ttyACM0``), pty paths and
pyserial URLs (``socket://host:port``, ``loop://``, ``spy://...``) all work.

The control tick never waits on the controller. :meth:`XvlaSerialArm.send_target` and
:meth:`XvlaSerialArm.poll_state` (what the tick calls) handle the replies that have already arrived, write
their frame and return; they never wait for a reply. Both are pipelined:

- **TARGETs**: up to ``max_in_flight`` may be unacknowledged. A NACK arriving later is raised by the next
  call. A controller that answers slowly exerts **backpressure**; the policy is:

  1. no free slot: the target is *not sent* (``LinkStats.targets_skipped`` counts it). Nothing is queued:
     the next tick's target is newer, so the newest target is the one sent once an ACK frees a slot, and
     the controller keeps tracking the last target it accepted meanwhile;
  2. a TARGET unacknowledged for longer than ``ack_timeout_s`` (100 ms default) is a lost link:
     ``ArmLinkError``, the control loop stops streaming, and the controller's deadman holds the arm
     ``timeout_ms`` after the last frame it received.

- **STATE**: :meth:`~XvlaSerialArm.poll_state` returns the newest STATE received (its ``timestamp`` is
  when it arrived, normally one tick old) and sends one HEARTBEAT for the next one when none is
  outstanding. A HEARTBEAT unanswered for ``reply_timeout_s`` is counted lost (``states_lost``) and
  replaced; when no STATE has arrived for ``(retries + 1) * reply_timeout_s`` (150 ms default) the link is
  lost (``ArmLinkError``), the bound :meth:`~XvlaSerialArm.read_state` applies too.

:meth:`~XvlaSerialArm.read_state`, :meth:`~XvlaSerialArm.connect`, ``hold``, ``estop`` and ``clear_estop``
wait for their reply (bounded by ``reply_timeout_s`` and ``retries``); the control loop calls them only
outside the periodic tick's steady state (start-up, reconnect, mode changes). Frames are written with
pyserial's blocking write, which returns at once unless the OS buffer is full (the peer reads nothing);
``write_timeout_s`` bounds that case and a timed-out write is a lost link.

There is no background thread: the control loop's own TARGETs and HEARTBEATs are the heartbeats, so a
stalled loop lets the controller's deadman hold the arm.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
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

#: The rates a UART port takes: the standard termios rates, as pyserial names them (USB CDC-ACM ignores it).
BAUD_RATES = tuple(serial.SerialBase.BAUDRATES)
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
    targets_skipped: int = 0  # not sent: max_in_flight TARGETs were unacknowledged (backpressure)
    states_lost: int = 0  # HEARTBEATs from poll_state unanswered within reply_timeout_s
    frames_echoed: int = 0  # host-type frames received: the port echoes what we send
    frames_malformed: int = 0  # valid CRCs, undecodable payload
    frames_corrupt: int = 0  # candidate frames rejected by a CRC or length check
    bytes_discarded: int = 0  # bytes skipped while resynchronising


class XvlaSerialArm(Arm):
    """An arm controller speaking xvla-serial.

    ``space`` picks the target space streamed ("ee" or "joint"; the controller must support it). ``baudrate``:
    one of :data:`BAUD_RATES`.
    ``timeout_ms`` is the controller deadman requested in HELLO. ``reply_timeout_s`` and ``retries`` apply to
    HELLO/HEARTBEAT/HOLD/ESTOP and bound the age of :meth:`poll_state`'s newest STATE; ``ack_timeout_s`` is
    how long a TARGET may stay unacknowledged before the link counts as lost. These three may be changed
    between calls. ``clock`` is the time source (``time.monotonic``; tests inject their own).
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
        write_timeout_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if space not in _MODES:
            raise ArmConfigError(f"XvlaSerialArm.space: expected 'ee' or 'joint', got {space!r}")
        if not 1 <= max_in_flight <= 8:
            raise ArmConfigError(f"XvlaSerialArm.max_in_flight: expected 1..8 (PROTOCOL.md §3), got {max_in_flight}")
        if baudrate not in BAUD_RATES:
            raise ArmConfigError(f"XvlaSerialArm.baudrate: expected one of {', '.join(map(str, BAUD_RATES))} (the "
                                 f"standard serial rates), got {baudrate!r}")
        if not 0 <= timeout_ms <= 0xFFFF:
            raise ArmConfigError(f"XvlaSerialArm.timeout_ms: expected 0..65535 (0: controller's), got {timeout_ms}")
        if not (reply_timeout_s > 0 and ack_timeout_s > 0 and write_timeout_s > 0 and retries >= 0):
            raise ArmConfigError(
                f"XvlaSerialArm: need reply_timeout_s, ack_timeout_s, write_timeout_s > 0 and retries >= 0; got "
                f"{reply_timeout_s}, {ack_timeout_s}, {write_timeout_s}, {retries}"
            )
        self.port = port
        self.space = space
        self._baudrate = baudrate
        self._timeout_ms = timeout_ms
        self.reply_timeout_s = reply_timeout_s
        self.retries = retries
        self._max_in_flight = max_in_flight
        self.ack_timeout_s = ack_timeout_s
        self._write_timeout_s = write_timeout_s
        self._clock = clock
        self._link: Transport | None = None
        self._parser = c.FrameParser()
        self._seq = 0
        self._pending: OrderedDict[int, float] = OrderedDict()  # TARGET seq -> send time
        self._heartbeat: tuple[int, float] | None = None  # poll_state's outstanding HEARTBEAT: seq, send time
        self._state: tuple[c.StateMsg, float] | None = None  # newest STATE and when it arrived
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
                self._link = serial.serial_for_url(
                    self.port, baudrate=self._baudrate, timeout=0.002, write_timeout=self._write_timeout_s
                )
            except (serial.SerialException, OSError, ValueError) as exc:
                raise ArmLinkError(f"cannot open xvla-serial port {self.port!r}: {exc}") from exc
        self._io(self._link.reset_input_buffer)
        self._parser.clear()
        self._pending.clear()
        self._heartbeat = self._state = None
        self._deferred = None
        reply = self._request(c.HelloMsg(self._timeout_ms), c.CapabilitiesMsg)
        self._caps = reply
        self._arm_caps = self._to_arm_caps(reply)
        return self._arm_caps

    def read_state(self) -> ArmState:
        """A fresh STATE: sends a HEARTBEAT and waits for its reply (bounded by the reply timeout and retries)."""
        caps = self._connected()
        self._request(c.HeartbeatMsg(), c.StateMsg)
        return self._arm_state(caps)

    def poll_state(self) -> ArmState:
        """The newest STATE received, without waiting (see the module docstring); asks for the next one."""
        caps = self._connected()
        self._pump(None)
        now = self._clock()
        if self._state is None:
            return self.read_state()  # nothing streamed yet (right after connect): one bounded round trip
        if self._heartbeat is not None and now - self._heartbeat[1] > self.reply_timeout_s:
            self._heartbeat = None
            self.stats.states_lost += 1
        age = now - self._state[1]
        if age > (self.retries + 1) * self.reply_timeout_s:
            raise ArmLinkError(
                f"{self.port}: no STATE for {age * 1000:.0f} ms (limit {self.retries + 1} x "
                f"{self.reply_timeout_s * 1000:.0f} ms)"
            )
        if self._heartbeat is None:
            self._heartbeat = (self._send(c.HeartbeatMsg()), now)
        return self._arm_state(caps)

    def counters(self) -> dict[str, int]:
        return asdict(self.stats)

    def _arm_state(self, caps: c.CapabilitiesMsg) -> ArmState:
        """The newest STATE as an :class:`ArmState` stamped with its arrival time; checks the boot id."""
        assert self._state is not None
        state, received = self._state
        if state.boot_id != caps.boot_id:
            raise ArmLinkError(
                f"{self.port}: controller rebooted (boot id {caps.boot_id:#010x} -> {state.boot_id:#010x}); "
                "call connect() again"
            )
        ee = np.asarray(state.ee, dtype=np.float64).reshape(-1, c.EE_VALUES)
        return ArmState(
            timestamp=received,
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
        if self._estopped:
            raise ArmFault(f"{self.port}: e-stop latch is set; call clear_estop() first", flags=FaultFlag.ESTOP,
                           reason="estopped")
        message = self._to_message(target, caps)
        self._pump(None)
        self._raise_deferred()
        now = self._clock()
        if self._pending:
            oldest, sent = next(iter(self._pending.items()))
            if now - sent > self.ack_timeout_s:
                self._pending.clear()
                raise ArmLinkError(
                    f"{self.port}: TARGETs unacknowledged; the oldest (seq {oldest}) was sent "
                    f"{(now - sent) * 1000:.0f} ms ago (ack_timeout_s {self.ack_timeout_s * 1000:.0f} ms)"
                )
        if len(self._pending) >= self._max_in_flight:
            self.stats.targets_skipped += 1  # backpressure: the next tick sends a newer target
            return
        self._pending[self._send(message)] = now
        self.stats.targets_sent += 1

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
            reply = self._pump(self._clock() + self.reply_timeout_s, want=seq)
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

    def _pump(self, deadline: float | None, *, want: int | None = None) -> c.Message | None:
        """Handle incoming frames; wait for ``want``'s reply until ``deadline``.

        With ``deadline`` None it only handles what has already arrived (never waits).
        """
        block = False
        while True:
            for frame in self._receive(block=block):
                reply = self._handle(frame)
                if want is not None and frame.seq == want and reply is not None:
                    return reply
            if deadline is None or self._clock() >= deadline:
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
        if self._heartbeat is not None and not c.seq_newer(self._heartbeat[0], frame.seq):
            self._heartbeat = None  # answered, or overtaken by a later reply (replies come in order)
        if isinstance(reply, c.StateMsg):
            self._state = (reply, self._clock())
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
