"""The commands the arm will execute back to rows in the model's action layout (real-time chunking's prefix): a
round trip both ways through the model's output transform, the runtime's decoding and :func:`chunk_to_trajectory`,
for every action mode and rot6d layout the bridge drives."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from drivers.control.trajectory import Trajectory
from runtime.decode import chunk_timestamps, decode_arms
from runtime.types import ActionChunk
from xvla.rotations import matrix_to_rot6d
from xvla_edge.daemon.bridge import GRIPPER_EPS, BridgeError, chunk_to_trajectory, trajectory_to_rows

T = 30
SQUASHED = {"ee6d": (9, 19), "joint": (6, 13), "agibot_ee6d": ()}  # channels the output transform sigmoids
CASES = [("ee6d", 1, "rows"), ("ee6d", 2, "rows"), ("ee6d", 1, "columns"), ("ee6d", 2, "columns"),
         ("agibot_ee6d", 1, "rows"), ("agibot_ee6d", 2, "columns"), ("joint", 1, "rows"), ("joint", 2, "rows")]


def manifest_action(mode: str, arms: int, layout: str) -> dict:
    return {"mode": mode, "arms": arms, "rot6d_layout": layout, "dim": 14 if mode == "joint" else 20}


def model_rows(mode: str, arms: int, layout: str, seed: int) -> np.ndarray:
    """A smooth chunk as the network emits it: positions, orthonormal rot6d, gripper logits (openings for agibot)."""
    rng = np.random.default_rng(seed)
    walk = lambda width, step: np.cumsum(rng.normal(0, step, (T, width)), axis=0) + rng.uniform(-0.5, 0.5, width)
    rows = np.zeros((T, 14 if mode == "joint" else 20), np.float32)
    for arm in range(arms):
        grip = rng.uniform(0.05, 0.95, T) if mode == "agibot_ee6d" else rng.uniform(-6, 6, T)
        if mode == "joint":
            rows[:, 7 * arm : 7 * arm + 6], rows[:, 7 * arm + 6] = walk(6, 0.02), grip
        else:
            turn = Rotation.random(random_state=seed + arm) * Rotation.from_rotvec(walk(3, 0.03))
            rows[:, 10 * arm : 10 * arm + 3] = walk(3, 0.005)
            rows[:, 10 * arm + 3 : 10 * arm + 9] = matrix_to_rot6d(turn.as_matrix(), layout)
            rows[:, 10 * arm + 9] = grip
    return rows


def chunk_of(rows: np.ndarray, action: dict) -> ActionChunk:
    """What the policy hands the daemon for these network rows: the output transform, then the decoding."""
    out = rows.copy()
    for c in SQUASHED[action["mode"]]:
        out[:, c] = 1 / (1 + np.exp(-out[:, c]))
    return ActionChunk(actions=out, timestamps=chunk_timestamps(100.0, 1.0, T), arms=decode_arms(out, action),
                       observation_timestamp=100.0)


@pytest.mark.parametrize("mode,arms,layout", CASES)
def test_rows_to_trajectory_and_back(mode: str, arms: int, layout: str) -> None:
    action = manifest_action(mode, arms, layout)
    rows = model_rows(mode, arms, layout, seed=arms)
    back = trajectory_to_rows(chunk_to_trajectory(chunk_of(rows, action)), action)
    assert back.dtype == np.float32 and back.shape == rows.shape
    gripper = list(SQUASHED[mode])  # agibot_ee6d: its openings come back as they are
    others = [c for c in range(rows.shape[1]) if c not in gripper]
    np.testing.assert_allclose(back[:, others], rows[:, others], atol=2e-6, rtol=0)
    np.testing.assert_allclose(back[:, gripper], rows[:, gripper], atol=2e-4, rtol=0)  # logit of a float32 sigmoid


@pytest.mark.parametrize("mode,arms,layout", CASES)
def test_trajectory_to_rows_and_back(mode: str, arms: int, layout: str) -> None:
    """Commands (openings 0 and 1 included) → rows → the arm's commands again, within 1e-6."""
    action = manifest_action(mode, arms, layout)
    source = chunk_to_trajectory(chunk_of(model_rows(mode, arms, layout, seed=10 + arms), action))
    opening = np.random.default_rng(arms).uniform(0, 1, (T, arms))
    opening[:3], opening[-3:] = 0.0, 1.0  # saturated commands: clamped to a finite logit
    times = source.times
    if mode == "joint":
        commands = Trajectory.joint(times, source.joints, opening)
    else:
        commands = Trajectory.ee(times, source.position, source.quaternion, opening)
    again = chunk_to_trajectory(chunk_of(trajectory_to_rows(commands, action), action))
    np.testing.assert_allclose(again.gripper, commands.gripper, atol=GRIPPER_EPS * 1.01, rtol=0)
    if mode == "joint":
        np.testing.assert_allclose(again.joints, commands.joints, atol=1e-6, rtol=0)
        return
    np.testing.assert_allclose(again.position, commands.position, atol=1e-6, rtol=0)
    alignment = np.abs(np.sum(again.quaternion * commands.quaternion, axis=-1))  # q and -q are one rotation
    np.testing.assert_allclose(alignment, 1.0, atol=1e-6)


def test_saturated_openings_map_to_the_documented_clamp() -> None:
    action = manifest_action("ee6d", 1, "rows")
    times = chunk_timestamps(0.0, 1.0, 3)
    commands = Trajectory.ee(times, np.zeros((3, 3)), np.tile([0, 0, 0, 1.0], (3, 1)), [0.0, 0.5, 1.0])
    logits = trajectory_to_rows(commands, action)[:, 9]
    limit = np.log((1 - GRIPPER_EPS) / GRIPPER_EPS)
    np.testing.assert_allclose(logits, [-limit, 0.0, limit], rtol=1e-6)
    np.testing.assert_array_equal(trajectory_to_rows(commands, action)[:, 10:], 0)  # the arm the robot lacks


def test_non_orthonormal_rot6d_comes_back_as_its_rotation() -> None:
    """The arm executes the rotation the decoding made of the model's rot6d: that rotation's rot6d comes back."""
    action = manifest_action("ee6d", 1, "rows")
    rows = model_rows("ee6d", 1, "rows", seed=4)
    rows[:, 3:9] *= np.float32(1.3)  # longer columns: the same rotation after Gram-Schmidt
    back = trajectory_to_rows(chunk_to_trajectory(chunk_of(rows, action)), action)
    np.testing.assert_allclose(back[:, 3:9], rows[:, 3:9] / np.float32(1.3), atol=2e-6)


@pytest.mark.parametrize("action,commands,named", [
    ({"mode": "auto", "dim": 20}, "ee1", "action.mode 'auto' has no known arm layout"),
    ({"mode": "ee6d", "arms": 1, "dim": 20}, "joint1", "needs a 'ee' arm"),
    ({"mode": "ee6d", "arms": 2, "dim": 20}, "ee1", r"drives 2 arm\(s\); the controller has 1"),
    ({"mode": "joint", "arms": 1, "dim": 14}, "ee1", "needs a 'joint' arm"),
    ({"mode": "joint", "arms": 1, "dim": 14}, "joint2grippers", r"drives 1 gripper\(s\); the trajectory holds 2"),
    ({"mode": "ee6d", "arms": 1, "dim": 8}, "ee1", "action.dim 8 is narrower than the ee6d layout"),
])
def test_a_trajectory_the_bundle_cannot_take_is_refused(action: dict, commands: str, named: str) -> None:
    times = chunk_timestamps(0.0, 1.0, 2)
    trajectory = {
        "ee1": lambda: Trajectory.ee(times, np.zeros((2, 3)), np.tile([0, 0, 0, 1.0], (2, 1)), [0.5, 0.5]),
        "joint1": lambda: Trajectory.joint(times, np.zeros((2, 6)), [0.5, 0.5]),
        "joint2grippers": lambda: Trajectory.joint(times, np.zeros((2, 6)), np.full((2, 2), 0.5)),
    }[commands]()
    with pytest.raises(BridgeError, match=named):
        trajectory_to_rows(trajectory, action)
