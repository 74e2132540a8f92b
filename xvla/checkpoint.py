"""Load an X-VLA checkpoint directory (official, LeRobot or written by :mod:`xvla.random_checkpoint`).

A checkpoint directory holds ``config.json`` and ``model.safetensors`` (or a sharded
``model.safetensors.index.json``), plus the tokenizer and ``preprocessor_config.json`` that
:mod:`xvla.preprocessing` reads. Every key is mapped (:mod:`xvla.keymap`) and checked against the model
built from the config: missing, unexpected and mis-shaped weights are reported by name before anything
is loaded. ``lora=`` merges a PEFT LoRA adapter (:mod:`xvla.lora`) into the weights before they are loaded.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from xvla.config import load_config
from xvla.constants import ADAPTER_WEIGHTS, INDEX_FILE, WEIGHTS_FILE
from xvla.errors import CheckpointError
from xvla.keymap import is_transposed, map_key, to_ours
from xvla.lora import PEFT_PREFIX, LoraAdapter, read_adapter
from xvla.model import XVLA

log = logging.getLogger(__name__)

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


def merge_adapter(mapped: dict[str, torch.Tensor], adapter: LoraAdapter) -> dict[str, torch.Tensor]:
    """``mapped`` (a checkpoint's weights, our keys) with ``adapter`` merged, as PEFT's ``merge_and_unload`` does.

    Each adapted layer's weight becomes W + (lora_alpha / r) · (B @ A), computed in float32 in that order; each
    saved parameter of ``modules_to_save`` replaces the base's. The adapter's keys are mapped like the
    checkpoint's (:mod:`xvla.keymap`); one that names no tensor of the base, or a tensor of another shape, is a
    :class:`CheckpointError`.
    """
    where = adapter.directory / ADAPTER_WEIGHTS
    names = [*(f"{m}.weight" for m in adapter.pairs), *adapter.saved]
    lerobot = all(n.startswith("model.") for n in names)  # trained on a LeRobot policy: the same prefix

    def ours(name: str, shape: tuple[int, ...]) -> tuple[str, bool]:
        key = name[len("model."):] if lerobot else name
        new = map_key(key)
        if new is None or new not in mapped:
            raise CheckpointError(f"{where}: {PEFT_PREFIX}{name} matches no weight of the base checkpoint"
                                  + (f" (looked for {new})" if new else " (a generation-only layer)"))
        transposed = is_transposed(key)
        want = tuple(mapped[new].shape[::-1] if transposed else mapped[new].shape)
        if shape != want:
            raise CheckpointError(f"{where}: {PEFT_PREFIX}{name} gives a {list(shape)} update; the base's {new} is "
                                  f"{list(want)} (an adapter made for another model?)")
        return new, transposed

    merged = dict(mapped)
    for module, (a, b) in adapter.pairs.items():
        delta = (torch.from_numpy(b) @ torch.from_numpy(a)) * adapter.scale
        key, transposed = ours(f"{module}.weight", tuple(delta.shape))
        merged[key] = merged[key].to(torch.float32) + (delta.t() if transposed else delta)
    for name, value in adapter.saved.items():
        key, transposed = ours(name, value.shape)
        merged[key] = torch.from_numpy(value.T.copy() if transposed else value.copy())
    return merged


def load_checkpoint(ckpt_dir: str | Path, *, lora: str | Path | LoraAdapter | None = None,
                    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> XVLA:
    """The model of a checkpoint directory, in eval mode, on ``device`` in ``dtype``.

    ``lora``: a PEFT LoRA adapter directory (or one already read) merged into the weights (:func:`merge_adapter`).
    """
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        raise CheckpointError(f"{ckpt_dir}: checkpoint directory not found")
    cfg = load_config(ckpt_dir)
    adapter = lora if isinstance(lora, LoraAdapter) or lora is None else read_adapter(lora)
    state = read_weights(ckpt_dir)
    mapped, _ = to_ours(state)
    model = XVLA(cfg)
    expected = model.state_dict()
    check_state(mapped, expected, ckpt_dir / WEIGHTS_FILE)
    if adapter is not None:
        if (warning := adapter.base_warning(ckpt_dir)) is not None:
            log.warning(warning)
        mapped = merge_adapter(mapped, adapter)
    for k, v in mapped.items():
        if not (v.is_floating_point() and expected[k].is_floating_point()):
            raise CheckpointError(f"{ckpt_dir / WEIGHTS_FILE}: {k} has dtype {v.dtype}; expected floating point")
    model.load_state_dict({k: v.to(torch.float32) for k, v in mapped.items()}, strict=False)
    return model.to(device=device, dtype=dtype).eval()


def _clip(items: list[str], n: int = 8) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")
