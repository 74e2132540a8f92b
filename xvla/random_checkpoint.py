"""Write random-weight X-VLA checkpoints in the official file layout, at named sizes.

The files are what an official checkpoint directory holds: ``config.json`` (XVLAConfig fields with the
nested ``florence_config``), ``model.safetensors`` with the official key names, ``preprocessor_config.json``
and a BART-style byte-level BPE tokenizer (trained here on a few instructions: the real vocabulary cannot
be downloaded, but the file format and the special-token ids are the real ones). They load through
:func:`xvla.load_checkpoint` like a released checkpoint.

Sizes (``tiny``, ``small``, ``full``): :mod:`xvla.sizes`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import save_file
from torch import nn

from xvla.action_head import DomainAwareLinear
from xvla.constants import CONFIG_FILE, PREPROCESSOR_FILE, WEIGHTS_FILE
from xvla.errors import OutputError
from xvla.files import atomic_directory
from xvla.keymap import to_official
from xvla.model import XVLA
from xvla.preprocessing import ImageProcessor
from xvla.sizes import size_config

INSTRUCTIONS = [
    "pick up the red block and place it in the bowl", "open the top drawer", "close the microwave door",
    "put the spoon on the towel", "fold the cloth", "push the T into the target", "stack the green cube on the blue cube",
    "wipe the table with the sponge", "turn on the stove", "move the eggplant into the pot",
    "pick the bottle and put it in the basket", "lift the lid off the pan", "place the mug on the plate",
]

_RESIDUAL_OUTPUTS = ("proj", "fc2", "out_proj")  # last layer of an attention or MLP branch


@torch.no_grad()
def randomize(model: nn.Module, seed: int) -> None:
    """Give every parameter seeded, non-trivial values at a scale that keeps activations O(1).

    Non-trivial matters: a LayerNorm left at weight 1 / bias 0 or a zero soft prompt would hide a wrong
    key mapping or a transposed matrix from the parity tests. Residual branches (DaViT's depthwise convs,
    attention output and MLP fc2 projections) start small, as in trained networks: otherwise the
    full-size DaViT's residual stream grows to ~1e6 and fp16 overflows on values no real checkpoint has.
    """
    gen = torch.Generator().manual_seed(seed)
    def fill(p: torch.Tensor, std: float, mean: float = 0.0) -> None:
        p.copy_(torch.randn(p.shape, generator=gen) * std + mean)
    done: set[int] = set()
    for module in model.modules():
        if isinstance(module, DomainAwareLinear):  # rows are [in, out] matrices
            fill(module.fc.weight, 1.0 / math.sqrt(module.in_features))
            fill(module.bias.weight, 0.05)
            done.update((id(module.fc.weight), id(module.bias.weight)))
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in done:
                continue
            if isinstance(module, nn.LayerNorm):
                fill(p, 0.1, 1.0 if name == "weight" else 0.0)
            elif isinstance(module, nn.Embedding) or p.dim() < 2 or name == "pos_emb":
                fill(p, 0.02)
            elif isinstance(module, nn.Conv2d) and module.groups > 1:  # depthwise residual convs
                fill(p, 0.02)
            else:  # fan-in scaling; residual-branch outputs 5x smaller
                residual = module_name.rsplit(".", 1)[-1] in _RESIDUAL_OUTPUTS
                fill(p, (0.2 if residual else 1.0) / math.sqrt(p[0].numel()))
    if isinstance(model, XVLA):
        _pose_like_decoder(model, gen)


@torch.no_grad()
def _pose_like_decoder(model: XVLA, gen: torch.Generator) -> None:
    """Make each domain's outputs look like a robot's: poses near a per-domain working point.

    The decoder bias of every domain is a plausible pose (ee6d: positions 0.2–0.6 m, the rot6d of a random
    rotation, gripper logits of either sign; other modes: values of ±0.3) and its weights vary around it by
    centimetres. Fixed-precision errors are then measured at the scale a real chunk has, not at the O(1)
    scale a plain random network outputs.
    """
    from xvla.rotations import matrix_to_rot6d

    dec = model.transformer.action_decoder
    dec.fc.weight.mul_(0.05)
    dim = dec.out_features
    bias = torch.randn(dec.bias.weight.shape, generator=gen) * 0.3
    if model.config.action_mode in ("ee6d", "agibot_ee6d"):
        for base in (0, 10):
            bias[:, base : base + 3] = 0.2 + 0.4 * torch.rand(bias.shape[0], 3, generator=gen)
            q, _ = torch.linalg.qr(torch.randn(bias.shape[0], 3, 3, generator=gen, dtype=torch.float64))
            bias[:, base + 3 : base + 9] = torch.from_numpy(matrix_to_rot6d(q.numpy())).float()
            bias[:, base + 9] = torch.randn(bias.shape[0], generator=gen) * 3.0
    dec.bias.weight.copy_(bias[:, :dim])


def write_tokenizer(out_dir: Path, vocab_size: int, corpus: Sequence[str] = INSTRUCTIONS) -> None:
    """A BART-style byte-level BPE tokenizer trained on ``corpus``: ids 0..3 = <s>, <pad>, </s>, <unk>;
    ``<s> text </s>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=min(vocab_size, 600), special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(list(corpus) * 4, trainer=trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=False)
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "BartTokenizer", "model_max_length": 1024, "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "pad_token": "<pad>", "add_prefix_space": False,
    }, indent=2))


def write_random_checkpoint(out_dir: str | Path, size: str = "tiny", *, seed: int = 0,
                            **overrides: object) -> Path:
    """Write a random-weight checkpoint of a named size to ``out_dir`` (created; must not exist or be empty)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise OutputError(f"{out_dir}: exists and is not empty; choose a new directory")
    cfg, image_size = size_config(size, **overrides)
    torch.manual_seed(seed)
    model = XVLA(cfg)
    randomize(model, seed)
    state = to_official({k: v.contiguous() for k, v in model.state_dict().items()})
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(out_dir, force=out_dir.exists()) as tmp:  # only an empty directory gets here
        (tmp / CONFIG_FILE).write_text(json.dumps(cfg.to_official_dict(), indent=2))
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        proc = ImageProcessor(height=image_size, width=image_size, crop_height=image_size, crop_width=image_size)
        (tmp / PREPROCESSOR_FILE).write_text(json.dumps(proc.to_dict(), indent=2))
        write_tokenizer(tmp, cfg.text.vocab_size)
    return out_dir
