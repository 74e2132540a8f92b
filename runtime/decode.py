"""Turn a raw action chunk into per-arm poses and time stamps, as the bundle's manifest describes it."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from runtime.types import ArmPoses
from xvla.rotations import rot6d_to_matrix


def chunk_timestamps(observation_time: float, chunk_seconds: float, length: int) -> np.ndarray:
    """Action i (1-based) of a chunk is due at observation_time + i · chunk_seconds / length.

    The training data put the proprio at the window's start and the actions at the following ``length``
    evenly spaced points of a ``chunk_seconds`` window.
    """
    return observation_time + chunk_seconds * np.arange(1, length + 1) / length


def decode_arms(actions: np.ndarray, action: dict) -> tuple[ArmPoses, ...]:
    """Per-arm poses of ``actions`` [T, dim] for the manifest's ``action`` section (``auto``: none)."""
    mode, arms, layout = action["mode"], int(action.get("arms", 1)), action.get("rot6d_layout", "rows")
    out = []
    for arm in range(arms):
        if mode in ("ee6d", "agibot_ee6d"):
            base = 10 * arm
            rot = rot6d_to_matrix(actions[:, base + 3 : base + 9], layout)
            out.append(ArmPoses(gripper=actions[:, base + 9].copy(), position=actions[:, base : base + 3].copy(),
                                rotation=rot, quaternion=Rotation.from_matrix(rot).as_quat()))
        elif mode == "joint":
            base = 7 * arm
            out.append(ArmPoses(gripper=actions[:, base + 6].copy(), joints=actions[:, base : base + 6].copy()))
    return tuple(out)
