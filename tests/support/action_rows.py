"""Chunks in the model's action layout for the bridge's tests (and real-time chunking's): smooth network rows per
action mode and rot6d layout, and what the policy hands the daemon for them."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from runtime.decode import chunk_timestamps, decode_arms
from runtime.types import ActionChunk
from xvla.rotations import matrix_to_rot6d

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


def chunk_of(rows: np.ndarray, action: dict, obs_time: float = 100.0) -> ActionChunk:
    """What the policy hands the daemon for these network rows, observed at ``obs_time`` (a chunk of 1 s): the
    output transform, then the decoding."""
    out = rows.copy()
    for c in SQUASHED[action["mode"]]:
        out[:, c] = 1 / (1 + np.exp(-out[:, c]))
    return ActionChunk(actions=out, timestamps=chunk_timestamps(obs_time, 1.0, T), arms=decode_arms(out, action),
                       observation_timestamp=obs_time)
