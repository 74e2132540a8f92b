"""The interface every arm backend implements, and the values that cross it.

A backend (the xvla-serial arm, the Dynamixel bus arm, :class:`drivers.emulation.sim_arm.SimArm`) talks to one
arm controller. The control loop (:mod:`drivers.control.control_loop`) is its only caller and uses it from a single
thread at the control rate, so backends need no locking. The loop calls, in order::

    caps = arm.connect()          # once, in the control-loop process
    state = arm.read_state()      # once after connect, and after a reconnect
    state = arm.poll_state()      # every tick: never waits on the controller
    arm.send_target(target)       # every tick, after the safety envelope: never waits on the controller
    arm.hold() / arm.estop()      # when the watchdog says so
    arm.close()                   # on exit, after hold()

``arm.probe()`` is apart from that sequence: an optional, read-only look at the link (``xvla-edge arm check``).

Conventions (all backends):

- Positions in metres in the arm's base frame; joint positions in rad (or m for prismatic joints).
- Quaternions are ``(x, y, z, w)``, scalar last, as scipy's ``Rotation.as_quat()``.
- Gripper is the normalised opening: 0.0 closed ... 1.0 fully open, one value per arm.
- Timestamps are ``time.monotonic()`` seconds (CLOCK_MONOTONIC, shared by all processes on a host).
- Stopping means *holding position with power on* (IEC 60204-1 stop category 2). No method here removes
  torque: the arms this runtime drives fall when torque is cut. Torque-off is a backend-specific,
  operator-requested action outside this interface.

Arms are built inside the control-loop process from an :data:`ArmFactory` (any picklable zero-argument
callable, e.g. ``functools.partial(SomeArm, port="/dev/ttyACM0")``), so serial ports are opened there.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass, field
from typing import Callable, Dict, Literal, Optional, Tuple

import numpy as np

from drivers.errors import ArmError
from drivers.physical_ranges import MAX_JOINT, MAX_JOINT_VELOCITY, MAX_POSITION_M, check_rate

Space = Literal["ee", "joint"]
SPACES: Tuple[str, ...] = ("ee", "joint")


class FaultFlag(enum.IntFlag):
    """Controller fault flags. Bit values match the xvla-serial protocol; other backends map onto them."""

    HOST_TIMEOUT = 1 << 0  # the controller's deadman fired; it holds until re-connected
    ESTOP = 1 << 1  # the e-stop latch is set; the controller holds and refuses targets
    OVER_TEMPERATURE = 1 << 2
    OVER_CURRENT = 1 << 3  # also: overload
    ENCODER = 1 << 4
    SUPPLY_VOLTAGE = 1 << 5
    AT_LIMIT = 1 << 6  # warning only: a joint sits at a position limit


#: Flags that mean the controller cannot track targets (hardware faults).
HARDWARE_FAULTS = (
    FaultFlag.OVER_TEMPERATURE | FaultFlag.OVER_CURRENT | FaultFlag.ENCODER | FaultFlag.SUPPLY_VOLTAGE
)
#: Flags after which the control loop must not stream targets.
BLOCKING_FAULTS = HARDWARE_FAULTS | FaultFlag.HOST_TIMEOUT | FaultFlag.ESTOP


class ArmConfigError(ArmError, ValueError):
    """Bad backend configuration or an argument of the wrong shape/space (a programming error)."""


class ArmLinkError(ArmError):
    """The link to the controller is gone: no reply, port failure, controller rebooted or timed out.

    The control loop stops streaming on this error; the controller's own deadman is then responsible for
    holding the arm.
    """


class NoProbe(ArmError, NotImplementedError):
    """The backend has no read-only probe (:meth:`Arm.probe`)."""


class ArmFault(ArmError):
    """The controller reports a fault or refused a command (e-stopped, faulted, out of its limits).

    ``flags`` are the controller's fault flags at the time, ``reason`` a short machine-readable word.
    """

    def __init__(self, message: str, *, flags: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.flags = FaultFlag(flags)
        self.reason = reason


@dataclass(frozen=True)
class JointLimit:
    """Position range and speed limit of one joint (rad or m, and that unit per second), within the physical
    ranges of :mod:`drivers.physical_ranges` (``±MAX_JOINT``, ``max_velocity <= MAX_JOINT_VELOCITY``)."""

    lower: float
    upper: float
    max_velocity: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.lower) and np.isfinite(self.upper) and self.lower < self.upper):
            raise ArmConfigError(f"JointLimit: need finite lower < upper, got lower={self.lower}, upper={self.upper}")
        if max(abs(self.lower), abs(self.upper)) > MAX_JOINT:
            raise ArmConfigError(f"JointLimit: lower and upper must lie within ±{MAX_JOINT:.6g} (4π rad), "
                                 f"got lower={self.lower}, upper={self.upper}")
        why = check_rate("JointLimit: max_velocity", self.max_velocity, MAX_JOINT_VELOCITY, "rad/s (4π)")
        if why:
            raise ArmConfigError(why)


@dataclass(frozen=True)
class Box:
    """Axis-aligned workspace box for one arm's end-effector position (m, arm base frame), within
    ``±MAX_POSITION_M`` on every axis (:mod:`drivers.physical_ranges`)."""

    lower: Tuple[float, float, float]
    upper: Tuple[float, float, float]

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.lower, float), np.asarray(self.upper, float)
        if lo.shape != (3,) or hi.shape != (3,):
            raise ArmConfigError(f"Box: lower and upper must have 3 values, got {lo.shape} and {hi.shape}")
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo < hi)):
            raise ArmConfigError(f"Box: need finite lower < upper on every axis, got {self.lower} .. {self.upper}")
        if np.max(np.abs([lo, hi])) > MAX_POSITION_M:
            raise ArmConfigError(f"Box: corners must lie within ±{MAX_POSITION_M:g} m on every axis, "
                                 f"got {self.lower} .. {self.upper}")
        object.__setattr__(self, "lower", tuple(float(v) for v in lo))
        object.__setattr__(self, "upper", tuple(float(v) for v in hi))


@dataclass(frozen=True)
class ArmCapabilities:
    """What a connected controller accepts.

    ``space`` is the target space this backend streams (``"ee"``: per-arm pose + gripper; ``"joint"``:
    every joint position + per-arm gripper). ``joint_limits`` lists the joints in the controller's order
    (may be empty for an EE-only controller); ``workspaces`` holds one box per arm, or is empty when the
    controller does not report one. ``max_rate_hz`` is advisory (``None`` = unknown).
    """

    space: Space
    n_arms: int
    joint_limits: Tuple[JointLimit, ...] = ()
    workspaces: Tuple[Box, ...] = ()
    max_rate_hz: Optional[float] = None

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ArmConfigError(f"ArmCapabilities.space: expected one of {SPACES}, got {self.space!r}")
        if self.n_arms < 1:
            raise ArmConfigError(f"ArmCapabilities.n_arms must be >= 1, got {self.n_arms}")
        if self.space == "joint" and not self.joint_limits:
            raise ArmConfigError("ArmCapabilities: space 'joint' needs joint_limits (one per joint)")
        if self.workspaces and len(self.workspaces) != self.n_arms:
            raise ArmConfigError(
                f"ArmCapabilities.workspaces: expected {self.n_arms} boxes (one per arm), got {len(self.workspaces)}"
            )

    @property
    def n_joints(self) -> int:
        return len(self.joint_limits)


def _as_array(value: object, shape: Tuple[int, ...], name: str) -> np.ndarray:
    arr = np.array(value, dtype=np.float64)  # a copy: callers may reuse their buffers
    if arr.shape != shape:
        raise ArmConfigError(f"{name}: expected shape {shape}, got {arr.shape}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class Target:
    """One command for all arms of a controller. Build it with :meth:`ee` or :meth:`joint`.

    Shapes are checked, values are not: non-finite or out-of-range values are the safety envelope's job
    (:mod:`drivers.control.safety`), which every target passes before it reaches a backend. Backends should still
    refuse non-finite values rather than send them.
    """

    space: Space
    gripper: np.ndarray  # [A] in 0..1
    position: Optional[np.ndarray] = None  # [A, 3], space "ee"
    quaternion: Optional[np.ndarray] = None  # [A, 4] xyzw, space "ee"
    joints: Optional[np.ndarray] = None  # [J], space "joint"

    @classmethod
    def ee(cls, position: object, quaternion: object, gripper: object) -> "Target":
        """End-effector target: ``position`` [A,3], ``quaternion`` [A,4] (x,y,z,w), ``gripper`` [A]."""
        pos = np.asarray(position, dtype=np.float64)
        n = pos.shape[0] if pos.ndim == 2 else -1
        if n < 1:
            raise ArmConfigError(f"Target.position: expected shape (n_arms, 3), got {pos.shape}")
        return cls(
            "ee",
            gripper=_as_array(gripper, (n,), "Target.gripper"),
            position=_as_array(pos, (n, 3), "Target.position"),
            quaternion=_as_array(quaternion, (n, 4), "Target.quaternion"),
        )

    @classmethod
    def joint(cls, joints: object, gripper: object) -> "Target":
        """Joint-space target: ``joints`` [J] in the controller's order, ``gripper`` [A]."""
        q = np.asarray(joints, dtype=np.float64)
        g = np.asarray(gripper, dtype=np.float64)
        if q.ndim != 1 or g.ndim != 1:
            raise ArmConfigError(f"Target.joint: joints and gripper must be 1-D, got {q.shape} and {g.shape}")
        gripper, joints = _as_array(g, g.shape, "Target.gripper"), _as_array(q, q.shape, "Target.joints")
        return cls("joint", gripper=gripper, joints=joints)

    @property
    def n_arms(self) -> int:
        return int(self.gripper.shape[0])

    def to_vector(self) -> np.ndarray:
        """Flat values in wire order: EE per arm ``x y z qx qy qz qw gripper``; joint: joints, then grippers."""
        if self.space == "ee":
            return np.concatenate([self.position, self.quaternion, self.gripper[:, None]], axis=1).ravel()
        return np.concatenate([self.joints, self.gripper])


@dataclass(frozen=True)
class ArmState:
    """What the controller measured, received at ``timestamp`` (``time.monotonic()``).

    EE fields are ``[A, ...]`` arrays and may be NaN when the controller has no forward kinematics; joint
    fields are ``[J]`` and empty for a controller that reports no joints. ``mode`` is the controller's own
    mode name, for logs only.
    """

    timestamp: float
    faults: FaultFlag = FaultFlag(0)
    position: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # [A, 3]
    quaternion: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # [A, 4] xyzw
    gripper: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [A]
    joint_positions: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [J]
    joint_velocities: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [J]
    mode: str = ""

    def to_vector(self, space: Space) -> np.ndarray:
        """Measured values in the layout of :meth:`Target.to_vector` for ``space``."""
        if space == "ee":
            return np.concatenate([self.position, self.quaternion, self.gripper[:, None]], axis=1).ravel()
        return np.concatenate([self.joint_positions, self.gripper])

    @property
    def blocked(self) -> bool:
        """True when a fault flag forbids streaming (e-stop, deadman timeout, hardware fault)."""
        return bool(self.faults & BLOCKING_FAULTS)


class Arm(abc.ABC):
    """One arm controller (one or more arms behind one link).

    Errors: link problems raise :class:`ArmLinkError`; a refused command or an active fault raises
    :class:`ArmFault`; misuse (wrong space or shape, not connected) raises :class:`ArmConfigError`.
    """

    @property
    @abc.abstractmethod
    def capabilities(self) -> ArmCapabilities:
        """What the controller accepts; valid after :meth:`connect` (raise ``ArmConfigError`` before)."""

    @abc.abstractmethod
    def connect(self) -> ArmCapabilities:
        """Open the link, handshake, leave the arm holding its current position, return capabilities.

        Calling it again on a connected arm re-handshakes (e.g. to clear a controller deadman timeout).
        """

    @abc.abstractmethod
    def read_state(self) -> ArmState:
        """Measured state now. Raises ``ArmLinkError`` when no valid reply arrives in time."""

    def poll_state(self) -> ArmState:
        """The newest measured state, for the control tick: must return within a small, bounded time.

        A backend whose state needs a round trip to the controller returns the newest state received (its
        ``timestamp`` says when) and asks for the next one; it raises ``ArmLinkError`` once the newest state
        is older than its link timeout. The default is :meth:`read_state`, for backends that read at once.
        """
        return self.read_state()

    def counters(self) -> Dict[str, int]:
        """Backend counters (frames lost, targets skipped under backpressure, ...) for the loop's stats."""
        return {}

    @abc.abstractmethod
    def send_target(self, target: Target) -> None:
        """Command the arm toward ``target`` (already checked by the safety envelope).

        Called from the control tick: must not wait on the controller (write what can be written, count
        what cannot; the backend documents its backpressure policy). Raises ``ArmFault`` when the controller
        refuses it, ``ArmLinkError`` on link loss, ``ArmConfigError`` on a space/shape mismatch.
        """

    @abc.abstractmethod
    def hold(self) -> None:
        """Stop and hold the current position with power on, until the next ``send_target``."""

    @abc.abstractmethod
    def estop(self) -> None:
        """Engage the controller's e-stop latch (hold with power on; refuse targets until cleared).

        A backend whose controller has no latch keeps one itself. This is a software stop, not a
        safety-rated e-stop.
        """

    @abc.abstractmethod
    def clear_estop(self) -> None:
        """Release the e-stop latch; the arm keeps holding until the next ``send_target``."""

    @abc.abstractmethod
    def close(self) -> None:
        """Hold (best effort), then release the link. Never removes torque. Safe to call twice."""

    def probe(self) -> Dict[str, object]:
        """What the backend finds on its link, read-only, as JSON-able values (optional; ``xvla-edge arm check``).

        Works on an arm that is not connected (opening the link and closing it again). Moves nothing, writes no
        target and never enables torque. ``link`` says whether anything answered, ``problems`` lists what would
        stop :meth:`connect` (one sentence each), the rest is the backend's (e.g. ``motors``: per motor its id,
        position and error bits). Raises :class:`ArmLinkError` when the link cannot be opened at all, and
        :class:`NoProbe` for a backend without a probe.
        """
        raise NoProbe(f"no probe for this arm: {type(self).__name__} has no read-only check of its link")

    def __enter__(self) -> "Arm":
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: A picklable zero-argument callable that builds an :class:`Arm` (called in the control-loop process).
ArmFactory = Callable[[], Arm]
