"""Generate parity fixtures by running the OFFICIAL X-VLA code on tiny random weights.

This is our own driver; the official implementation is NOT part of this repository. It is imported at
run time from a separate checkout given with ``--official-src`` (the directory that contains the official
``models/`` package, e.g. a ``git archive`` of official commit 6bc2513) by :mod:`benchmarks.official`. Run it
from the repository root in a throwaway environment with the official dependency pins (torch CPU,
transformers 4.51.3, timm 1.0.12), not in the project venv.

For every action mode (ee6d, joint, agibot_ee6d, auto) it

1. builds the official ``XVLA`` model from a tiny config, overwrites every parameter (and the saved
   ``final_logits_bias`` buffer) with seeded random values,
2. saves it with the official ``save_pretrained`` (config.json + model.safetensors) and the official
   ``XVLAProcessor.save_pretrained`` (preprocessor_config.json + tokenizer files),
3. reloads it with ``XVLA.from_pretrained`` / ``XVLAProcessor.from_pretrained`` (checks the round trip),
4. runs ``generate_actions`` on several cases with the initial noise fixed (``torch.randn`` is patched for
   the duration of the call), recording inputs, noise, outputs and intermediates into ``cases.npz`` and a
   description into ``cases.json``.

Usage::

    HF_HUB_OFFLINE=1 /tmp/venv-official/bin/python -m tools.make_official_fixtures \
        --official-src /tmp/xvla-official --out tests/fixtures/official_tiny
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from benchmarks.official import fixed_noise, import_official  # noqa: E402
from xvla.constants import NUM_VIEWS  # noqa: E402  (= XVLAProcessor.num_views)

ACTION_MODES: Dict[str, Dict[str, int]] = {
    # mode -> (model-facing) action dim, real dim returned by postprocess
    "ee6d": {"dim": 20, "out_dim": 20},
    "joint": {"dim": 14, "out_dim": 14},
    "agibot_ee6d": {"dim": 20, "out_dim": 20},
    "auto": {"dim": 20, "out_dim": 14},  # max_action_dim=20, real_action_dim=14
}

IMAGE_SIZE = 64
TEXT_LEN = 50  # XVLAProcessor.language_max_length
NUM_ACTIONS = 30
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

INSTRUCTIONS = [
    "pick up the red block and place it in the bowl",
    "open the top drawer of the cabinet",
    "put the eggplant into the yellow basket",
    "close the microwave door",
    "fold the towel in half",
    "push the green cube to the left",
    "stack the blue cup on the plate",
    "turn on the stove and put the pot on it",
    "move the spoon next to the towel",
    "put both the alphabet soup and the tomato sauce in the basket",
    "lift the lid of the pan",
    "place the carrot on the cutting board",
    "wipe the table with the sponge",
    "pour the water from the bottle into the glass",
    "grasp the handle and pull it",
]


# --------------------------------------------------------------------------------------------------
# tiny config
# --------------------------------------------------------------------------------------------------
def tiny_florence_config() -> Dict[str, Any]:
    vision = {
        "model_type": "davit",
        "drop_path_rate": 0.1,
        "patch_size": [7, 3, 3, 3],
        "patch_stride": [4, 2, 2, 2],
        "patch_padding": [3, 1, 1, 1],
        "patch_prenorm": [False, True, True, True],
        "enable_checkpoint": False,
        # (kept small so that four checkpoints + cases stay around 10 MB in the repository)
        "dim_embed": [8, 16, 32, 64],
        # window-attention heads (head dims 8, 8, 16, 16) and channel-attention groups (group dims 4, 4, 8,
        # 32) deliberately differ at every stage, so swapping heads/groups in a re-implementation shows up
        "num_heads": [1, 2, 2, 4],
        "num_groups": [2, 4, 4, 2],
        "depths": [1, 1, 2, 1],
        # 64x64 input -> stage grids 16, 8, 4, 2 -> padded to 18, 9, 6, 3: padding exercised at each stage
        "window_size": 3,
        "projection_dim": 32,
        "visual_temporal_embedding": {"type": "COSINE", "max_temporal_embeddings": 100},
        "image_pos_embed": {"type": "learned_abs_2d", "max_pos_embeddings": 50},
        "image_feature_source": ["spatial_avg_pool", "temporal_avg_pool"],
    }
    text = {
        "model_type": "florence2_language",
        "vocab_size": 1000,
        "d_model": 32,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "encoder_ffn_dim": 64,
        "decoder_ffn_dim": 64,
        "max_position_embeddings": 64,
        "activation_function": "gelu",
        "scale_embedding": False,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "decoder_start_token_id": 2,
        "forced_eos_token_id": 2,
        "is_encoder_decoder": True,
    }
    return {
        "model_type": "florence2",
        "vision_config": vision,
        "text_config": text,
        "vocab_size": 1000,
        "projection_dim": 32,
        "ignore_index": -100,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "is_encoder_decoder": True,
    }


def tiny_xvla_kwargs(mode: str) -> Dict[str, Any]:
    kw: Dict[str, Any] = dict(
        florence_config=tiny_florence_config(),
        # hidden_size != projection_dim so that a transposed vlm_proj/aux_visual_proj fails on shape
        hidden_size=48,
        depth=2,
        num_heads=4,
        mlp_ratio=4.0,
        num_domains=30,
        len_soft_prompts=32,
        dim_time=32,
        max_len_seq=512,
        use_hetero_proj=False,
        soft_prompt_length=32,
        num_actions=NUM_ACTIONS,
        action_mode=mode,
        use_proprio=True,
        max_action_dim=20,
        real_action_dim=ACTION_MODES[mode]["out_dim"] if mode == "auto" else 20,
        architectures=["XVLA"],
    )
    return kw


# --------------------------------------------------------------------------------------------------
# random weights
# --------------------------------------------------------------------------------------------------
def _seed_for(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("/".join(parts).encode()).digest()[:4], "little")


def randomize_weights(model: nn.Module, mode: str, base_seed: int) -> Dict[str, str]:
    """Overwrite every saved tensor with seeded random values of a sensible scale.

    Each tensor gets its own generator, seeded from (base_seed, mode, key), so values do not depend on the
    iteration order. Returns {key: rule} for the provenance notes.
    """
    module_of: Dict[str, nn.Module] = {}
    for mname, mod in model.named_modules():
        for pname, _ in mod.named_parameters(recurse=False):
            module_of[f"{mname}.{pname}" if mname else pname] = mod
        for bname, _ in mod.named_buffers(recurse=False):
            module_of[f"{mname}.{bname}" if mname else bname] = mod

    rules: Dict[str, str] = {}
    done_ptrs: Dict[int, str] = {}
    state = model.state_dict(keep_vars=True)
    for key in sorted(state):
        t = state[key]
        ptr = t.data_ptr()
        if ptr in done_ptrs:
            rules[key] = f"alias of {done_ptrs[ptr]}"
            continue
        g = torch.Generator().manual_seed(_seed_for(str(base_seed), mode, key))
        mod = module_of.get(key)
        leaf = key.rsplit(".", 1)[-1]
        shape = tuple(t.shape)

        def normal(std: float, mean: float = 0.0) -> torch.Tensor:
            return torch.randn(shape, generator=g, dtype=torch.float32) * std + mean

        if key.endswith("visual_temporal_embed.pos_idx_to_embed"):
            rules[key] = "kept: official sinusoid (deterministic, not learned)"
            continue
        if isinstance(mod, nn.LayerNorm):
            val = normal(0.1, 1.0) if leaf == "weight" else normal(0.1)
            rule = "LayerNorm: 1+N(0,0.1) / N(0,0.1)"
        elif key.endswith("final_logits_bias"):
            val, rule = normal(0.1), "unused buffer: N(0,0.1)"
        elif key.endswith("transformer.pos_emb"):
            val, rule = normal(0.5), "N(0,0.5)"
        elif key.endswith("soft_prompt_hub.weight"):
            val, rule = normal(1.0), "N(0,1)"
        elif ".fc.weight" in key and ("action_encoder" in key or "action_decoder" in key):
            fan_in = model.get_submodule(key.rsplit(".", 2)[0]).input_size
            val, rule = normal(1.0 / fan_in**0.5), f"DomainAwareLinear W[I,O]: N(0,1/sqrt(I={fan_in}))"
        elif ".bias.weight" in key and ("action_encoder" in key or "action_decoder" in key):
            val, rule = normal(0.2), "DomainAwareLinear bias: N(0,0.2)"
        elif key.endswith("image_projection"):
            val, rule = normal(1.0 / shape[0] ** 0.5), f"[in,out] matrix: N(0,1/sqrt({shape[0]}))"
        elif key.endswith("embed_positions.weight") or "image_pos_embed" in key:
            val, rule = normal(0.5), "N(0,0.5)"
        elif isinstance(mod, nn.Embedding):  # token embedding (shared / encoder.embed_tokens)
            val, rule = normal(1.0), "N(0,1)"
        elif isinstance(mod, (nn.Linear, nn.Conv2d)) and leaf == "weight":
            fan_in = int(np.prod(shape[1:]))
            val, rule = normal(1.0 / fan_in**0.5), f"N(0,1/sqrt(fan_in={fan_in}))"
        elif leaf == "bias":
            val, rule = normal(0.1), "N(0,0.1)"
        else:
            raise RuntimeError(f"no randomisation rule for {key} {shape} ({type(mod).__name__})")
        with torch.no_grad():
            t.data.copy_(val.to(t.dtype))
        done_ptrs[ptr] = key
        rules[key] = rule
    return rules


# --------------------------------------------------------------------------------------------------
# tokenizer / image processor
# --------------------------------------------------------------------------------------------------
def build_tokenizer(tmp_dir: Path):
    """Tiny BART-style byte-level BPE. ids 0..3 = <s>, <pad>, </s>, <unk>; <mask> appended last (as BART)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import BartTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(INSTRUCTIONS * 4, trainer=trainer)
    tok.add_special_tokens(["<mask>"])
    tok.post_processor = processors.RobertaProcessing(
        sep=("</s>", 2), cls=("<s>", 0), trim_offsets=True, add_prefix_space=False
    )
    assert [tok.token_to_id(s) for s in ["<s>", "<pad>", "</s>", "<unk>"]] == [0, 1, 2, 3]
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tok.model.save(str(tmp_dir))  # vocab.json + merges.txt (for the slow BartTokenizer)
    tok.save(str(tmp_dir / "tokenizer.json"))
    fast = BartTokenizerFast(
        vocab_file=str(tmp_dir / "vocab.json"),
        merges_file=str(tmp_dir / "merges.txt"),
        tokenizer_file=str(tmp_dir / "tokenizer.json"),
        add_prefix_space=False,
        model_max_length=1024,
    )
    return fast


def build_image_processor():
    from transformers import CLIPImageProcessor
    from transformers.image_utils import PILImageResampling

    return CLIPImageProcessor(
        do_resize=True,
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        resample=PILImageResampling.BICUBIC,
        do_center_crop=False,
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        do_convert_rgb=True,
    )


def tokenizer_check(ckpt_dir: Path, processor) -> Dict[str, Any]:
    """Tokenise a few strings with the processor, AutoTokenizer (fast) and the slow BartTokenizer: must agree."""
    from transformers import AutoTokenizer, BartTokenizer

    texts = [INSTRUCTIONS[0], INSTRUCTIONS[5], " ".join(INSTRUCTIONS[:4]) + " Unseen wörds, 123!"]
    kw = dict(padding="max_length", max_length=TEXT_LEN, truncation=True)
    via_proc = processor.encode_language(texts)["input_ids"].tolist()
    fast = AutoTokenizer.from_pretrained(str(ckpt_dir))
    slow = BartTokenizer.from_pretrained(str(ckpt_dir))
    via_fast = fast(texts, **kw)["input_ids"]
    via_slow = slow(texts, **kw)["input_ids"]
    if not (via_proc == via_fast == via_slow):
        raise RuntimeError(f"tokenizers disagree:\n{via_proc}\n{via_fast}\n{via_slow}")
    return {"texts": texts, "input_ids": via_proc, "auto_tokenizer_class": type(fast).__name__,
            "note": "processor.encode_language == AutoTokenizer (fast) == BartTokenizer (slow); "
                    "padding='max_length', max_length=50, truncation=True (the 3rd text is longer than "
                    "50 tokens and gets truncated)"}


# --------------------------------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------------------------------
def random_input_ids(g: torch.Generator, n_real: int, vocab: int) -> List[int]:
    """<s> + n_real random ids in [3, vocab) + </s> + <pad>...; if n_real == TEXT_LEN-2 there is no pad."""
    assert 0 <= n_real <= TEXT_LEN - 2
    body = torch.randint(3, vocab, (n_real,), generator=g).tolist()
    ids = [0] + body + [2]
    return ids + [1] * (TEXT_LEN - len(ids))


CASES: List[Dict[str, Any]] = [
    dict(name="c0_d0_v3_s10", domain_id=[0], image_mask=[[1, 1, 1]], steps=10, n_text=[12],
         note="3 valid views, 10 steps; intermediates incl. DaViT stage outputs recorded"),
    dict(name="c1_d3_v1_s10", domain_id=[3], image_mask=[[1, 0, 0]], steps=10, n_text=[30],
         note="only the primary view valid (masked slots hold random pixels: must be ignored)"),
    dict(name="c2_d17_v2_s1", domain_id=[17], image_mask=[[1, 1, 0]], steps=1, n_text=[5],
         note="2 valid views, single step"),
    dict(name="c3_d3_v3_s1", domain_id=[3], image_mask=[[1, 1, 1]], steps=1, n_text=[48],
         note="no padding in the text (48 body tokens + bos/eos = 50)"),
    dict(name="c4_d29_v2gap_s3", domain_id=[29], image_mask=[[1, 0, 1]], steps=3, n_text=[20],
         note="non-contiguous mask (view 1 missing, view 2 valid), last domain row, 3 steps"),
    dict(name="c5_b2_s10", domain_id=[17, 0], image_mask=[[1, 1, 1], [1, 0, 1]], steps=10, n_text=[7, 25],
         note="batch of 2 with different domains and masks"),
    dict(name="c6_d5_primary_masked_s2", domain_id=[5], image_mask=[[0, 1, 1]], steps=2, n_text=[15],
         note="edge case the official code accepts: primary view masked (its 5 tokens enter BART as zeros), "
              "views 1 and 2 valid"),
]


def run_case(model, inputs: Dict[str, torch.Tensor], noise: torch.Tensor, steps: int,
             capture_davit: bool, full: bool = True) -> Dict[str, np.ndarray]:
    """Run the official generate_actions with fixed noise and capture intermediates."""
    rec: Dict[str, Any] = {"t": [], "x_t_in": [], "proprio_in": [], "x0_pred": []}
    hooks = []

    # 1) forward_vlm output (instance attribute shadows the bound method for this call)
    orig_forward_vlm = model.forward_vlm

    def forward_vlm_spy(*a, **k):
        out = orig_forward_vlm(*a, **k)
        rec["vlm_features"] = out["vlm_features"].detach().clone()
        rec["aux_visual_inputs"] = out["aux_visual_inputs"].detach().clone()
        return out

    model.forward_vlm = forward_vlm_spy

    # 2) per-view image features (_encode_image output for the valid views only)
    orig_encode = model.vlm._encode_image

    def encode_spy(pixel_values):
        out = orig_encode(pixel_values)
        rec["valid_view_features"] = out.detach().clone()
        return out

    model.vlm._encode_image = encode_spy

    # 3) BART encoder input embeddings ([image tokens | text tokens], before positions/layernorm)
    def enc_pre(mod, args, kwargs):
        rec["encoder_inputs_embeds"] = kwargs["inputs_embeds"].detach().clone()
        rec["encoder_attention_mask"] = kwargs["attention_mask"].detach().clone()

    hooks.append(model.vlm.language_model.model.encoder.register_forward_pre_hook(enc_pre, with_kwargs=True))

    # 4) every call of the action transformer
    def tr_hook(mod, args, kwargs, out):
        rec["t"].append(kwargs["t"].detach().clone())
        rec["x_t_in"].append(kwargs["action_with_noise"].detach().clone())
        rec["proprio_in"].append(kwargs["proprio"].detach().clone())
        rec["x0_pred"].append(out.detach().clone())

    hooks.append(model.transformer.register_forward_hook(tr_hook, with_kwargs=True))

    # 5) DaViT per-stage outputs (conv embed and block stack), valid views only
    if capture_davit:
        vt = model.vlm.vision_tower
        for s in range(len(vt.convs)):
            def conv_hook(mod, args, out, s=s):
                rec[f"davit_stage{s}_conv"] = out[0].detach().clone()
                rec[f"davit_stage{s}_hw"] = torch.tensor(out[1])

            def block_hook(mod, args, out, s=s):
                rec[f"davit_stage{s}_out"] = out[0].detach().clone()

            hooks.append(vt.convs[s].register_forward_hook(conv_hook))
            hooks.append(vt.blocks[s].register_forward_hook(block_hook))
    try:
        with fixed_noise(noise) as randn_calls:
            actions = model.generate_actions(**inputs, steps=steps)
    finally:
        for h in hooks:
            h.remove()
        del model.forward_vlm
        del model.vlm._encode_image
    if len(randn_calls) != 1:
        raise RuntimeError(f"expected exactly one torch.randn call, got {randn_calls}")

    out: Dict[str, np.ndarray] = {
        "actions": actions.detach().numpy(),
        "vlm_features": rec["vlm_features"].numpy(),
        "aux_visual_inputs": rec["aux_visual_inputs"].numpy(),
        "valid_view_features": rec["valid_view_features"].numpy(),
        "encoder_inputs_embeds": rec["encoder_inputs_embeds"].numpy(),
        "encoder_attention_mask": rec["encoder_attention_mask"].numpy(),
        "t": torch.stack(rec["t"]).numpy(),
        "x_t_in": torch.stack(rec["x_t_in"]).numpy(),
        "proprio_in": torch.stack(rec["proprio_in"]).numpy(),
        "x0_pred": torch.stack(rec["x0_pred"]).numpy(),
    }
    if not full:  # size budget: these are recorded for the first case only
        for k in ("x_t_in", "encoder_inputs_embeds"):
            del out[k]
    for k, v in rec.items():
        if k.startswith("davit_"):
            out[k] = v.numpy()
    out["_randn_dtype"] = np.array(str(randn_calls[0][1]))
    return out


def make_inputs(mode: str, case: Dict[str, Any], vocab: int, seed: int) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(_seed_for(str(seed), mode, case["name"], "inputs"))
    B = len(case["domain_id"])
    dim = ACTION_MODES[mode]["dim"]
    input_ids = torch.tensor([random_input_ids(g, n, vocab) for n in case["n_text"]], dtype=torch.long)
    # already-normalised pixel values, (u8/255 - mean)/std of random u8 images (as the processor would give);
    # masked slots hold such values too (the official model never encodes them)
    # (random 32x32 u8 content, nearest-upsampled 2x: keeps the compressed fixture small)
    u8 = torch.randint(0, 256, (B, NUM_VIEWS, 3, IMAGE_SIZE // 2, IMAGE_SIZE // 2), generator=g).float()
    u8 = u8.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1)
    image_input = (u8 / 255.0 - mean) / std
    image_mask = torch.tensor(case["image_mask"], dtype=torch.bool)
    domain_id = torch.tensor(case["domain_id"], dtype=torch.long)
    proprio = torch.randn((B, dim), generator=g) * 0.5
    return dict(input_ids=input_ids, image_input=image_input, image_mask=image_mask, domain_id=domain_id,
                proprio=proprio)


def make_noise(mode: str, name: str, B: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(_seed_for(str(seed), mode, name, "noise"))
    return torch.randn((B, NUM_ACTIONS, ACTION_MODES[mode]["dim"]), generator=g, dtype=torch.float32)


def processor_case(processor, mode: str, seed: int) -> Dict[str, Any]:
    """Raw uint8 images + 2 instructions through the official XVLAProcessor (3 and 2 views)."""
    rng = np.random.default_rng(_seed_for(str(seed), "processor-images"))
    # blocky random images (9x12 random colours, each an 8x8 block -> 72x96) plus a smooth ramp: a
    # non-square size, so the bicubic resize to 64x64 is exercised on sharp edges and gradients
    imgs = []
    ramp = (np.arange(72)[:, None, None] * 0.5 + np.arange(96)[None, :, None] * 0.25).astype(np.float32)
    for _ in range(5):
        base = rng.integers(0, 200, size=(9, 12, 3)).astype(np.float32)
        big = np.kron(base, np.ones((8, 8, 1), dtype=np.float32)) + ramp  # 72 x 96
        imgs.append(np.clip(big, 0, 255).astype(np.uint8))
    texts = [INSTRUCTIONS[0], INSTRUCTIONS[5]]
    from PIL import Image

    batch_imgs = [[Image.fromarray(imgs[0]), Image.fromarray(imgs[1]), Image.fromarray(imgs[2])],
                  [Image.fromarray(imgs[3]), Image.fromarray(imgs[4])]]
    out = processor(images=batch_imgs, language_instruction=texts)
    raw = np.zeros((2, NUM_VIEWS, 72, 96, 3), dtype=np.uint8)
    raw[0, 0], raw[0, 1], raw[0, 2] = imgs[0], imgs[1], imgs[2]
    raw[1, 0], raw[1, 1] = imgs[3], imgs[4]
    return {"texts": texts, "raw_images": raw, "input_ids": out["input_ids"], "image_input": out["image_input"],
            "image_mask": out["image_mask"]}


def provenance_markdown(summary: Dict[str, Any], args: argparse.Namespace) -> str:
    v = summary["versions"]
    fl = tiny_florence_config()
    vis, txt = fl["vision_config"], fl["text_config"]
    head = tiny_xvla_kwargs("ee6d")
    hashes = "\n".join(f"| `models/{k}` | `{h}` |" for k, h in summary["official_file_sha256"].items())
    diffs = ", ".join(f"{m}: {d:.2e}" for m, d in summary.get("built_vs_reloaded_max_abs_diff", {}).items())
    case_lines = "\n".join(
        f"| `{c['name']}` | {c['domain_id']} | {c['image_mask']} | {c['steps']} | {c['note']} |"
        for c in summary["case_table"])
    return f"""# Provenance of `tests/fixtures/official_tiny/`

Generated by `tools/make_official_fixtures.py` (our own driver). It ran the **official X-VLA
implementation** (not part of this repository, never copied into it) on tiny random weights. Regenerate
with the command below; do not edit the files by hand.

## Official source

- Repository: `github.com/2toinf/X-VLA`, commit **`{summary['official_commit']}`**, obtained through the
  fork `lihaolin2000/X-VLA` (its history equals the official one up to that commit) and extracted with
  `git archive {summary['official_commit'][:7]} models requirements.txt deploy.py` into a scratch directory.
- Official files imported at run time (sha256 of the copies used):

| file | sha256 |
|---|---|
{hashes}

## Environment

- Python {v['python']}, torch {v['torch']} (CPU), transformers {v['transformers']}, timm {v['timm']},
  tokenizers {v['tokenizers']}, numpy {v['numpy']}; also installed so that the official `modeling_xvla.py`
  imports unchanged: fastapi, uvicorn, json_numpy, opencv-python-headless, pillow (serving only).
- `HF_HUB_OFFLINE=1`, `TRANSFORMERS_OFFLINE=1`; nothing was downloaded from a model hub.
- Command (run from the repository root, in a throwaway venv outside the repository):

```
HF_HUB_OFFLINE=1 {summary['command']}
```

## Run-time patches (none to the official code)

- **torchvision placeholder** (stubbed: {summary['torchvision_stubbed']}): timm 1.0.12 imports torchvision at
  import time; the only torchvision wheels available were CUDA builds that cannot load next to a CPU torch.
  The driver installs an import-time placeholder module for `torchvision` (after transformers is imported,
  so transformers treats torchvision as absent). The official model never calls torchvision; timm is only
  used for `DropPath` (identity in eval) and `trunc_normal_`.
- **Fixed noise**: during each `generate_actions` call `torch.randn` is replaced by a function that returns a
  copy of the case's `noise` array (shape must equal the requested one, dtype/device as requested). The
  driver asserts that exactly one `torch.randn` call happens per `generate_actions` call.
- **Read-only spies** for intermediates: instance attributes shadowing `XVLA.forward_vlm` and
  `vlm._encode_image` (call the original, copy the result), a forward-pre-hook on the BART encoder and forward
  hooks on `transformer` and on each DaViT `convs[s]` / `blocks[s]`. They do not change any value.
- The model is built with `XVLA(XVLAConfig(...))`, every tensor is overwritten with seeded random values,
  then saved with the official `save_pretrained(..., safe_serialization=True)` and `XVLAProcessor.save_pretrained`,
  and **reloaded with `XVLA.from_pretrained` / `XVLAProcessor.from_pretrained`** (the official deploy path).
  The reloaded state dict is checked to be bit-identical, with no missing/unexpected keys. All recorded
  outputs come from the reloaded model.

## Tiny configuration

- Images 64x64, 3 view slots, text length 50, 30 actions.
- DaViT: `dim_embed={vis['dim_embed']}`, `depths={vis['depths']}`, `num_heads={vis['num_heads']}`
  (head dims 8, 8, 16, 16), `num_groups={vis['num_groups']}` (channel-group dims 4, 4, 8, 32; deliberately
  different from the heads), `window_size={vis['window_size']}` (stage grids 16, 8, 4, 2 are zero-padded to
  18, 9, 6, 3, so the unmasked window padding is exercised at every stage), patch size/stride/padding/prenorm
  as Florence-2-large `{vis['patch_size']}/{vis['patch_stride']}/{vis['patch_padding']}/{vis['patch_prenorm']}`,
  `projection_dim={vis['projection_dim']}`, 2-D learned position table 50 rows, cosine temporal embedding 100 rows,
  `image_feature_source={vis['image_feature_source']}` -> 1 + 2x2 = 5 tokens per view. `drop_path_rate=0.1`
  (inactive: `generate_actions` calls `eval()`).
- BART: `vocab_size={txt['vocab_size']}`, `d_model={txt['d_model']}`, `encoder_layers={txt['encoder_layers']}`,
  `decoder_layers={txt['decoder_layers']}` (deleted by XVLA), {txt['encoder_attention_heads']} heads, ffn
  {txt['encoder_ffn_dim']}, `max_position_embeddings={txt['max_position_embeddings']}` (table 66 rows, offset 2),
  pad 1 / bos 0 / eos 2, `scale_embedding=False`, activation `gelu`.
- Action head: `hidden_size={head['hidden_size']}` (deliberately != projection_dim 32, so a transposed
  `vlm_proj`/`aux_visual_proj` fails on shape), `depth={head['depth']}`, `num_heads={head['num_heads']}` (head dim 12),
  `mlp_ratio={head['mlp_ratio']}`, `num_domains={head['num_domains']}`, `len_soft_prompts={head['len_soft_prompts']}`,
  `dim_time={head['dim_time']}`, `max_len_seq={head['max_len_seq']}`, `use_hetero_proj=False`.
- Modes: `ee6d` (dim 20), `joint` (dim 14), `agibot_ee6d` (dim 20), `auto` (`max_action_dim=20`,
  `real_action_dim=14`: model-facing dim 20, returned dim 14).
- Random weights (per-tensor generator seeded from seed {args.seed}, mode and key; rule per key in
  `cases.json["randomisation_rules"]`): Linear/Conv weights N(0, 1/fan_in), biases N(0, 0.1^2), LayerNorm
  weight 1+N(0,0.1^2) and bias N(0,0.1^2), token embedding N(0,1) (the pad row too), BART/2-D position
  tables N(0,0.5^2), `transformer.pos_emb` N(0,0.5^2), soft prompts N(0,1), DomainAwareLinear rows
  N(0,1/I) viewed as [I,O], bias rows N(0,0.2^2), `image_projection` N(0,1/64), unused buffer
  `final_logits_bias` N(0,0.1^2). **Kept** as built: `vlm.visual_temporal_embed.pos_idx_to_embed` (the official
  deterministic sinusoid; real checkpoints carry the same values).

## Layout

```
official_tiny/
  PROVENANCE.md, summary.json          (versions, official file hashes, command, per-mode case list)
  <mode>/                              mode in ee6d, joint, agibot_ee6d, auto
    config.json                        official XVLAConfig.save_pretrained output (nested florence_config)
    model.safetensors                  official key names (vlm.*, transformer.*), fp32, metadata {{"format":"pt"}}
    preprocessor_config.json           CLIPImageProcessor: 64x64, resample=3 (bicubic), no crop, 1/255, ImageNet mean/std
    tokenizer.json, tokenizer_config.json, vocab.json, merges.txt, special_tokens_map.json, added_tokens.json
                                       tiny byte-level BPE, BartTokenizer(Fast); <s>=0 <pad>=1 </s>=2 <unk>=3, <mask> last
    cases.npz                          keys "<case>/<name>" (np.load(...)["c0_d0_v3_s10/actions"])
    cases.json                         case descriptions, npz key shapes/dtypes, safetensors key shapes,
                                       tokenizer check, randomisation rules
```

Cases (same inputs recipe in every mode; values differ per mode because seeds include the mode):

| case | domain_id | image_mask | steps | note |
|---|---|---|---|---|
{case_lines}

Per-case npz keys (B = batch, D = model-facing action dim, Dout = returned dim, S = steps):
`input_ids` int64 [B,50]; `image_input` float32 [B,3,3,64,64] (already normalised; masked slots hold
ordinary pixel values, which the official model never reads); `image_mask` bool [B,3]; `domain_id` int64 [B];
`proprio` float32 [B,D]; `noise` float32 [B,30,D] (= x1); `steps` int64 []; `actions` float32 [B,30,Dout]
(official return value, after postprocess); `vlm_features` [B,55,32] (BART encoder output);
`aux_visual_inputs` [B,10,32] (views 1,2; zeros for masked views); `valid_view_features` [#valid views,5,32]
(`_encode_image` output for the valid views in batch-major order); `encoder_attention_mask` [B,55] (all ones);
`t` [S,B]; `proprio_in` [S,B,D] and `x0_pred` [S,B,30,D] (the transformer's input proprio after preprocess and
its raw output, i.e. before postprocess, for every step). First case only: `x_t_in` [S,B,30,D] (transformer
input after preprocess), `encoder_inputs_embeds` [B,55,32] (image tokens | text embeddings, before
positions/layernorm), `davit_stage{{s}}_conv` / `davit_stage{{s}}_out` [#valid, H_s*W_s, C_s] (after the conv
embed / after the stage's blocks) and `davit_stage{{s}}_hw`. Plus `processor/raw_images` uint8 [2,3,72,96,3]:
the images fed to the official `XVLAProcessor` for case `c7_processor_b2_s10` (sample 0: 3 views, sample 1:
2 views, the unused slot is zeros); that case's `input_ids`/`image_input`/`image_mask` are the processor's output.

Random-id cases use ids in [3, 1000) (beyond the tiny tokenizer's vocab, inside the embedding table) laid
out as `<s> body </s> <pad>...`.

## Observations about the official behaviour

1. **Tied embeddings.** `shared.weight` and `encoder.embed_tokens.weight` share storage; `save_pretrained`
   writes only `vlm.language_model.model.shared.weight`, and `from_pretrained` re-ties `encoder.embed_tokens`.
   `forward_vlm` embeds text with `vlm.get_input_embeddings()`, i.e. `shared` (plain lookup, no scaling).
2. **Saved buffers.** `vlm.language_model.final_logits_bias` [1,vocab] (unused) and
   `vlm.visual_temporal_embed.pos_idx_to_embed` [100, dim_embed[-1]] are in the file. No BART decoder, no
   `lm_head`, no DaViT `head`/`norms`.
3. **Attention implementation.** A model built directly gets SDPA attention in the BART encoder; one loaded
   with `from_pretrained` gets eager attention. Both agree to ~1e-6 (max |diff| of case c0 actions: {diffs}).
4. **Noise.** `generate_actions` draws `x1 = torch.randn(B, 30, D, dtype=proprio.dtype, device=proprio.device)`
   once (float32 here); the same x1 is reused at every step: `x_t = t*x1 + (1-t)*a_hat` with
   `t = torch.full((B,), i/steps, dtype=proprio.dtype)` for i = steps..1 (`t` is recorded, e.g. 1, 2/3, 1/3 in
   float32 for 3 steps); the first call sees `x_t = x1` (apart from preprocess).
5. **Missing views.** `forward_vlm` encodes only the valid images and scatters their features into a zero
   tensor, so a masked view contributes zero vectors **after** `image_projection` + `image_proj_norm` (zero
   Florence features), which then still pass through `aux_visual_proj` (bias) and get `pos_emb` added. The
   pixels of masked slots are never read. The only check is that at least one view in the **whole batch** is
   valid (not per sample). A masked primary view is accepted: five zero tokens enter BART (case c6).
6. **No masking in BART.** The encoder gets an all-ones attention mask, so text padding is attended to.
7. **Action modes.** `ee6d`: channels 9, 19 of x_t and proprio are zeroed (on copies) before each
   transformer call; the final prediction gets an in-place sigmoid on 9, 19. `joint`: the same with 6, 13,
   dim 14. `agibot_ee6d`: no zeroing and no sigmoid (`actions` == last `x0_pred`). `auto`: the model works in
   `max_action_dim`=20 (noise [B,30,20], `proprio` must be [B,20]: a 14-dim proprio fails with a matmul
   shape error because `dim_propio` = `max_action_dim`); preprocess leaves the 20-dim x_t unchanged (its
   padding only applies to inputs whose last dim equals `real_action_dim`), so channels 14..19 of the
   noise are not zeroed; postprocess returns `[..., :14]`, no sigmoid.
8. **Processor.** `XVLAProcessor.from_pretrained` gives `CLIPImageProcessor` (slow; transformers 4.51 keeps
   the slow class when a slow one was saved) and `BartTokenizerFast`; the tokenizer pads to 50 with id 1 and
   truncates longer texts to `<s>` + 48 tokens + `</s>`. The processor pads missing views with zero pixel
   tensors and a False mask. `cases.json["tokenizer_check"]` holds ids for three strings; processor,
   `AutoTokenizer` and the slow `BartTokenizer` give identical ids.
9. **config.json** is the plain `PretrainedConfig` serialisation: `florence_config` carries full
   `text_config`/`vision_config` dicts (incl. generation defaults and `_attn_implementation_autoset`),
   `projection_dim` appears both in `florence_config` and in `vision_config`, and there is no `auto_map`
   (the official training script saves with `save_pretrained` and does not register auto classes).
"""


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------
def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official-src", required=True, type=Path,
                    help="directory holding the official models/ package (official commit checkout)")
    ap.add_argument("--out", required=True, type=Path, help="output dir (one sub-dir per action mode)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", nargs="*", default=list(ACTION_MODES))
    ap.add_argument("--official-commit", default="6bc2513f5f1cbec715cc668b414392a6cae5c671",
                    help="recorded in the provenance notes (the source tree itself is not inspected for it)")
    args = ap.parse_args(argv)
    if argv is None:  # as run: python -m tools.make_official_fixtures ...
        command = " ".join([Path(sys.executable).name, "-m", __spec__.name, *sys.argv[1:]])
    else:
        command = " ".join(argv)

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    off = import_official(args.official_src.resolve())
    XVLA, XVLAConfig, XVLAProcessor = off["XVLA"], off["XVLAConfig"], off["XVLAProcessor"]
    import transformers
    import timm
    import tokenizers

    args.out.mkdir(parents=True, exist_ok=True)
    tok_tmp = args.out / "_tok_tmp"
    tokenizer = build_tokenizer(tok_tmp)
    image_processor = build_image_processor()
    shutil.rmtree(tok_tmp)

    src_models = args.official_src.resolve() / "models"
    summary: Dict[str, Any] = {
        "official_commit": args.official_commit,
        "official_file_sha256": {f.name: hashlib.sha256(f.read_bytes()).hexdigest()
                                 for f in sorted(src_models.glob("*.py"))},
        "command": command,
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "transformers": transformers.__version__, "timm": timm.__version__,
                     "tokenizers": tokenizers.__version__, "numpy": np.__version__},
        "torchvision_stubbed": off["torchvision_stubbed"],
        "modes": {},
    }

    for mode in args.modes:
        mdir = args.out / mode
        if mdir.exists():
            shutil.rmtree(mdir)
        mdir.mkdir(parents=True)
        torch.manual_seed(args.seed)
        cfg = XVLAConfig(**tiny_xvla_kwargs(mode))
        model = XVLA(cfg)
        rules = randomize_weights(model, mode, args.seed)
        ref_sd = {k: v.detach().clone() for k, v in model.state_dict().items()}

        # --- official serialisation --------------------------------------------------------------
        model.save_pretrained(str(mdir), safe_serialization=True)
        proc = XVLAProcessor(image_processor=image_processor, tokenizer=tokenizer)
        proc.save_pretrained(str(mdir))

        # --- reload through the official loaders and check the round trip -------------------------
        model2, info = XVLA.from_pretrained(str(mdir), output_loading_info=True)
        model2.eval()
        sd2 = model2.state_dict()
        if set(sd2) != set(ref_sd):
            raise RuntimeError(f"state-dict keys changed on reload: {set(sd2) ^ set(ref_sd)}")
        bad = [k for k in ref_sd if not torch.equal(ref_sd[k], sd2[k])]
        if bad or info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]:
            raise RuntimeError(f"reload mismatch: differing={bad} info={info}")
        proc2 = XVLAProcessor.from_pretrained(str(mdir))
        tok_check = tokenizer_check(mdir, proc2)
        from safetensors import safe_open

        with safe_open(str(mdir / "model.safetensors"), "pt") as f:
            file_keys = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
            file_meta = f.metadata()

        vocab = cfg.florence_config.text_config.vocab_size
        arrays: Dict[str, np.ndarray] = {}
        cases_json: List[Dict[str, Any]] = []

        # --- processor / tokenizer fixture -------------------------------------------------------
        pc = processor_case(proc2, mode, args.seed)
        # the processor's outputs (input_ids, image_input, image_mask) are stored once, as the inputs of
        # case c7_processor_b2_s10
        arrays["processor/raw_images"] = pc["raw_images"]

        all_cases = [dict(c) for c in CASES]
        all_cases.append(dict(name="c7_processor_b2_s10", domain_id=[3, 0], image_mask=None, steps=10,
                              n_text=None, note="inputs produced by the official XVLAProcessor from "
                              "processor/raw_images + processor texts (B=2, 3 and 2 views)"))
        for ci, case in enumerate(all_cases):
            if case["name"] == "c7_processor_b2_s10":
                g = torch.Generator().manual_seed(_seed_for(str(args.seed), mode, case["name"], "inputs"))
                inputs = dict(input_ids=pc["input_ids"].long(), image_input=pc["image_input"].float(),
                              image_mask=pc["image_mask"].bool(),
                              domain_id=torch.tensor(case["domain_id"], dtype=torch.long),
                              proprio=torch.randn((2, ACTION_MODES[mode]["dim"]), generator=g) * 0.5)
            else:
                inputs = make_inputs(mode, case, vocab, args.seed)
            B = inputs["input_ids"].shape[0]
            noise = make_noise(mode, case["name"], B, args.seed)
            rec = run_case(model2, {k: v.clone() for k, v in inputs.items()}, noise, case["steps"],
                           capture_davit=(ci == 0), full=(ci == 0))
            # cross-check against the freshly built (not reloaded) model. It is not bit-identical: a model
            # built directly gets SDPA attention in the BART encoder, one from from_pretrained (the official
            # deploy path, used for the fixtures) gets eager attention.
            if ci == 0:
                rec_b = run_case(model, {k: v.clone() for k, v in inputs.items()}, noise, case["steps"], False)
                diff = float(np.abs(rec_b["actions"] - rec["actions"]).max())
                summary.setdefault("built_vs_reloaded_max_abs_diff", {})[mode] = diff
                if diff > 1e-4:
                    raise RuntimeError(f"built vs reloaded model disagree: {diff}")
            randn_dtype = str(rec.pop("_randn_dtype"))
            pre = case["name"]
            for k, v in inputs.items():
                arrays[f"{pre}/{k}"] = v.numpy()
            arrays[f"{pre}/noise"] = noise.numpy()
            arrays[f"{pre}/steps"] = np.array(case["steps"], dtype=np.int64)
            for k, v in rec.items():
                arrays[f"{pre}/{k}"] = v
            cases_json.append({
                "name": pre,
                "note": case["note"],
                "batch": B,
                "steps": case["steps"],
                "domain_id": inputs["domain_id"].tolist(),
                "image_mask": inputs["image_mask"].int().tolist(),
                "randn_dtype_requested_by_official_code": randn_dtype,
                "actions_stats": {"shape": list(rec["actions"].shape), "mean": float(rec["actions"].mean()),
                                  "std": float(rec["actions"].std()),
                                  "first5": [float(x) for x in rec["actions"].reshape(-1)[:5]]},
            })
            print(f"[{mode}] {pre}: actions {tuple(rec['actions'].shape)} mean {rec['actions'].mean():+.4f} "
                  f"std {rec['actions'].std():.4f}", flush=True)

        np.savez_compressed(mdir / "cases.npz", **arrays)
        meta = {
            "action_mode": mode,
            "dim_action_model": ACTION_MODES[mode]["dim"],
            "dim_action_output": ACTION_MODES[mode]["out_dim"],
            "image_size": IMAGE_SIZE,
            "text_len": TEXT_LEN,
            "num_views": NUM_VIEWS,
            "num_actions": NUM_ACTIONS,
            "seed": args.seed,
            "processor_texts": pc["texts"],
            "processor_input_ids": pc["input_ids"].tolist(),
            "tokenizer_check": tok_check,
            "processor_tokenizer_class": type(proc2.tokenizer).__name__,
            "processor_image_processor_class": type(proc2.image_processor).__name__,
            "bart_encoder_attention_class": {
                "built_directly": type(model.vlm.language_model.model.encoder.layers[0].self_attn).__name__,
                "from_pretrained (used for the fixtures)":
                    type(model2.vlm.language_model.model.encoder.layers[0].self_attn).__name__,
            },
            "cases": cases_json,
            "npz_keys": {k: [list(v.shape), str(v.dtype)] for k, v in arrays.items()},
            "safetensors_keys": file_keys,
            "safetensors_metadata": file_meta,
            "randomisation_rules": rules,
        }
        (mdir / "cases.json").write_text(json.dumps(meta, indent=1) + "\n")
        summary["modes"][mode] = {"n_keys": len(file_keys), "cases": [c["name"] for c in cases_json]}
        summary["case_table"] = [{k: c[k] for k in ("name", "domain_id", "image_mask", "steps", "note")}
                                 for c in cases_json]

    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (args.out / "PROVENANCE.md").write_text(provenance_markdown(summary, args))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
