"""Load an X-VLA checkpoint directory (official, LeRobot or written by :mod:`xvla.random_checkpoint`).

A checkpoint directory holds ``config.json`` and ``model.safetensors`` (or a sharded
``model.safetensors.index.json``), plus the tokenizer and ``preprocessor_config.json`` that
:mod:`xvla.preprocessing` reads. Every key is mapped (:mod:`xvla.keymap`) and checked against the model
built from the config: missing, unexpected and mis-shaped weights are reported by name before anything
is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from xvla.config import load_config
from xvla.constants import INDEX_FILE, WEIGHTS_FILE
from xvla.errors import CheckpointError
from xvla.keymap import to_ours
from xvla.model import XVLA

# Buffers that are a pure function of the config; a checkpoint may or may not store them.
_COMPUTED_BUFFERS = {"vlm.multi_modal_projector.visual_temporal_embed.pos_idx_to_embed"}


def read_weights(ckpt_dir: Path) -> dict[str, torch.Tensor]:
    """All tensors of the checkpoint, from one safetensors file or a sharded index."""
    single, index = ckpt_dir / WEIGHTS_FILE, ckpt_dir / INDEX_FILE
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, KeyError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{index}: unreadable shard index ({e!r}); expected a 'weight_map' object") from None
        files = [ckpt_dir / name for name in sorted(set(weight_map.values()))]
    else:
        raise CheckpointError(f"{ckpt_dir}: no {WEIGHTS_FILE} (or {INDEX_FILE}) found")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"{f}: weight shard listed in {INDEX_FILE} is missing")
        try:
            state.update(load_file(str(f)))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{f}: not a readable safetensors file ({e})") from None
    return state


def check_state(mapped: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: Path) -> None:
    """Raise one :class:`CheckpointError` listing every missing, unexpected or mis-shaped key."""
    missing = sorted(set(expected) - set(mapped) - _COMPUTED_BUFFERS)
    unexpected = sorted(set(mapped) - set(expected))
    shapes = [
        f"{k}: expected {list(expected[k].shape)}, found {list(mapped[k].shape)}"
        for k in sorted(set(mapped) & set(expected))
        if tuple(mapped[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_clip(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_clip(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): {_clip(shapes)}")
    if problems:
        raise CheckpointError(f"{source}: weights do not match config.json — " + "; ".join(problems))


def load_checkpoint(ckpt_dir: str | Path, *, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> XVLA:
    """The model of a checkpoint directory, in eval mode, on ``device`` in ``dtype``."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        raise CheckpointError(f"{ckpt_dir}: checkpoint directory not found")
    cfg = load_config(ckpt_dir)
    state = read_weights(ckpt_dir)
    mapped, _ = to_ours(state)
    model = XVLA(cfg)
    expected = model.state_dict()
    check_state(mapped, expected, ckpt_dir / WEIGHTS_FILE)
    for k, v in mapped.items():
        if not (v.is_floating_point() and expected[k].is_floating_point()):
            raise CheckpointError(f"{ckpt_dir / WEIGHTS_FILE}: {k} has dtype {v.dtype}; expected floating point")
    model.load_state_dict({k: v.to(torch.float32) for k, v in mapped.items()}, strict=False)
    return model.to(device=device, dtype=dtype).eval()


def _clip(items: list[str], n: int = 8) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")
