"""The X-VLA network and its reference sampler.

Sampler (the released one, *not* an Euler ODE step): the network predicts the clean chunk a (x0);
with x1 ~ N(0, I) drawn once and a = 0, for i = steps .. 1: t = i/steps, x_t = t·x1 + (1 − t)·a,
zero the gripper channels of x_t and proprio (per action mode), a = net(x_t, proprio, t). The result is
post-processed per action mode (sigmoid on gripper logits for ee6d/joint).

Real-time chunking (:mod:`xvla.realtime_chunking`): with a committed ``prefix`` and row ``weights``, every
prediction is mixed row by row, a = w·prefix + (1 − w)·a, before it is re-noised (and after the last step), in the
model's own representation (gripper channels as logits). All-zero weights give today's chunk bit for bit.
"""

from __future__ import annotations

import torch
from torch import nn

from xvla import realtime_chunking
from xvla.action_head import SoftPromptedTransformer
from xvla.action_space import ActionSpace
from xvla.config import XVLAConfig
from xvla.constants import MAX_STEPS
from xvla.errors import InputError
from xvla.florence import VisionLanguageEncoder



class XVLA(nn.Module):
    """Florence-2 encoder side (``vlm``) + soft-prompted action transformer (``transformer``)."""

    def __init__(self, cfg: XVLAConfig) -> None:
        super().__init__()
        self.config = cfg
        self.action_space = ActionSpace.from_config(cfg)
        self.vlm = VisionLanguageEncoder(cfg)
        self.transformer = SoftPromptedTransformer(cfg)

    # ----------------------------------------------------------------------------------------------
    def check_inputs(self, input_ids: torch.Tensor, image_input: torch.Tensor, image_mask: torch.Tensor,
                     domain_id: torch.Tensor, proprio: torch.Tensor, noise: torch.Tensor | None) -> None:
        """Raise :class:`InputError` naming the argument, expected and found shape/dtype/value."""
        cfg = self.config
        def fail(msg: str) -> None:
            raise InputError(msg)
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype not in (torch.int64, torch.int32):
            fail(f"input_ids must be an integer tensor [B, L]; got {_describe(input_ids)}")
        B, L = input_ids.shape
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= cfg.text.vocab_size):
            fail(f"input_ids values must be in [0, {cfg.text.vocab_size}); got min {int(input_ids.min())}, "
                 f"max {int(input_ids.max())}")
        S = cfg.view_slots
        if not isinstance(image_input, torch.Tensor) or image_input.dim() != 5 or image_input.shape[:3] != (B, S, 3):
            fail(f"image_input must be [B={B}, {S}, 3, H, W]; got {_describe(image_input)}")
        if not image_input.is_floating_point():
            fail(f"image_input must be normalised floating-point pixels; got dtype {image_input.dtype}")
        H, W = image_input.shape[-2:]
        stride = cfg.vision.stride
        if H != W or H % stride:
            fail(f"image_input must be square with a side divisible by {stride}; got {H}x{W}")
        if H // stride > cfg.vision.max_pos_embeddings:
            fail(f"image side {H} gives a {H // stride}-cell grid; the image position table holds "
                 f"{cfg.vision.max_pos_embeddings}")
        if not isinstance(image_mask, torch.Tensor) or tuple(image_mask.shape) != (B, S):
            fail(f"image_mask must be [B={B}, {S}]; got {_describe(image_mask)}")
        if not bool(image_mask.bool().any(dim=1).all()):
            fail("image_mask: every sample needs at least one valid view")
        if not isinstance(domain_id, torch.Tensor) or tuple(domain_id.shape) != (B,):
            fail(f"domain_id must be [B={B}]; got {_describe(domain_id)}")
        if int(domain_id.min()) < 0 or int(domain_id.max()) >= cfg.num_domains:
            fail(f"domain_id values must be in [0, {cfg.num_domains}); got {domain_id.tolist()}")
        A, P = cfg.dim_action, cfg.dim_proprio
        if not isinstance(proprio, torch.Tensor) or tuple(proprio.shape) != (B, P):
            fail(f"proprio must be [B={B}, {P}] for action_mode {cfg.action_mode!r}"
                 f"{' (proprio width ' + str(P) + ')' if P != A else ''}; got {_describe(proprio)}")
        if noise is not None and (not isinstance(noise, torch.Tensor) or tuple(noise.shape) != (B, cfg.num_actions, A)):
            fail(f"noise must be [B={B}, {cfg.num_actions}, {A}]; got {_describe(noise)}")
        n_img = cfg.tokens_per_view(H)
        if n_img + L > cfg.text.max_position_embeddings:
            fail(f"input_ids has {L} tokens; with {n_img} image tokens that exceeds the text encoder's "
                 f"{cfg.text.max_position_embeddings} positions")
        seq = cfg.num_actions + n_img + L + (S - 1) * n_img
        if seq > cfg.max_len_seq:
            fail(f"input_ids has {L} tokens: {cfg.num_actions} actions + {n_img + L} VLM + "
                 f"{(S - 1) * n_img} aux tokens = {seq} exceeds max_len_seq {cfg.max_len_seq}")

    # ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, input_ids: torch.Tensor, image_input: torch.Tensor,
               image_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(vlm_features, aux_visual_inputs): everything computed once per observation."""
        return self.vlm(input_ids, image_input, image_mask)

    def denoise_step(self, enc: tuple[torch.Tensor, torch.Tensor], x_t: torch.Tensor, proprio: torch.Tensor,
                     t: torch.Tensor, domain_id: torch.Tensor) -> torch.Tensor:
        """One network call: the predicted clean chunk [B, T, A] (before post-processing)."""
        proprio_m, x_t_m = self.action_space.preprocess(proprio, x_t)
        return self.transformer(domain_id, enc[0], enc[1], x_t_m, proprio_m, t)

    def check_prefix(self, prefix: torch.Tensor | None, weights: torch.Tensor | None, batch: int) -> None:
        """Raise :class:`InputError` unless ``prefix`` [B, num_actions, dim_action] and ``weights`` [B, num_actions]
        are given together and each sample passes :func:`xvla.realtime_chunking.check_prefix`."""
        if (prefix is None) != (weights is None):
            raise InputError("prefix and weights: expected both (real-time chunking) or neither; got only "
                             + ("prefix" if weights is None else "weights"))
        if prefix is None:
            return
        T, A = self.config.num_actions, self.config.dim_action
        if not isinstance(prefix, torch.Tensor) or tuple(prefix.shape) != (batch, T, A):
            raise InputError(f"prefix must be [B={batch}, {T}, {A}]; got {_describe(prefix)}")
        if not isinstance(weights, torch.Tensor) or tuple(weights.shape) != (batch, T):
            raise InputError(f"weights must be [B={batch}, {T}]; got {_describe(weights)}")
        for b in range(batch):
            realtime_chunking.check_prefix(prefix[b].detach().cpu().double().numpy(),
                                           weights[b].detach().cpu().double().numpy(), length=T, dim=A,
                                           where=f"prefix[{b}]")

    @torch.no_grad()
    def generate_actions(self, input_ids: torch.Tensor, image_input: torch.Tensor, image_mask: torch.Tensor,
                         domain_id: torch.Tensor, proprio: torch.Tensor, steps: int = 10,
                         noise: torch.Tensor | None = None, *, prefix: torch.Tensor | None = None,
                         weights: torch.Tensor | None = None) -> torch.Tensor:
        """Sample one action chunk [B, num_actions, output_dim].

        ``noise`` [B, num_actions, dim_action] replaces the random draw of x1 (for parity across
        implementations). ``steps`` ≥ 1 network calls at t = 1, (steps−1)/steps, ..., 1/steps. ``prefix``
        [B, num_actions, dim_action] (the model's representation, before post-processing) with row ``weights``
        [B, num_actions] (see :mod:`xvla.realtime_chunking`) steers the chunk to continue a committed one.
        """
        self.check_inputs(input_ids, image_input, image_mask, domain_id, proprio, noise)
        self.check_prefix(prefix, weights, input_ids.shape[0])
        if not 1 <= int(steps) <= MAX_STEPS:
            raise InputError(f"steps = {steps!r}: expected an integer 1 ... {MAX_STEPS}")
        steps = int(steps)
        enc = self.encode(input_ids, image_input, image_mask)
        B, cfg = input_ids.shape[0], self.config
        x1 = noise if noise is not None else torch.randn(B, cfg.num_actions, cfg.dim_action, dtype=proprio.dtype)
        x1 = x1.to(device=proprio.device, dtype=proprio.dtype)
        action = torch.zeros_like(x1)
        if prefix is not None:
            prefix = prefix.to(device=x1.device, dtype=x1.dtype)
            weights = weights.to(device=x1.device, dtype=x1.dtype)
        for i in range(steps, 0, -1):
            t = torch.full((B,), i / steps, device=proprio.device, dtype=proprio.dtype)
            x_t = x1 * t.view(-1, 1, 1) + action * (1 - t).view(-1, 1, 1)
            action = self.denoise_step(enc, x_t, proprio, t, domain_id)
            if prefix is not None:
                action = mix_prefix(action, prefix, weights)
        return self.action_space.postprocess(action)


def mix_prefix(action: torch.Tensor, prefix: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Real-time chunking's mix of a predicted clean chunk ``action`` [B, T, A] with the committed ``prefix``
    [B, T, A]: ``w * prefix + (1 - w) * action`` with the row ``weights`` [B, T] (a weight of 0 returns the row
    unchanged, bit for bit; a weight of 1 returns the prefix row)."""
    w = weights.unsqueeze(-1)
    return w * prefix + (1 - w) * action


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {list(x.shape)} and dtype {x.dtype}"
    return type(x).__name__
