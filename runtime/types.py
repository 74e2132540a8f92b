"""What goes into a policy and what comes out: observations and time-stamped action chunks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


@dataclass
class Observation:
    """One observation of the robot.

    ``images``: up to 3 HxWx3 uint8 RGB arrays (any size; None = view absent), main view first.
    ``proprio``: the current state in the action layout (``manifest.inputs.proprio_dim`` values).
    ``timestamp``: when the images were taken (seconds, the clock the driver uses; monotonic).
    ``noise``: optional [chunk_length, dim] initial noise, to reproduce a chunk exactly.
    """

    images: Sequence[np.ndarray | None]
    instruction: str
    proprio: np.ndarray
    timestamp: float = 0.0
    noise: np.ndarray | None = None


@dataclass(frozen=True)
class ArmPoses:
    """One arm's decoded targets over a chunk (ee modes: position/rotation; joint mode: joints)."""

    gripper: np.ndarray  # [T] in 0..1 (ee6d/joint: sigmoid output; agibot: the raw regression value)
    position: np.ndarray | None = None  # [T, 3] metres
    rotation: np.ndarray | None = None  # [T, 3, 3]
    quaternion: np.ndarray | None = None  # [T, 4] scipy order (x, y, z, w)
    joints: np.ndarray | None = None  # [T, 6] radians


@dataclass(frozen=True)
class ActionChunk:
    """``actions`` [T, output_dim] as the model gives them, their ``timestamps`` [T], decoded ``arms``."""

    actions: np.ndarray
    timestamps: np.ndarray
    arms: tuple[ArmPoses, ...]
    observation_timestamp: float
    timings: dict[str, float] = field(default_factory=dict)
