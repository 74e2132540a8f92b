"""The executing trajectory: splices new chunks in and samples commands at the control rate."""

from __future__ import annotations

from typing import Optional

from drivers.arm import Target
from drivers.interpolation import GripperLatch, GripperPolicy, TrajectorySampler
from drivers.safety import SafetyLimits
from drivers.splice import SplicePolicy, SpliceResult, splice
from drivers.trajectory import Trajectory


class Streamer:
    """Owns the executing trajectory and the gripper latch; used only by the control loop's thread.

    ``command`` is the arm's current command (at start: its measured pose), which seeds the gripper latch.

    Commands come out raw (interpolated, gripper policy applied) and still have to pass
    :func:`drivers.safety.enforce`.
    """

    def __init__(
        self, command: Target, *, limits: SafetyLimits, splice_policy: SplicePolicy, gripper: GripperPolicy
    ) -> None:
        self.limits = limits
        self.splice_policy = splice_policy
        self.gripper_policy = gripper
        self._sampler: Optional[TrajectorySampler] = None
        self._latch = GripperLatch(gripper, command.gripper)

    @property
    def trajectory(self) -> Optional[Trajectory]:
        """The executing trajectory, or ``None`` (nothing submitted since the last :meth:`reset`)."""
        return None if self._sampler is None else self._sampler.trajectory

    def reset(self, command: Target) -> None:
        """Drop the executing trajectory; the gripper latch restarts from ``command``'s gripper."""
        self._sampler = None
        self._latch = GripperLatch(self.gripper_policy, command.gripper)

    def submit(self, chunk: Trajectory, *, obs_timestamp: float, now: float, command: Target) -> SpliceResult:
        """Splice ``chunk`` in at ``now`` from the last safe ``command``; raises ``SpliceRejected``."""
        result = splice(
            chunk,
            now=now,
            obs_timestamp=obs_timestamp,
            command=command,
            current=self._sampler,
            limits=self.limits,
            policy=self.splice_policy,
        )
        self._sampler = TrajectorySampler(result.trajectory)
        return result

    def sample(self, now: float) -> Optional[Target]:
        """The raw command at ``now``, or ``None`` without a trajectory."""
        if self._sampler is None:
            return None
        raw = self._sampler.sample(now)
        gripper = self._latch(raw.gripper)
        if raw.space == "ee":
            return Target.ee(raw.position, raw.quaternion, gripper)
        return Target.joint(raw.joints, gripper)
