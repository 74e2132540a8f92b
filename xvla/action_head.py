"""The soft-prompted action transformer (the X-VLA "transformer.*" weights), with official parameter names.

Token layout of one call (B = batch, T = num_actions, D = hidden_size):

    [ T action tokens | VLM tokens (main view + text) | aux-view tokens ] + pos_emb[:, :that length]
    followed by len_soft_prompts domain prompt tokens, which get no positional embedding.

All tokens attend to all tokens (no mask). Only the first T outputs are decoded.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from xvla.config import XVLAConfig


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 100.0) -> torch.Tensor:
    """Sinusoidal embedding of raw t in (0, 1]: [cos(t·f_k) ..., sin(t·f_k) ...], f_k = max_period^(-k/half).

    t: [B] → [B, dim]. Cosines come first; an odd ``dim`` is padded with one zero.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb.to(t.dtype)


class DomainAwareLinear(nn.Module):
    """One linear layer per domain. Row d of ``fc.weight`` is that domain's [in, out] matrix, row-major.

    Note the layout: y = x @ W_d + b_d with W_d stored input-major, unlike nn.Linear's [out, in].
    """

    def __init__(self, in_features: int, out_features: int, num_domains: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.fc = nn.Embedding(num_domains, in_features * out_features)
        self.bias = nn.Embedding(num_domains, out_features)

    def domain_weights(self, domain_id: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """W [B, in, out] and b [B, out] of each sample's domain."""
        w = self.fc(domain_id).view(-1, self.in_features, self.out_features)
        return w, self.bias(domain_id)

    def forward(self, x: torch.Tensor, domain_id: torch.Tensor) -> torch.Tensor:
        w, b = self.domain_weights(domain_id)
        if x.dim() == 2:  # [B, in]
            return torch.bmm(x.unsqueeze(1), w).squeeze(1) + b
        return torch.bmm(x, w) + b.unsqueeze(1)  # [B, T, in] → [B, T, out]


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection, no mask."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, H, N, Dh)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    """fc1 → tanh-approximated GELU → fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SoftPromptedTransformer(nn.Module):
    """Predicts the clean action chunk x0 from (x_t, proprio, t, context, domain)."""

    def __init__(self, cfg: XVLAConfig) -> None:
        super().__init__()
        d, dim_action = cfg.hidden_size, cfg.dim_action
        self.hidden_size = d
        self.dim_time = cfg.dim_time
        self.len_soft_prompts = cfg.len_soft_prompts
        self.max_len_seq = cfg.max_len_seq
        self.blocks = nn.ModuleList(TransformerBlock(d, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.vlm_proj = nn.Linear(cfg.projection_dim, d)
        self.aux_visual_proj = nn.Linear(cfg.projection_dim, d)
        self.pos_emb = nn.Parameter(torch.zeros(1, cfg.max_len_seq, d))
        self.norm = nn.LayerNorm(d)
        # action input per token: [x_t (dim_action) | proprio (dim_proprio) | time embedding (dim_time)]
        self.action_encoder = DomainAwareLinear(dim_action + cfg.dim_proprio + cfg.dim_time, d, cfg.num_domains)
        self.action_decoder = DomainAwareLinear(d, dim_action, cfg.num_domains)
        self.soft_prompt_hub = nn.Embedding(cfg.num_domains, cfg.len_soft_prompts * d)

    def context(self, vlm_features: torch.Tensor, aux_visual_inputs: torch.Tensor, num_actions: int) -> torch.Tensor:
        """Projected context tokens with their positional embedding (independent of x_t and t)."""
        ctx = torch.cat([self.vlm_proj(vlm_features), self.aux_visual_proj(aux_visual_inputs)], dim=1)
        return ctx + self.pos_emb[:, num_actions : num_actions + ctx.shape[1]]

    def encode_actions(self, x_t: torch.Tensor, proprio: torch.Tensor, t: torch.Tensor,
                       domain_id: torch.Tensor) -> torch.Tensor:
        """Action tokens [B, T, D] (with their positional embedding) from x_t [B, T, A], proprio [B, P], t [B]."""
        B, T, _ = x_t.shape
        temb = timestep_embedding(t, self.dim_time)
        feats = torch.cat([x_t, proprio[:, None, :].expand(B, T, -1), temb[:, None, :].expand(B, T, -1)], dim=-1)
        return self.action_encoder(feats, domain_id) + self.pos_emb[:, :T]

    def run_blocks(self, action_tokens: torch.Tensor, context: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """The transformer proper: returns the normalised outputs of the action tokens [B, T, D]."""
        x = torch.cat([action_tokens, context, prompts], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x[:, : action_tokens.shape[1]])

    def prompts(self, domain_id: torch.Tensor) -> torch.Tensor:
        """Soft prompt tokens [B, len_soft_prompts, D] of each sample's domain."""
        return self.soft_prompt_hub(domain_id).view(-1, self.len_soft_prompts, self.hidden_size)

    def forward(self, domain_id: torch.Tensor, vlm_features: torch.Tensor, aux_visual_inputs: torch.Tensor,
                action_with_noise: torch.Tensor, proprio: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        T = action_with_noise.shape[1]
        ctx = self.context(vlm_features, aux_visual_inputs, T)
        tokens = self.encode_actions(action_with_noise, proprio, t, domain_id)
        out = self.run_blocks(tokens, ctx, self.prompts(domain_id))
        return self.action_decoder(out, domain_id)
