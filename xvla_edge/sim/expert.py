"""The scripted expert: moves above the named block, descends, closes the gripper, lifts (``pick``).

A command generator stepped at a fixed ``dt``: the commanded point moves toward the current goal with a
trapezoidal speed profile (:data:`SPEED` m/s, :data:`ACCEL` m/s²) and the gripper at :data:`GRIPPER_RATE`
per second — inside the control loop's default safety envelope (0.5 m/s, 5 m/s², 2 /s), so a policy
that imitates it needs no safety clamps. The orientation is always the grasp orientation.

Goals, from the table's state and the commanded point: carry the named block up to :data:`LIFT_Z`
(``pick``) or hold it (``touch``); at the block (within :data:`AT_BLOCK` horizontally, at
:data:`GRASP_Z`): close; at the hover point, or anywhere below the hover height: go to the block at grasp
height (sliding over to it, never back up: a policy that imitates this corrects a centimetre where it is);
elsewhere: go to :data:`HOVER_Z` above it, gripper open.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from xvla_edge.sim.scene import GRASP_QUAT
from xvla_edge.sim.world import Tabletop

SPEED = 0.25
ACCEL = 1.5
GRIPPER_RATE = 1.5
HOVER_Z = 0.10
GRASP_Z = 0.02
LIFT_Z = 0.15
AT_BLOCK = 0.01  # close when the gripper is this near the block centre (the grasp takes 2 cm)
ABOVE_BLOCK = 0.001  # the descent starts when the hover point is reached (so the path turns at rest)


@dataclass
class Command:
    """The expert's commanded point, its speed along the path, and the gripper opening command."""

    position: np.ndarray
    speed: float = 0.0
    gripper: float = 1.0


def goal(table: Tabletop, cmd: Command) -> tuple[np.ndarray, float]:
    """(goal point, gripper goal) for the commanded state ``cmd`` on ``table``."""
    block = table.blocks[table.scene.target]
    if table.held == table.scene.target:
        lift = LIFT_Z if table.scene.verb == "pick" else cmd.position[2]
        return np.array([cmd.position[0], cmd.position[1], lift]), 0.0
    off = float(np.linalg.norm(cmd.position[:2] - block[:2]))
    if off < AT_BLOCK and cmd.position[2] <= GRASP_Z + 0.004:
        if cmd.gripper <= 0.0 and table.held is None:  # closed on nothing: back up and try again
            return np.array([block[0], block[1], HOVER_Z]), 1.0
        return np.array([block[0], block[1], GRASP_Z]), 0.0
    if cmd.gripper < 1.0:  # not at the block with a closing or closed gripper: open where it is
        return cmd.position.copy(), 1.0
    if off < ABOVE_BLOCK or cmd.position[2] < HOVER_Z - 0.005:  # below the hover height: never back up
        return np.array([block[0], block[1], GRASP_Z]), 1.0
    return np.array([block[0], block[1], HOVER_Z]), 1.0


def step(table: Tabletop, cmd: Command, dt: float) -> Command:
    """The next command, ``dt`` later."""
    target, grip = goal(table, cmd)
    delta = target - cmd.position
    distance = float(np.linalg.norm(delta))
    speed = min(cmd.speed + ACCEL * dt, SPEED, float(np.sqrt(2 * ACCEL * distance)))
    move = min(speed * dt, distance)
    position = cmd.position + (delta / distance * move if distance > 1e-9 else 0.0)
    gripper = cmd.gripper + float(np.clip(grip - cmd.gripper, -GRIPPER_RATE * dt, GRIPPER_RATE * dt))
    return Command(position, speed if move < distance else 0.0, gripper)


def plan(table: Tabletop, cmd: Command, dt: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The expert's next ``n`` commands from ``cmd`` (positions [n, 3], gripper [n]), on a copy of the table
    that sees the arm at the commanded point (the label of one training chunk)."""
    table = copy.deepcopy(table)
    positions, grippers = np.empty((n, 3)), np.empty(n)
    for k in range(n):
        cmd = step(table, cmd, dt)
        table.update(cmd.position, GRASP_QUAT, cmd.gripper)
        positions[k], grippers[k] = cmd.position, cmd.gripper
    return positions, grippers
