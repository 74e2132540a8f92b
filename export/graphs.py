"""The two torch modules a bundle is exported from: the per-observation encoder and one denoising step.

``EncoderGraph``  (pixel_values [1, V, 3, S, S], image_mask [1, V] bool, input_ids [1, L] int64)
                  → context [1, C, D]: DaViT + projector on the robot's V views (features × mask, so a
                  masked view contributes zero features), BART encoder over [main view | text],
                  ``vlm_proj`` / ``aux_visual_proj``, constant zero features for the 3 − V view slots the
                  robot does not have, and the positional embedding of the context tokens.
``DenoiseStepGraph`` (context, x1 [1, T, A], prev [1, T, A], proprio [1, P], t [1], prefix [1, T, A],
                  prefix_weights [1, T]; P: the proprio width)
                  → (x0 [1, T, A], action [1, T, out]): the re-noise x_t = t·x1 + (1 − t)·prev, the
                  action mode's gripper masking, the transformer with the chosen domain's soft prompt and
                  per-domain encoder/decoder weights folded in as constants (no domain-id input; the
                  other domains' rows are not in the graph), real-time chunking's mix of the predicted clean
                  chunk with the committed prefix, and the action mode's post-processing (``action``; the
                  runtime returns it after the last step and feeds ``x0`` back as ``prev``).
``ServerDenoiseStepGraph`` (the same inputs, ``domain_id`` [B] int64 before the prefix) → (x0, action): the
                  denoising step of a server bundle, which serves several domains from one backbone: the listed
                  domains' soft prompts and encoder/decoder weights are constants stacked one row per domain, and
                  each batch row gathers its own through a map from domain id to row (a batch may mix domains).
                  Domains not listed map past the last row, so ONNX Runtime refuses them rather than run another
                  row.

The prefix inputs (real-time chunking, :mod:`xvla.realtime_chunking`): ``prefix`` float32 [B, T, A], the committed
rows in the model's own representation (the network's width, gripper channels as logits), zeros past the
committed ones; ``prefix_weights`` float32 [B, T], each row's weight. The network's prediction is mixed row by row,
``x0 = w·prefix + (1 − w)·x0`` (:func:`xvla.model.mix_prefix`, the reference sampler's mix, after every network
call including the last), before the post-processing: the mixed ``x0`` is what the runtime feeds back as ``prev``
and what ``action`` decodes. All-zero weights give the graph's chunk without a prefix, bit for bit. A graph traced
without the two inputs (``prefix=None``; ``ExportOptions(prefix_inputs=False)``) is the denoise step of bundles
made before real-time chunking, kept to test that such bundles still run and to measure what the mix costs.
"""

from __future__ import annotations

import torch
from torch import nn

from xvla.action_head import timestep_embedding
from xvla.model import XVLA, mix_prefix


class EncoderGraph(nn.Module):
    def __init__(self, model: XVLA, num_views: int) -> None:
        super().__init__()
        slots = model.config.view_slots
        if not 1 <= num_views <= slots:
            raise ValueError(f"views must be 1..{slots} (the checkpoint's view slots); got {num_views}")
        self.vlm = model.vlm
        self.head = model.transformer
        self.num_views = num_views
        self.view_slots = slots
        self.num_actions = model.config.num_actions

    def forward(self, pixel_values: torch.Tensor, image_mask: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        B, V = pixel_values.shape[:2]
        feats = self.vlm.encode_images(pixel_values.flatten(0, 1))  # [B·V, N, P]
        N, P = feats.shape[1:]
        feats = feats.view(B, V, N, P) * image_mask.to(feats.dtype)[:, :, None, None]
        text = self.vlm.language_encoder.embed_tokens(input_ids)
        vlm_features = self.vlm.encode_text(torch.cat([feats[:, 0], text], dim=1))
        aux = feats[:, 1:].reshape(B, (V - 1) * N, P)
        if V < self.view_slots:  # the slots without a camera: zero features
            aux = torch.cat([aux, feats.new_zeros(B, (self.view_slots - V) * N, P)], dim=1)
        return self.head.context(vlm_features, aux, self.num_actions)


_WEIGHTS = ("w_enc", "b_enc", "w_dec", "b_dec", "prompts")  # the per-domain tensors, as domain_rows gives them


class _DenoiseStep(nn.Module):
    """What both denoising steps share: the re-noise, the gripper masking, the blocks and the post-processing,
    around per-domain weights the subclass supplies (one domain's, or each batch row's)."""

    def __init__(self, model: XVLA) -> None:
        super().__init__()
        cfg, head, space = model.config, model.transformer, model.action_space
        self.register_buffer("keep", space.keep_mask().clone())  # 0 on gripper channels
        self.register_buffer("keep_proprio", space.keep_mask(width=cfg.dim_proprio).clone())  # the same, proprio's width
        self.blocks = head.blocks
        self.norm = head.norm
        self.dim_time = cfg.dim_time
        self.squash_gripper = bool(space.gripper_channels)
        self.output_dim = space.output_dim

    @staticmethod
    def domain_rows(model: XVLA, domains: list[int]) -> tuple[torch.Tensor, ...]:
        """(w_enc [K, in, D], b_enc [K, T, D] with the action tokens' positions added, w_dec [K, D, A],
        b_dec [K, 1, A], prompts [K, len_soft_prompts, D]) of the K ``domains``, in that order."""
        cfg, head = model.config, model.transformer
        for d in domains:
            if not 0 <= d < cfg.num_domains:
                raise ValueError(f"domain_id must be in 0..{cfg.num_domains - 1}; got {d}")
        ids = torch.tensor(domains)
        with torch.no_grad():
            w_enc, b_enc = head.action_encoder.domain_weights(ids)
            w_dec, b_dec = head.action_decoder.domain_weights(ids)
            b_enc = b_enc[:, None, :] + head.pos_emb[:, : cfg.num_actions]  # bias + positions
            return tuple(w.clone() for w in (w_enc, b_enc, w_dec, b_dec[:, None, :], head.prompts(ids)))

    def step(self, context: torch.Tensor, x1: torch.Tensor, prev: torch.Tensor, proprio: torch.Tensor,
             t: torch.Tensor, weights: tuple[torch.Tensor, ...], prefix: torch.Tensor | None,
             prefix_weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``weights``: (w_enc, b_enc, w_dec, b_dec, prompts), each with a leading dimension of 1 or B; ``prefix``
        and ``prefix_weights``: the committed prefix mixed into the prediction (None: no mix, no such inputs)."""
        w_enc, b_enc, w_dec, b_dec, prompts = weights
        B, T, _ = x1.shape
        tt = t.view(-1, 1, 1)
        x_t = (x1 * tt + prev * (1 - tt)) * self.keep
        proprio = proprio * self.keep_proprio
        temb = timestep_embedding(t, self.dim_time)
        feats = torch.cat([x_t, proprio[:, None, :].expand(B, T, -1), temb[:, None, :].expand(B, T, -1)], dim=-1)
        tokens = feats @ w_enc + b_enc
        x = torch.cat([tokens, context, prompts.expand(B, -1, -1)], dim=1)
        for block in self.blocks:
            x = block(x)
        x0 = self.norm(x[:, :T]) @ w_dec + b_dec
        if prefix is not None:
            x0 = mix_prefix(x0, prefix, prefix_weights)
        action = x0 * self.keep + torch.sigmoid(x0) * (1 - self.keep) if self.squash_gripper else x0
        return x0, action[..., : self.output_dim]


class DenoiseStepGraph(_DenoiseStep):
    """One domain's denoising step, its rows folded in (a robot's bundle)."""

    def __init__(self, model: XVLA, domain_id: int) -> None:
        super().__init__(model)
        for name, value in zip(_WEIGHTS, self.domain_rows(model, [domain_id])):  # folded in: the row itself
            self.register_buffer(name, value[0] if name != "prompts" else value)

    def forward(self, context: torch.Tensor, x1: torch.Tensor, prev: torch.Tensor, proprio: torch.Tensor,
                t: torch.Tensor, prefix: torch.Tensor | None = None,
                prefix_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.step(context, x1, prev, proprio, t, (self.w_enc, self.b_enc, self.w_dec, self.b_dec,
                                                         self.prompts), prefix, prefix_weights)


class ServerDenoiseStepGraph(_DenoiseStep):
    """The denoising step of the listed domains, the domain an input per batch row (a server bundle)."""

    def __init__(self, model: XVLA, domains: list[int]) -> None:
        super().__init__(model)
        if not domains or len(set(domains)) != len(domains):
            raise ValueError(f"domains must be distinct and at least one; got {domains}")
        for name, value in zip(_WEIGHTS, self.domain_rows(model, domains)):  # one row per listed domain
            self.register_buffer(name, value)
        rows = torch.full((model.config.num_domains,), len(domains), dtype=torch.long)  # unlisted: past the end
        rows[torch.tensor(domains)] = torch.arange(len(domains))
        self.register_buffer("rows", rows)

    def forward(self, context: torch.Tensor, x1: torch.Tensor, prev: torch.Tensor, proprio: torch.Tensor,
                t: torch.Tensor, domain_id: torch.Tensor, prefix: torch.Tensor | None = None,
                prefix_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        row = self.rows[domain_id]  # [B]
        return self.step(context, x1, prev, proprio, t, (self.w_enc[row], self.b_enc[row], self.w_dec[row],
                                                         self.b_dec[row], self.prompts[row]), prefix, prefix_weights)
