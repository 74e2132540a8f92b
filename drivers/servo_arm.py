"""The joint arm on a servo bus whose control tick never waits: what the Dynamixel and Feetech arms share.

The bus (:class:`~drivers.serial_bus.SerialBus`) is half-duplex, so the tick's reads are pipelined and ordered so
that nothing the host sends can collide with the servos' replies:

1. :meth:`ServoBusArm.poll_state` collects, without waiting, the statuses of the sync read sent in the previous
   tick (the bytes already in the serial input buffer) and returns the newest state; its ``timestamp`` is when
   those statuses were collected;
2. :meth:`ServoBusArm.send_target` writes the goal sync write and the next sync read in one write: the servos
   answer after the goal, while the host sends nothing until the next tick.

A tick that sends no target (a stopped mode) has ``poll_state`` send the next read itself; when ``send_target``
follows such a read in the same tick, its replies may still be on the wire, so that goal is not sent
(``targets_skipped``; the next tick's goal is newer). A read whose statuses have not all arrived by the next
``poll_state``, or that the family finds unusable, is a miss (``reads_missed``); its late replies are dropped when
the next read is sent, or, arriving after that, skipped unless they have the next read's length. No complete read
for ``(retries + 1) * timeout_s`` (150 ms by default, the bound the blocking read has; measured on the arm's
clock, so the same at any control rate) is a lost link (``ArmLinkError``). ``read_state``, ``connect``, ``hold``
and ``estop`` wait for their replies (bounded by the bus's timeout and retries, after the statuses of a pipelined
read still on the wire); they are for start-up, reconnects and mode changes.

A family subclasses :class:`ServoBusArm` with its bus, its calibration (a :class:`ServoCalibration`: the base turns
targets into goal ticks and ticks into the state with it) and its hooks: ``connect``, ``read_state``, ``probe``
(with :meth:`ServoBusArm._probe_motors`), :meth:`ServoBusArm._request` (which read goes next),
:meth:`ServoBusArm._miss` and :meth:`ServoBusArm._use` (what a read's statuses mean),
:meth:`ServoBusArm._servo_faults`, :meth:`ServoBusArm._mode` and :meth:`ServoBusArm._refuse_if_blocked`.
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass
from typing import Callable, ClassVar, Dict, Iterator, Optional, Protocol, Sequence

import numpy as np

from drivers.arm import Arm, ArmCapabilities, ArmConfigError, ArmFault, ArmLinkError, ArmState, FaultFlag, Target
from drivers.serial_bus import BusLinkError, BusServoError, PendingRead, Register, SerialBus

_AT_LIMIT_RAD = 0.01  # a joint this close to its calibrated limit reports AT_LIMIT


class ServoJoint(Protocol):
    """A calibrated joint, as the base uses it: its motor, its limits (rad) and the tick conversions."""

    @property
    def motor_id(self) -> int: ...

    @property
    def lower(self) -> float: ...

    @property
    def upper(self) -> float: ...

    def to_ticks(self, rad: float) -> int:
        """Goal ticks; raises ``ArmConfigError`` outside the limits."""

    def to_rad(self, ticks: int) -> float: ...


class ServoGripper(Protocol):
    """A calibrated gripper: its motor and the conversions between ticks and opening (0 closed ... 1 open)."""

    @property
    def motor_id(self) -> int: ...

    def to_ticks(self, opening: float) -> int: ...

    def to_opening(self, ticks: int) -> float: ...


class ServoCalibration(Protocol):
    """A family's calibration of one arm: its joints in the control loop's order, then its gripper."""

    @property
    def robot_id(self) -> str: ...

    @property
    def joints(self) -> Sequence[ServoJoint]: ...

    @property
    def gripper(self) -> ServoGripper: ...

    @property
    def motor_ids(self) -> list[int]: ...


@dataclass(frozen=True)
class Measured:
    """The newest joint measurement and when its statuses arrived."""

    timestamp: float
    joint_positions: np.ndarray
    joint_velocities: np.ndarray
    gripper: float


class ServoBusArm(Arm):
    """One arm (the joints + the gripper of ``calibration``) on ``bus``; see the module docstring.

    ``GOAL`` and ``PRESENT`` are the family's goal and present position registers (``hold`` writes the one
    from the other); ``clock`` stamps the states.
    """

    GOAL: ClassVar[Register]
    PRESENT: ClassVar[Register]

    def __init__(self, bus: SerialBus, calibration: ServoCalibration, *, clock: Callable[[], float]) -> None:
        self.bus = bus
        self.link_timeout_s = (bus.retries + 1) * bus.timeout_s
        self._ids = calibration.motor_ids
        self._n_joints = len(calibration.joints)
        self._lower = np.array([j.lower for j in calibration.joints])
        self._upper = np.array([j.upper for j in calibration.joints])
        self.calibration = calibration
        self._clock = clock
        self._caps: Optional[ArmCapabilities] = None
        self._estopped = False
        self._measured: Optional[Measured] = None
        self._pending: Optional[PendingRead] = None  # the pipelined sync read on the wire
        self._polled = False  # whether poll_state (not send_target) sent it
        self._misses = 0  # consecutive
        self._missed = ""  # why the last missed read missed
        self._last_read = 0.0  # clock time of the last complete read
        self._counters = {"reads_missed": 0, "targets_skipped": 0}

    # ---- the family's hooks ----------------------------------------------------------------------

    @abc.abstractmethod
    def _request(self, after: bytes = b"") -> None:
        """Send the next pipelined read (after ``after``) with :meth:`_send_read`."""

    def _miss(self, pending: PendingRead, raw: Optional[Dict[int, bytes]]) -> str:
        """Why the statuses of ``pending`` (their data: ``raw``, None when incomplete) cannot be used, or ""."""
        if raw is None:
            return f"no status from motor(s) {[i for i in pending.motor_ids if i not in pending.statuses]}"
        return ""

    @abc.abstractmethod
    def _use(self, pending: PendingRead, raw: Dict[int, bytes]) -> None:
        """Take a complete, usable read (a state read: :meth:`_measure` it)."""

    @abc.abstractmethod
    def _servo_faults(self) -> FaultFlag:
        """The fault flags the servos report (hardware errors, a tripped watchdog, ...)."""

    @abc.abstractmethod
    def _probe_motor(self, name: str, motor_id: int) -> Dict[str, object]:
        """What ``probe`` reports of one motor, read-only: ``name``, ``id``, ``found`` and, when found, its readings
        (:meth:`_position` gives its position); when not, ``why``."""

    @abc.abstractmethod
    def _mode(self) -> str:
        """The controller's mode name, for logs."""

    @abc.abstractmethod
    def _refuse_if_blocked(self) -> None:
        """Raise ``ArmFault`` (or ``ArmLinkError``) when the arm may not take targets now."""

    # ---- Arm interface ---------------------------------------------------------------------------

    @property
    def capabilities(self) -> ArmCapabilities:
        self._connected()
        assert self._caps is not None
        return self._caps

    def poll_state(self) -> ArmState:
        """The newest state, without waiting: collects the previous tick's read (see the module docstring)."""
        self._connected()
        if self._measured is None:
            return self.read_state()  # nothing measured since connect: one bounded round trip
        with self._errors("poll state"):
            pending, by_poll = self._pending, self._polled
            if pending is not None:
                self._take(pending)
            silent = self._clock() - self._last_read
            if self._misses and silent > self.link_timeout_s:
                raise self.bus.LINK_ERROR(
                    f"no complete sync read on {self.bus.port} for {silent * 1000:.0f} ms ({self._misses} in a row "
                    f"without all their statuses by the next tick; the last one: {self._missed})")
            if pending is None or by_poll:  # the previous tick sent no target: none will carry the next read
                self._request()
        return self._state()

    def counters(self) -> Dict[str, int]:
        return dict(self._counters)

    def send_target(self, target: Target) -> None:
        self._connected()
        name = f"{type(self).__name__}({self.bus.port})"
        if target.space != "joint" or target.joints is None:
            raise ArmConfigError(f"{name} takes joint targets, got a {target.space!r} target")
        if target.joints.shape != (self._n_joints,) or target.n_arms != 1:
            raise ArmConfigError(f"{name}: expected {self._n_joints} joints and 1 gripper, got "
                                 f"{target.joints.shape[0]} joints and {target.n_arms} gripper values")
        self._refuse_if_blocked()
        goals = self._goals(target)
        with self._errors("send target"):
            if self._pending is not None:  # a read is on the wire (poll_state sent it this tick): it may be answering
                self.bus.collect(self._pending)
                if not self._pending.complete:
                    self._counters["targets_skipped"] += 1
                    self._polled = False  # the next poll_state leaves the next read to the next target
                    return
                self._take(self._pending)
            self._request(after=self.bus.sync_write_packet(self.GOAL, goals))

    def hold(self) -> None:
        self._connected()
        with self._errors("hold"):
            self._settle()
            self.bus.sync_write(self.GOAL, self.bus.sync_read(self.PRESENT, self._ids))

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

    # ---- the pipeline ----------------------------------------------------------------------------

    def _connected(self) -> None:
        if self._caps is None:
            raise ArmConfigError(f"{type(self).__name__}({self.bus.port}) is not connected. Run `.connect()` first.")

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """The bus's errors as the arm's: a lost link ``ArmLinkError``, a refusing servo ``ArmFault``."""
        try:
            yield
        except BusLinkError as exc:
            raise ArmLinkError(f"{type(self).__name__} {what}: {exc}") from exc
        except BusServoError as exc:
            raise ArmFault(f"{type(self).__name__} {what}: {exc}", reason="servo_error") from exc

    def _goals(self, target: Target) -> Dict[int, int]:
        """Goal ticks per motor for a target of the right shape; ``ArmFault`` (``out_of_limits``) for one outside."""
        cal = self.calibration
        try:
            goals = {j.motor_id: j.to_ticks(float(q)) for j, q in zip(cal.joints, target.joints)}
            goals[cal.gripper.motor_id] = cal.gripper.to_ticks(float(target.gripper[0]))
        except ArmConfigError as exc:
            raise ArmFault(f"{type(self).__name__}({self.bus.port}): refusing target: {exc}",
                           reason="out_of_limits") from exc
        return goals

    def _fault_flags(self, q: np.ndarray) -> FaultFlag:
        """The state's fault flags: the e-stop latch, the servos' faults, a joint at its limit."""
        flags = FaultFlag.ESTOP if self._estopped else FaultFlag(0)
        flags |= self._servo_faults()
        if np.any(q <= self._lower + _AT_LIMIT_RAD) or np.any(q >= self._upper - _AT_LIMIT_RAD):
            flags |= FaultFlag.AT_LIMIT
        return flags

    def _refuse_if_estopped(self) -> None:
        if self._estopped:
            raise ArmFault(f"{type(self).__name__}({self.bus.port}): e-stop latch is set; call clear_estop() first",
                           flags=FaultFlag.ESTOP, reason="estopped")

    def _probe_motors(self, driver: str, names: list[tuple[str, int]],
                      problems: Callable[[list[Dict[str, object]]], list[str]]) -> Dict[str, object]:
        """``probe``'s report: each (name, motor id) of ``names`` by :meth:`_probe_motor`, the bus opened for it if
        it was closed; ``problems``: what else the family finds in the motors' readings."""
        opened_here = not self.bus.is_open
        with self._errors("probe"):
            self.bus.open()
        try:
            self._settle()
            motors = [self._probe_motor(name, motor_id) for name, motor_id in names]
        finally:
            if opened_here:
                self.bus.close()
        silent = [f"motor {m['id']} ({m['name']}) does not answer" for m in motors if not m["found"]]
        return {"driver": driver, "port": self.bus.port, "baudrate": self.bus.baudrate,
                "robot_id": self.calibration.robot_id, "link": any(m["found"] for m in motors), "motors": motors,
                "problems": silent + problems(motors)}

    def _position(self, motor_id: int, ticks: int) -> Dict[str, object]:
        """A probed motor's position: ``position`` (rad for a joint, the opening for the gripper) and its ``unit``."""
        joint = next((j for j in self.calibration.joints if j.motor_id == motor_id), None)
        position = joint.to_rad(ticks) if joint is not None else self.calibration.gripper.to_opening(ticks)
        return {"position": round(position, 6), "unit": "rad" if joint is not None else "opening"}

    def _send_read(self, address: int, length: int, ids: list[int], name: str, after: bytes) -> None:
        self._pending = self.bus.request_sync_read(address, length, ids, name=name, after=after)
        self._polled = not after

    def _take(self, pending: PendingRead) -> None:
        """Use ``pending``'s statuses that have arrived, without waiting; an incomplete or unusable read is a miss."""
        self._pending = None
        self.bus.collect(pending)
        raw = self.bus.result(pending)
        why = self._miss(pending, raw)
        if why:  # an incomplete read's late replies, if any, are dropped by the next request
            self._misses += 1
            self._counters["reads_missed"] += 1
            self._missed = why
            return
        assert raw is not None
        self._misses, self._last_read = 0, self._clock()
        self._use(pending, raw)

    def _settle(self) -> None:
        """Wait (up to the bus's timeout) for the statuses of a pipelined read still on the wire, and drop it."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self.bus.collect(pending, wait_s=self.bus.timeout_s)

    def _measure(self, ticks: Dict[int, int], velocities: np.ndarray) -> None:
        """Take a measurement: the present ``ticks`` of every motor and the joints' ``velocities`` (rad/s)."""
        cal = self.calibration
        self._measured = Measured(self._clock(), np.array([j.to_rad(ticks[j.motor_id]) for j in cal.joints]),
                                  velocities, cal.gripper.to_opening(ticks[cal.gripper.motor_id]))
        self._last_read = self._measured.timestamp

    def _state(self) -> ArmState:
        m = self._measured
        assert m is not None
        return ArmState(timestamp=m.timestamp, faults=self._fault_flags(m.joint_positions),
                        position=np.full((1, 3), np.nan), quaternion=np.full((1, 4), np.nan),
                        gripper=np.array([m.gripper]), joint_positions=m.joint_positions,
                        joint_velocities=m.joint_velocities, mode=self._mode())
