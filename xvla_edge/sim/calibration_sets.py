"""Observations of the simulated task as a calibration set (for ``xvla-edge quantize`` and
``calibrate check``): camera images, instructions and proprio from expert episodes with evaluation seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xvla_edge.sim.demonstrations import DOMAIN_ID, VIEWS, episode
from xvla_edge.sim.scene import RENDER_SIDE


def write_calibration_set(out: Path, *, count: int = 256, seed: int = 0, force: bool = False) -> Path:
    """``count`` observations, evenly spread over expert episodes ``seed``, ``seed + 1``, … (camera-sized
    images, as the policy sees them before its own preprocessing)."""
    from calibration.sets import CalibrationSet, write_set
    from xvla_edge.sim.evaluate import EvaluationError, check_count

    count = check_count("--count", count, 1, 4096)
    seed = check_count("--seed", seed, 0, 9_000_000)
    images, proprio, instructions = [], [], []
    s = seed
    while len(images) < count:
        scene, ims, props, _, _ = episode(s, RENDER_SIDE)
        take = np.linspace(0, len(ims) - 1, min(8, len(ims))).round().astype(int)
        images += [ims[k] for k in take]
        proprio += [props[k] for k in take]
        instructions += [scene.instruction] * len(take)
        s += 1
    if not images:
        raise EvaluationError("no observations collected")
    n = count
    mask = np.zeros((n, 3), bool)
    mask[:, :VIEWS] = True
    stacked = np.stack(images[:n])  # [n, views, S, S, 3]
    calib = CalibrationSet(images={k: np.ascontiguousarray(stacked[:, k]) for k in range(VIEWS)}, view_mask=mask, proprio=np.stack(proprio[:n]),
                           instructions=tuple(instructions[:n]), domain_ids=np.full(n, DOMAIN_ID, np.int64),
                           seeds=np.arange(seed, seed + n, dtype=np.int64),
                           source={"kind": "xvla-edge sim", "episode_seeds": [seed, s - 1]})
    return write_set(calib, out, force=force)
