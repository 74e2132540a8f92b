"""Florence-2's encoder side built from transformers' native Florence-2 and BART modules.

Used: the DaViT vision tower (``Florence2VisionBackbone``), the image projector
(``Florence2MultiModalProjector``: 2-D learned positions, temporal cosine row 0, [mean token | grid tokens],
projection, LayerNorm) and the BART encoder's embeddings and layers. Not used: the BART decoder and lm_head.

The BART encoder's own ``forward`` is not called: it builds an attention mask from a config-driven
attention backend, which X-VLA never uses (every one of the main view's image and text tokens attends to
every other, padding included) and which does not trace to ONNX. :meth:`VisionLanguageEncoder.encode_text`
runs the same embedding, positions, ``layernorm_embedding`` and layers with no mask instead.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BartConfig, Florence2Config, Florence2VisionConfig
from transformers.models.bart.modeling_bart import BartEncoder
from transformers.models.florence2.modeling_florence2 import Florence2MultiModalProjector, Florence2VisionBackbone

from xvla.config import XVLAConfig


def native_florence_config(cfg: XVLAConfig) -> Florence2Config:
    """Translate our config into transformers' native Florence-2 config (eager attention, no drop-path)."""
    v, t = cfg.vision, cfg.text
    vision = Florence2VisionConfig(
        embed_dim=list(v.embed_dim), depths=list(v.depths), num_heads=list(v.num_heads),
        num_groups=list(v.num_groups), window_size=v.window_size, patch_size=list(v.patch_size),
        patch_stride=list(v.patch_stride), patch_padding=list(v.patch_padding),
        patch_prenorm=list(v.patch_prenorm), mlp_ratio=v.mlp_ratio, qkv_bias=v.qkv_bias,
        projection_dim=cfg.projection_dim, max_position_embeddings=v.max_pos_embeddings,
        max_temporal_embeddings=v.max_temporal_embeddings, drop_path_rate=0.0, activation_function="gelu",
    )
    text = BartConfig(
        vocab_size=t.vocab_size, d_model=t.d_model, encoder_layers=t.encoder_layers,
        encoder_attention_heads=t.encoder_attention_heads, encoder_ffn_dim=t.encoder_ffn_dim,
        decoder_layers=1, decoder_attention_heads=t.encoder_attention_heads, decoder_ffn_dim=t.encoder_ffn_dim,
        max_position_embeddings=t.max_position_embeddings, activation_function=t.activation_function,
        scale_embedding=t.scale_embedding, pad_token_id=t.pad_token_id, bos_token_id=t.bos_token_id,
        eos_token_id=t.eos_token_id, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
    )
    florence = Florence2Config(vision_config=vision, text_config=text)
    for c in (florence, florence.vision_config, florence.text_config):
        c._attn_implementation = "eager"
    return florence


class VisionLanguageEncoder(nn.Module):
    """Images + token ids → (vlm_features [B, N+L, P], aux_visual_inputs [B, (V-1)·N, P])."""

    def __init__(self, cfg: XVLAConfig) -> None:
        super().__init__()
        native = native_florence_config(cfg)
        self.vision_tower = Florence2VisionBackbone(native.vision_config)
        self.multi_modal_projector = Florence2MultiModalProjector(native)
        self.language_encoder = BartEncoder(native.text_config)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] normalised pixels → projected image tokens [N, 1 + (H/32)·(W/32), P]."""
        features = self.vision_tower(images).last_hidden_state
        return self.multi_modal_projector(features)

    def encode_text(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """BART encoder over [image tokens | token embeddings] with no attention mask."""
        enc = self.language_encoder
        positions = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device)
        x = enc.layernorm_embedding(inputs_embeds + enc.embed_positions.weight[positions + enc.embed_positions.offset])
        for layer in enc.layers:
            x = layer(x, None)
        return x

    def forward(self, input_ids: torch.Tensor, image_input: torch.Tensor,
                image_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids [B, L], image_input [B, V, 3, H, W], image_mask [B, V] bool.

        Views whose mask is False get zero image features (they are not run through DaViT). View 0 is
        fused with the text in the BART encoder; the other views go straight to the action transformer.
        """
        B, V = image_input.shape[:2]
        flat_mask = image_mask.reshape(-1).bool()
        valid = self.encode_images(image_input.flatten(0, 1)[flat_mask])  # [#valid, N, P]
        feats = valid.new_zeros((B * V, *valid.shape[1:]))
        feats[flat_mask] = valid
        feats = feats.view(B, V, *valid.shape[1:])
        text = self.language_encoder.embed_tokens(input_ids)
        vlm_features = self.encode_text(torch.cat([feats[:, 0], text], dim=1))
        aux = feats[:, 1:].reshape(B, -1, feats.shape[-1])
        return vlm_features, aux
