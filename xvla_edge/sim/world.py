"""What happens on the table as the arm moves: grasps, carried blocks, and when an episode is decided.

:class:`Tabletop` only observes the arm (position, orientation, gripper opening from its measured state),
so the same rules hold whether the arm is simulated in-process or lives in an emulator process behind the
daemon. Rules (physical, no reading of the policy's intent):

- a **grasp** happens when the gripper closes (its opening falls below :data:`CLOSED`, having been open)
  with the gripper point within :data:`GRASP_RADIUS` of a block centre horizontally, at most
  :data:`GRASP_MAX_Z` above the table, and oriented within :data:`GRASP_MAX_ANGLE_DEG` of the grasp
  orientation; the block is then carried with the gripper;
- opening the gripper drops a carried block onto the table below it;
- **success**: ``touch`` — the named block grasped; ``pick`` — the named block carried at least
  :data:`LIFTED_Z` above the table. Grasping another block ends the episode as a failure.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from xvla_edge.sim.scene import BLOCK_SIZE, GRASP_QUAT, RENDER_SIDE, Scene, render, render_wrist

CLOSED = 0.5
GRASP_RADIUS = 0.02
GRASP_MAX_Z = 0.035
GRASP_MAX_ANGLE_DEG = 20.0
LIFTED_Z = 0.08
_GRASP_ROT = Rotation.from_quat(GRASP_QUAT)


def orientation_error_deg(quaternion: np.ndarray) -> float:
    """Angle between an (x, y, z, w) orientation and the grasp orientation, in degrees."""
    return float(np.degrees((Rotation.from_quat(quaternion) * _GRASP_ROT.inv()).magnitude()))


class Tabletop:
    """The blocks of ``scene`` and the episode's outcome, updated from the arm's measured state."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.blocks = np.column_stack([scene.positions, np.full(len(scene.positions), BLOCK_SIZE / 2)])
        self.held: int | None = None
        self.outcome: str | None = None  # "success" or "wrong_block" once decided
        self.missed_grasps = 0  # closings at the named block refused for height or orientation
        self.empty_closings = 0  # closings with no block within reach (a policy that closes at random)
        self._was_open = True
        self.ee = np.zeros(3)
        self.gripper = 1.0

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def update(self, position: np.ndarray, quaternion: np.ndarray, gripper: float) -> None:
        """Apply the rules to the arm's newest measured pose and gripper opening."""
        self.ee, self.gripper = np.asarray(position, float).copy(), float(gripper)
        closed = gripper < CLOSED
        if self.held is not None and not closed:
            self.blocks[self.held] = [*self.blocks[self.held, :2], BLOCK_SIZE / 2]
            self.held = None
        if closed and self._was_open and self.held is None:
            self._grasp(self.ee, quaternion)
        if self.held is not None:
            self.blocks[self.held] = [self.ee[0], self.ee[1], max(self.ee[2], BLOCK_SIZE / 2)]
        self._was_open = not closed
        if self.outcome is None and self.held is not None:
            if self.held != self.scene.target:
                self.outcome = "wrong_block"
            elif self.scene.verb == "touch" or self.blocks[self.held, 2] >= LIFTED_Z:
                self.outcome = "success"

    def _grasp(self, ee: np.ndarray, quaternion: np.ndarray) -> None:
        distance = np.linalg.norm(self.blocks[:, :2] - ee[:2], axis=1)
        i = int(np.argmin(distance))
        if distance[i] > GRASP_RADIUS:
            self.empty_closings += 1
            return
        if ee[2] > GRASP_MAX_Z or orientation_error_deg(quaternion) > GRASP_MAX_ANGLE_DEG:
            self.missed_grasps += i == self.scene.target
            return
        self.held = i

    def image(self, side: int = RENDER_SIDE) -> np.ndarray:
        """The scene camera's view now."""
        return render(self.scene, self.blocks, self.ee, self.gripper, self.held, side)

    def wrist_image(self, side: int = RENDER_SIDE) -> np.ndarray:
        """The wrist camera's view now."""
        return render_wrist(self.scene, self.blocks, self.ee, self.gripper, self.held, side)

    def images(self) -> list[np.ndarray]:
        """Both camera views, in the policy's slot order: scene (slot 0), wrist (slot 1)."""
        return [self.image(), self.wrist_image()]
