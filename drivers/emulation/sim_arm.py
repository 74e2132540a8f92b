"""An in-process simulated arm controller, for demos and tests.

Each call first advances the simulation to ``clock()``: every coordinate moves toward the target as a
first-order lag with time constant ``time_constant`` (the fraction ``1 - exp(-dt / tau)`` of the remaining
error per step), capped by the arm's own speed limits (linear and angular for EE, ``max_velocity`` per joint,
``gripper_rate``). Joints stay within their limits. Like a real controller it holds where it is after
:meth:`hold`, refuses targets while e-stopped or faulted, and never removes power.

Fault injection: :meth:`inject_faults` / :meth:`clear_faults` set controller fault flags (hardware faults
make it hold and refuse targets); :meth:`inject_link_loss` (for good) or a set ``link_down`` event
(anything with ``is_set()``, e.g. a ``multiprocessing.Event`` passed in the arm factory, to reach an arm
living in the control-loop process) makes every call raise :class:`~drivers.arm.ArmLinkError`; after the
event clears, calls keep failing until :meth:`connect` opens a new session.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Optional, Protocol, Sequence

import numpy as np

from drivers.arm import (
    HARDWARE_FAULTS,
    Arm,
    ArmCapabilities,
    ArmConfigError,
    ArmFault,
    ArmLinkError,
    ArmState,
    Box,
    FaultFlag,
    JointLimit,
    Space,
    Target,
)
from drivers import quaternion
from drivers.physical_ranges import MAX_ARMS

DEFAULT_WORKSPACE = Box((-0.6, -0.6, 0.0), (0.6, 0.6, 0.8))
MAX_TIME_CONSTANT_S = 10.0  # a slower simulated arm does not follow a chunk at all


class EventLike(Protocol):
    def is_set(self) -> bool: ...


def _toward(current: np.ndarray, target: np.ndarray, fraction: float, max_step: np.ndarray) -> np.ndarray:
    """Move ``fraction`` of the way to ``target``, at most ``max_step`` per element (lag + rate limit)."""
    step = np.clip((target - current) * fraction, -max_step, max_step)
    return current + step


class SimArm(Arm):
    """Simulated EE or joint-space controller with ``n_arms`` arms (see the module docstring).

    For ``space="ee"`` the pose starts at ``initial_position`` / ``initial_quaternion`` (per arm, or one
    value for all arms; not checked, so that a controller reporting no finite pose can be simulated); for
    ``space="joint"`` the joints start at ``initial_joints`` (default: mid-range). ``n_arms``: 1 ... ``MAX_ARMS``;
    ``time_constant``: (0, 10] s.
    """

    def __init__(
        self,
        *,
        space: Space = "ee",
        n_arms: int = 1,
        workspaces: Sequence[Box] = (),
        joint_limits: Sequence[JointLimit] = (),
        initial_position: Sequence[float] = (0.3, 0.0, 0.3),
        initial_quaternion: Sequence[float] = (0.0, 0.0, 0.0, 1.0),
        initial_joints: Optional[Sequence[float]] = None,
        initial_gripper: float = 1.0,
        time_constant: float = 0.03,
        max_linear_speed: float = 1.0,
        max_angular_speed: float = 3.0,
        gripper_rate: float = 4.0,
        link_down: Optional[EventLike] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (time_constant > 0 and max_linear_speed > 0 and max_angular_speed > 0 and gripper_rate > 0):
            raise ArmConfigError("SimArm: time_constant and all speed limits must be > 0")
        if not time_constant <= MAX_TIME_CONSTANT_S:
            raise ArmConfigError(f"SimArm.time_constant: expected seconds in (0, {MAX_TIME_CONSTANT_S:g}], "
                                 f"got {time_constant!r}")
        if isinstance(n_arms, bool) or not isinstance(n_arms, int) or not 1 <= n_arms <= MAX_ARMS:
            raise ArmConfigError(f"SimArm.n_arms: expected 1 ... {MAX_ARMS}, got {n_arms!r}")
        self._caps = ArmCapabilities(
            space=space,
            n_arms=n_arms,
            joint_limits=tuple(joint_limits),
            workspaces=tuple(workspaces) if workspaces else (DEFAULT_WORKSPACE,) * n_arms,
            max_rate_hz=1000.0,
        )
        self.time_constant = time_constant
        self.max_linear_speed = max_linear_speed
        self.max_angular_speed = max_angular_speed
        self.gripper_rate = gripper_rate
        self._link_down = link_down
        self._clock = clock
        self._position = np.broadcast_to(np.asarray(initial_position, float), (n_arms, 3)).copy()
        quat = np.broadcast_to(np.asarray(initial_quaternion, float), (n_arms, 4))
        self._quat = quat / np.linalg.norm(quat, axis=1, keepdims=True)
        limits = self._caps.joint_limits
        self._lower = np.array([j.lower for j in limits])
        self._upper = np.array([j.upper for j in limits])
        self._max_joint_vel = np.array([j.max_velocity for j in limits])
        self._joints = (
            (self._lower + self._upper) / 2 if initial_joints is None else np.array(initial_joints, dtype=np.float64)
        )
        if self._joints.shape != self._lower.shape:
            raise ArmConfigError(
                f"SimArm.initial_joints: expected {self._lower.shape[0]} values, got {self._joints.shape}"
            )
        self._gripper = np.full(n_arms, float(initial_gripper))
        self._target: Optional[Target] = None  # None = hold where it is
        self._faults = FaultFlag(0)
        self._link_lost = False
        self._session_lost = False
        self._connected = False
        self._last = clock()

    # -- fault injection ----------------------------------------------------------------------------

    def inject_faults(self, flags: FaultFlag) -> None:
        """Set controller fault flags; hardware faults make the arm hold and refuse targets."""
        self._advance()
        self._faults |= flags
        if flags & HARDWARE_FAULTS:
            self._target = None

    def clear_faults(self) -> None:
        """Clear every fault flag except a latched e-stop (that needs :meth:`clear_estop`)."""
        self._faults &= FaultFlag.ESTOP

    def inject_link_loss(self) -> None:
        """Every later call raises ``ArmLinkError`` (the arm itself keeps holding)."""
        self._link_lost = True

    # -- Arm interface ------------------------------------------------------------------------------

    @property
    def capabilities(self) -> ArmCapabilities:
        if not self._connected:
            raise ArmConfigError("SimArm: not connected; call connect() first")
        return self._caps

    def _link_up(self) -> bool:
        return not self._link_lost and not (self._link_down is not None and self._link_down.is_set())

    def _check_link(self) -> None:
        """Raise while the link is down, and after that until the next :meth:`connect` (the session is gone)."""
        if not self._link_up():
            self._session_lost = True
        if self._session_lost:
            raise ArmLinkError("SimArm: link lost (injected)")

    def connect(self) -> ArmCapabilities:
        if not self._link_up():
            raise ArmLinkError("SimArm: cannot connect, link down (injected)")
        self._session_lost = False
        self._advance()
        self._connected = True
        self._faults &= ~FaultFlag.HOST_TIMEOUT
        self._target = None
        return self._caps

    def read_state(self) -> ArmState:
        self._check_link()
        now = self._advance()
        return ArmState(
            timestamp=now,
            faults=self._faults,
            position=self._position.copy(),
            quaternion=self._quat.copy(),
            gripper=self._gripper.copy(),
            joint_positions=self._joints.copy(),
            joint_velocities=np.zeros_like(self._joints),
            mode="holding" if self._target is None else "tracking",
        )

    def send_target(self, target: Target) -> None:
        self._check_link()
        self._advance()
        caps = self._caps
        if target.space != caps.space or target.n_arms != caps.n_arms:
            raise ArmConfigError(
                f"SimArm.send_target: expected a {caps.space!r} target for {caps.n_arms} arm(s), "
                f"got {target.space!r} for {target.n_arms}"
            )
        if target.space == "joint" and target.joints.shape != (caps.n_joints,):
            raise ArmConfigError(f"SimArm.send_target: expected {caps.n_joints} joints, got {target.joints.shape[0]}")
        if self._faults & (HARDWARE_FAULTS | FaultFlag.ESTOP):
            raise ArmFault(f"SimArm: target refused, faults {self._faults!r}", flags=self._faults, reason="faulted")
        if not np.isfinite(target.to_vector()).all():
            raise ArmFault("SimArm: target refused, non-finite value", flags=self._faults, reason="out_of_limits")
        self._target = target

    def hold(self) -> None:
        self._check_link()
        self._advance()
        self._target = None

    def estop(self) -> None:
        self._check_link()
        self._advance()
        self._faults |= FaultFlag.ESTOP
        self._target = None

    def clear_estop(self) -> None:
        self._check_link()
        self._advance()
        self._faults &= ~FaultFlag.ESTOP

    def close(self) -> None:
        if self._connected and not self._session_lost and self._link_up():
            self.hold()
        self._connected = False

    # -- simulation ---------------------------------------------------------------------------------

    def _advance(self) -> float:
        """Integrate the dynamics up to ``clock()``; returns that time."""
        now = self._clock()
        dt = max(now - self._last, 0.0)
        self._last = now
        target = self._target
        if target is None or dt == 0:
            return now
        fraction = 1.0 - math.exp(-dt / self.time_constant)
        self._gripper = _toward(self._gripper, target.gripper, fraction, self.gripper_rate * dt)
        if target.space == "joint":
            moved = _toward(self._joints, target.joints, fraction, self._max_joint_vel * dt)
            self._joints = np.clip(moved, self._lower, self._upper)
            return now
        # per arm on Python floats: a few microseconds, where numpy's per-call overhead on rows of three
        # would cost tens (the control loop reads and commands the arm every tick)
        linear, angular = self.max_linear_speed * dt, self.max_angular_speed * dt
        positions, quats = [], []
        for p, q, tp, tq in zip(self._position.tolist(), self._quat.tolist(), target.position.tolist(),
                                target.quaternion.tolist()):
            step = [(b - a) * fraction for a, b in zip(p, tp)]
            norm = math.sqrt(step[0] * step[0] + step[1] * step[1] + step[2] * step[2])
            if norm > linear:
                step = [x * linear / max(norm, 1e-12) for x in step]
            positions.append([a + x for a, x in zip(p, step)])
            delta = [x * fraction for x in quaternion.step_row(q, tq)]
            angle = math.sqrt(delta[0] * delta[0] + delta[1] * delta[1] + delta[2] * delta[2])
            if angle > angular:
                delta = [x * angular / max(angle, 1e-12) for x in delta]
            quats.append(quaternion.apply_step_row(delta, q))
        self._position, self._quat = np.array(positions), np.array(quats)
        return now
