"""State-dict key mapping between checkpoint layouts and our module tree.

Official X-VLA checkpoints use the vendored Florence-2 names (``vlm.*``); LeRobot ones add a ``model.``
prefix. Our ``vlm`` is built from transformers' native modules, whose names differ:

| official (vendored)                                        | ours (native modules)                                 |
|------------------------------------------------------------|-------------------------------------------------------|
| vlm.vision_tower.convs.S.proj.*                            | vlm.vision_tower.convs.S.conv.*                       |
| ...blocks.S.J.spatial_block.conv1.fn.dw.*                  | ...blocks.S.J.spatial_block.conv1.*                   |
| ...spatial_block.window_attn.norm.* / .fn.qkv / .fn.proj   | ...spatial_block.norm1.* / .window_attn.qkv / .proj   |
| ...spatial_block.conv2.fn.dw.*                             | ...spatial_block.conv2.*                              |
| ...spatial_block.ffn.norm.* / .ffn.fn.net.fc1 / fc2        | ...spatial_block.norm2.* / .ffn.fc1 / fc2             |
| (channel_block likewise, with channel_attn)                |                                                       |
| vlm.image_pos_embed.*                                      | vlm.multi_modal_projector.image_position_embed.*      |
| vlm.visual_temporal_embed.*                                | vlm.multi_modal_projector.visual_temporal_embed.*     |
| vlm.image_projection  [vision_dim, P]  (x @ P)             | vlm.multi_modal_projector.image_projection.weight [P, vision_dim] (transposed) |
| vlm.image_proj_norm.*                                      | vlm.multi_modal_projector.image_proj_norm.*           |
| vlm.language_model.model.shared / encoder.embed_tokens     | vlm.language_encoder.embed_tokens (tied: either one)  |
| vlm.language_model.model.encoder.*                         | vlm.language_encoder.*                                |
| vlm.language_model.final_logits_bias, decoder.*, lm_head.* | dropped (generation only)                             |
| transformer.*                                              | transformer.* (unchanged)                             |
"""

from __future__ import annotations

import re

import torch

# (pattern on an official key, replacement giving our key); applied in order, first match wins.
_VISION_RULES = [
    (r"^vlm\.vision_tower\.convs\.(\d+)\.proj\.", r"vlm.vision_tower.convs.\1.conv."),
    (r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block)\.conv([12])\.fn\.dw\.", r"\1.conv\2."),
    (r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.spatial_block)\.window_attn\.norm\.", r"\1.norm1."),
    (r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.channel_block)\.channel_attn\.norm\.", r"\1.norm1."),
    (r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block)\.(window_attn|channel_attn)\.fn\.", r"\1.\2."),
    (r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block)\.ffn\.norm\.", r"\1.norm2."),
    (r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block)\.ffn\.fn\.net\.", r"\1.ffn."),
    (r"^vlm\.image_pos_embed\.", "vlm.multi_modal_projector.image_position_embed."),
    (r"^vlm\.visual_temporal_embed\.", "vlm.multi_modal_projector.visual_temporal_embed."),
    (r"^vlm\.image_proj_norm\.", "vlm.multi_modal_projector.image_proj_norm."),
    (r"^vlm\.language_model\.model\.shared\.weight$", "vlm.language_encoder.embed_tokens.weight"),
    (r"^vlm\.language_model\.model\.encoder\.", "vlm.language_encoder."),
]
_VISION_RULES_C = [(re.compile(p), r) for p, r in _VISION_RULES]

IMAGE_PROJECTION_KEY = "vlm.image_projection"
OUR_IMAGE_PROJECTION_KEY = "vlm.multi_modal_projector.image_projection.weight"
_DROPPED = re.compile(r"^vlm\.language_model\.(final_logits_bias|lm_head\.|model\.decoder\.)")
# Keys of the native Florence-2 layout (a checkpoint saved by a native-modules port).
_NATIVE_RULES_C = [
    (re.compile(r"^vlm\.(?:model\.)?vision_tower\."), "vlm.vision_tower."),
    (re.compile(r"^vlm\.(?:model\.)?multi_modal_projector\."), "vlm.multi_modal_projector."),
    (re.compile(r"^vlm\.(?:model\.)?language_model\.(?:model\.)?shared\.weight$"), "vlm.language_encoder.embed_tokens.weight"),
    (re.compile(r"^vlm\.(?:model\.)?language_model\.(?:model\.)?encoder\."), "vlm.language_encoder."),
]
_NATIVE_DROPPED = re.compile(r"^vlm\.(?:model\.)?language_model\.(?:model\.)?decoder\.|^vlm\.lm_head\.|final_logits_bias")


def strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove LeRobot's ``model.`` prefix when every key carries it."""
    if state and all(k.startswith("model.") for k in state):
        return {k[len("model."):]: v for k, v in state.items()}
    return state


def is_native_layout(state: dict[str, torch.Tensor]) -> bool:
    """True when the Florence-2 keys already follow transformers' native module names."""
    return any(".multi_modal_projector." in k or re.search(r"vision_tower\.convs\.\d+\.conv\.", k) for k in state)


def to_ours(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map a checkpoint's keys (official, LeRobot or native) to ours. Returns (mapped, dropped keys)."""
    state = strip_prefix(state)
    native = is_native_layout(state)
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        new = map_key(key, native=native)
        if new is None:
            dropped.append(key)
            continue
        if is_transposed(key, native=native):
            value = value.t().contiguous() if value.dim() == 2 else value
        if new == "vlm.language_encoder.embed_tokens.weight" and new in out:
            continue  # tied alias of the token embedding (one tensor in the official model)
        out[new] = value
    return out, dropped


def map_key(key: str, *, native: bool = False) -> str | None:
    """Our key for one checkpoint key without LeRobot's prefix (None: a generation-only key we drop).

    ``native``: the checkpoint follows transformers' native Florence-2 names (:func:`is_native_layout`).
    """
    rules, dropped_re = (_NATIVE_RULES_C, _NATIVE_DROPPED) if native else (_VISION_RULES_C, _DROPPED)
    if dropped_re.search(key):
        return None
    if is_transposed(key, native=native):
        return OUR_IMAGE_PROJECTION_KEY
    for pattern, repl in rules:
        if pattern.search(key):
            return pattern.sub(repl, key)
    return key


def is_transposed(key: str, *, native: bool = False) -> bool:
    """True for the one tensor whose layout is transposed in ours (the official [in, out] image projection)."""
    return key == IMAGE_PROJECTION_KEY and not native


def to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict → the official checkpoint layout (used to write checkpoints in that layout)."""
    inverse = [
        (r"^vlm\.vision_tower\.convs\.(\d+)\.conv\.", r"vlm.vision_tower.convs.\1.proj."),
        (r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block)\.conv([12])\.", r"\1.conv\2.fn.dw."),
        (r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.spatial_block)\.norm1\.", r"\1.window_attn.norm."),
        (r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.channel_block)\.norm1\.", r"\1.channel_attn.norm."),
        (r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block)\.(window_attn|channel_attn)\.", r"\1.\2.fn."),
        (r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block)\.norm2\.", r"\1.ffn.norm."),
        (r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block)\.ffn\.", r"\1.ffn.fn.net."),
        (r"^vlm\.multi_modal_projector\.image_position_embed\.", "vlm.image_pos_embed."),
        (r"^vlm\.multi_modal_projector\.visual_temporal_embed\.", "vlm.visual_temporal_embed."),
        (r"^vlm\.multi_modal_projector\.image_proj_norm\.", "vlm.image_proj_norm."),
        (r"^vlm\.language_encoder\.embed_tokens\.weight$", "vlm.language_model.model.shared.weight"),
        (r"^vlm\.language_encoder\.", "vlm.language_model.model.encoder."),
    ]
    rules = [(re.compile(p), r) for p, r in inverse]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == OUR_IMAGE_PROJECTION_KEY:
            out[IMAGE_PROJECTION_KEY] = value.t().contiguous()
            continue
        new = key
        for pattern, repl in rules:
            if pattern.search(new):
                new = pattern.sub(repl, new)
                break
        out[new] = value
    return out
