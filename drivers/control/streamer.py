"""The executing trajectory: splices new chunks in and samples commands at the control rate.

The trajectory runs on its own clock, ``now - lag``, which the control loop slows down whenever the
command cannot keep up with it:

- missed ticks (an overloaded machine): :meth:`Streamer.fall_behind` by the time the safety envelope did
  not see, so the sample does not jump ahead of the command;
- a command clipped by the safety envelope (a chunk asking for more speed or acceleration than allowed):
  :meth:`Streamer.keep_pace` delays the trajectory by the time the command is behind the sample along
  the trajectory's velocity (at most one tick), so the sample waits for the command.

The command then stays on the planned path and comes to rest on the last waypoint. A command chasing a
sample that ran ahead has to be braked from a speed the trajectory never had, and overshoots stops.

A trajectory whose lag would exceed ``max_lag`` times its own duration is dropped (the loop then holds the
last safe command): it is stale, and catching up would mean a jump. Each spliced chunk starts on the wall
clock again (lag 0).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from drivers.arm import Target
from drivers import quaternion
from drivers.control.interpolation import GripperLatch, GripperPolicy, TrajectorySampler
from drivers.control.safety import ReferenceVelocity, SafetyLimits
from drivers.control.splice import SplicePolicy, SpliceResult, splice
from drivers.control.trajectory import Trajectory


def _time_behind(error: np.ndarray, velocity: np.ndarray) -> float:
    """Seconds a command ``error`` short of the sample is behind it along ``velocity`` (0 if ahead or at rest)."""
    v = velocity.reshape(-1)
    speed2 = float(v @ v)
    if speed2 < 1e-12:
        return 0.0
    return max(float(error.reshape(-1) @ v) / speed2, 0.0)


class Streamer:
    """Owns the executing trajectory and the gripper latch; used only by the control loop's thread.

    ``command`` is the arm's current command (at start: its measured pose), which seeds the gripper latch.

    Commands come out raw (interpolated, gripper policy applied) and still have to pass
    :func:`drivers.control.safety.enforce`.
    """

    def __init__(
        self,
        command: Target,
        *,
        limits: SafetyLimits,
        splice_policy: SplicePolicy,
        gripper: GripperPolicy,
        max_lag: float = 1.0,
    ) -> None:
        self.limits = limits
        self.max_lag = max_lag
        self.splice_policy = splice_policy
        self.gripper_policy = gripper
        self._sampler: Optional[TrajectorySampler] = None
        self._latch = GripperLatch(gripper, command.gripper)
        self.lag = 0.0

    def _new_sampler(self, trajectory: Trajectory) -> TrajectorySampler:
        """A sampler interpolating the gripper when the gripper policy passes values through."""
        return TrajectorySampler(trajectory, gripper=self.gripper_policy.sampling)

    @property
    def trajectory(self) -> Optional[Trajectory]:
        """The executing trajectory, or ``None`` (nothing submitted since the last :meth:`reset`)."""
        return None if self._sampler is None else self._sampler.trajectory

    def executing(self) -> Optional[Trajectory]:
        """The executing trajectory on the wall clock (shifted by the lag): what :meth:`sample` commands from now
        on, before the gripper policy; ``None`` without one."""
        if self._sampler is None:
            return None
        trajectory = self._sampler.trajectory
        return trajectory.shifted(self.lag) if self.lag > 0 else trajectory

    @property
    def end(self) -> Optional[float]:
        """Wall-clock time at which the executing trajectory ends (its own end plus the lag), or ``None``."""
        return None if self._sampler is None else self._sampler.trajectory.end + self.lag

    def reset(self, command: Target) -> None:
        """Drop the executing trajectory; the gripper latch restarts from ``command``'s gripper."""
        self._sampler = None
        self._latch = GripperLatch(self.gripper_policy, command.gripper)
        self.lag = 0.0

    def fall_behind(self, seconds: float, now: float) -> bool:
        """Delay the executing trajectory by ``seconds`` up to ``now``; False if that made it stale (it is then
        dropped). A trajectory that had ended on its own clock ``seconds`` before ``now`` is not delayed."""
        if self._sampler is None or seconds <= 0:
            return True
        trajectory = self._sampler.trajectory
        if now - seconds - self.lag >= trajectory.end:
            return True
        self.lag += seconds
        if self.lag > self.max_lag * (trajectory.end - trajectory.start):
            self._sampler = None
            self.lag = 0.0
            return False
        return True

    def keep_pace(
        self, wanted: Target, reference: ReferenceVelocity, achieved: Target, dt: float, now: float
    ) -> bool:
        """After a clipped step: delay the trajectory by the time (at most ``dt``) the ``achieved`` command is
        behind the ``wanted`` sample, measured along the trajectory's velocity ``reference`` there.

        The sample is first clipped into the workspace (joint limits), so a trajectory that runs along or
        past a wall does not wait for a command that may not follow it. A command ahead of the sample adds no
        delay. Returns False if the delay made the trajectory stale (see :meth:`fall_behind`).
        """
        if wanted.space == "ee":
            lower, upper = self.limits.box_arrays
            behind = max(
                _time_behind(np.clip(wanted.position, lower, upper) - achieved.position, reference.linear),
                _time_behind(quaternion.step(achieved.quaternion, wanted.quaternion), reference.angular),
            )
        else:
            lower, upper, _ = self.limits.joint_arrays
            behind = _time_behind(np.clip(wanted.joints, lower, upper) - achieved.joints, reference.linear)
        return self.fall_behind(min(behind, dt), now)

    def submit(self, chunk: Trajectory, *, obs_timestamp: float, now: float, command: Target,
               command_time: Optional[float] = None) -> SpliceResult:
        """Splice ``chunk`` in at ``now`` from the last safe ``command``, sent at ``command_time`` (default
        ``now``); raises ``SpliceRejected``.

        The splice sees the executing trajectory on the wall clock (shifted by the lag): sampled at ``now``
        unshifted, a lagging trajectory is ahead of the command by ``lag`` times its speed, and the hand-over
        would jump there.
        """
        current = self._sampler
        if current is not None and self.lag > 0:
            current = self._new_sampler(current.trajectory.shifted(self.lag))
        result = splice(
            chunk,
            now=now,
            obs_timestamp=obs_timestamp,
            command=command,
            command_time=command_time,
            current=current,
            limits=self.limits,
            policy=self.splice_policy,
        )
        self._sampler = self._new_sampler(result.trajectory)
        self.lag = 0.0
        return result

    def sample(self, now: float) -> Optional[Target]:
        """The raw command at ``now``, or ``None`` without a trajectory."""
        if self._sampler is None:
            return None
        position, quats, raw_gripper = self._sampler.parts(now - self.lag)
        gripper = self._latch(raw_gripper)
        if quats is not None:
            return Target.ee(position, quats, gripper)
        return Target.joint(position, gripper)

    def velocity(self, now: float) -> Optional[ReferenceVelocity]:
        """The trajectory's own velocity at ``now`` (zero outside its span), or ``None`` without one."""
        if self._sampler is None:
            return None
        sampler, t = self._sampler, now - self.lag
        angular = sampler.angular_velocity(t) if sampler.trajectory.space == "ee" else np.zeros((0, 3))
        return ReferenceVelocity(sampler.velocity(t), angular)
