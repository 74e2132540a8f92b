"""Random model inputs of the right shapes for a (tiny) X-VLA network: what the sampler tests feed it."""

from __future__ import annotations

from typing import Any

import torch


def inputs(model: Any, B: int = 1, views: tuple[bool, ...] = (True, True, True), seed: int = 0) -> dict:
    """``generate_actions`` keyword arguments for ``B`` samples: 50 token ids (bos, 19 words, eos, padding),
    64² images for the three view slots with ``views`` as the mask, domains 0, 1, ..., a random proprio."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    ids = torch.randint(3, cfg.text.vocab_size, (B, 50), generator=g)
    ids[:, 0], ids[:, 20], ids[:, 21:] = 0, 2, 1
    return dict(
        input_ids=ids, image_input=torch.randn(B, 3, 3, 64, 64, generator=g),
        image_mask=torch.tensor([list(views)] * B), domain_id=torch.arange(B) % cfg.num_domains,
        proprio=torch.randn(B, cfg.dim_action, generator=g),
    )


def restated_sampler(model: Any, inp: dict, noise: torch.Tensor, steps: int,
                     mix: Any = None) -> torch.Tensor:
    """The released sampler written out from its definition (not an Euler step): the network predicts the clean
    chunk, which is re-noised with the same ``noise`` at the next time; gripper channels 9/19 zeroed in x_t and
    proprio, a sigmoid on them at the end. ``mix(a)``, if given, is applied to each prediction before re-noising."""
    with torch.no_grad():
        vlm, aux = model.encode(inp["input_ids"], inp["image_input"], inp["image_mask"])
        keep = torch.ones(noise.shape[-1])
        keep[[9, 19]] = 0
        a = torch.zeros_like(noise)
        for i in range(steps, 0, -1):
            t = torch.tensor([i / steps])
            x_t = t * noise + (1 - t) * a
            a = model.transformer(inp["domain_id"], vlm, aux, x_t * keep, inp["proprio"] * keep, t)
            if mix is not None:
                a = mix(a)
        a[..., [9, 19]] = torch.sigmoid(a[..., [9, 19]])
    return a
