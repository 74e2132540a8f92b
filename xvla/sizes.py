"""The named model sizes of random-weight checkpoints, benchmarks and tests (torch-free).

``tiny`` (seconds on a CPU; 64² images), ``sim`` (the simulated-task policy trained on a CPU by
``xvla-edge sim train``: 64² images on a 4×4 grid — the last stage does not downsample, so block positions
stay resolvable — a wider action transformer than tiny, and instructions of at most 8 tokens: the task's
longest is 7, and padding to 50 would bury the one word that names the block among 43 pad tokens),
``small`` (the real token layout: 224² images, 50 tokens per view, 262-token action sequence, narrow layers) and ``full`` (the published 0.9B configuration).
"""

from __future__ import annotations

import dataclasses

from xvla.config import TextConfig, VisionConfig, XVLAConfig

SIZES: dict[str, tuple[XVLAConfig, int]] = {
    "tiny": (
        XVLAConfig(
            vision=VisionConfig(embed_dim=(16, 32, 64, 128), depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 4),
                                num_groups=(1, 1, 2, 4), window_size=3),
            text=TextConfig(vocab_size=1000, d_model=32, encoder_layers=2, encoder_attention_heads=4,
                            encoder_ffn_dim=64, max_position_embeddings=64),
            projection_dim=32, hidden_size=32, depth=2, num_heads=4,
        ),
        64,
    ),
    "small": (
        XVLAConfig(
            vision=VisionConfig(embed_dim=(32, 64, 128, 256), depths=(1, 1, 3, 1), num_heads=(1, 2, 4, 8),
                                num_groups=(1, 2, 4, 8), window_size=12),
            text=TextConfig(vocab_size=51289, d_model=256, encoder_layers=4, encoder_attention_heads=8,
                            encoder_ffn_dim=1024, max_position_embeddings=1024),
            projection_dim=256, hidden_size=256, depth=6, num_heads=8,
        ),
        224,
    ),
    "sim": (
        XVLAConfig(
            vision=VisionConfig(embed_dim=(16, 32, 64, 128), depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 4),
                                num_groups=(1, 2, 4, 4), window_size=4, patch_stride=(4, 2, 2, 1)),
            text=TextConfig(vocab_size=512, d_model=64, encoder_layers=2, encoder_attention_heads=4,
                            encoder_ffn_dim=128, max_position_embeddings=128),
            projection_dim=64, hidden_size=96, depth=3, num_heads=4, text_tokens=8,
        ),
        64,
    ),
    "full": (XVLAConfig(), 224),
}

def size_config(size: str, **overrides: object) -> tuple[XVLAConfig, int]:
    """(config, image side) of a named size, with XVLAConfig fields overridden (e.g. action_mode)."""
    if size not in SIZES:
        raise ValueError(f"unknown checkpoint size {size!r}; expected one of {sorted(SIZES)}")
    cfg, image_size = SIZES[size]
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    return cfg, image_size
