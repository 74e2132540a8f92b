"""The commands the arm will execute back to rows in the model's action layout (real-time chunking's prefix): a
round trip both ways through the model's output transform, the runtime's decoding and :func:`chunk_to_trajectory`,
for every action mode and rot6d layout the bridge drives."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.control.trajectory import Trajectory
from runtime.decode import chunk_timestamps
from xvla_edge.daemon.bridge import GRIPPER_EPS, BridgeError, chunk_to_trajectory, trajectory_to_rows

from tests.support.action_rows import CASES, SQUASHED, T, chunk_of, manifest_action, model_rows

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
