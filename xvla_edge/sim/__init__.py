"""A simulated tabletop task for a trained X-VLA: scene, scripted expert, training and evaluation.

numpy + Pillow only below the training module: the scene renders with Pillow's 2-D drawing (no GPU, no
OpenGL) and is deterministic given a seed. See :mod:`xvla_edge.sim.scene` for the task. The trained
checkpoint ships in :data:`CHECKPOINT_DIR` (official file layout, with ``PROVENANCE.json``).
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoint"
