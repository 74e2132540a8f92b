"""Train the simulated-task policy: the X-VLA network at the ``sim`` size, from scratch, on this CPU.

    xvla-edge sim train --out OUT_DIR [--seed 0] [--layouts 600] [--steps 5600] [--approach-steps 3000]

Demonstrations (:mod:`xvla_edge.sim.demonstrations`: every layout once per block; layout seeds
:func:`train_seeds`, disjoint from the evaluation seeds) → X-VLA's own flow-matching objective
(:mod:`xvla.objective`) with AdamW and a cosine learning rate, the first ``approach_steps`` steps on each
demonstration's first second only (:func:`batch_indices`) → a checkpoint in the official file layout
(config.json, model.safetensors with official key names, preprocessor_config.json, tokenizer files) that
every other command loads like a released one, plus
``PROVENANCE.json`` (command, seed, data generator version, losses, time, machine).

Determinism: data and initialisation follow the seed; floating-point reductions follow the CPU and the
torch build, so the same seed on the same machine and versions gives the same weights, elsewhere a policy
of the same quality.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from benchmarks.machine import cpu_model
from xvla.action_head import DomainAwareLinear
from xvla.constants import CONFIG_FILE, NUM_VIEWS, PREPROCESSOR_FILE, WEIGHTS_FILE
from xvla.errors import ConfigError
from xvla.files import atomic_directory, check_target
from xvla.keymap import to_official
from xvla.model import XVLA
from xvla.objective import flow_matching_loss
from xvla.preprocessing import ImageProcessor, TextTokenizer
from xvla.random_checkpoint import write_tokenizer
from xvla.sizes import size_config
from xvla_edge.sim import demonstrations
from xvla_edge.sim.demonstrations import DOMAIN_ID
from xvla_edge.sim.scene import COLOURS, VERBS

GENERATOR_VERSION = 2  # bump when the scene, expert or sample layout changes (old checkpoints then differ)
SIZE = "sim"
TRAIN_SEED_BASE = 10_000_000  # layout seeds of training data: TRAIN_SEED_BASE + 100_000·seed + i
PROVENANCE_FILE = "PROVENANCE.json"
APPROACH_SAMPLES = round(1.0 / (demonstrations.DT * demonstrations.SAMPLE_EVERY))  # a demonstration's 1st second
IMAGE_POSITION_STD = 2.0  # initial scale of the projector's 2-D image positions (see init_weights)
TRANSFORMER_POSITION_STD = 0.5  # ... and of the action transformer's positions


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    seed: int = 0
    layouts: int = 600
    steps: int = 5600
    approach_steps: int = 3000  # first steps on the approach only (samples < APPROACH_SAMPLES of each run)
    batch_size: int = 16
    samples_per_observation: int = 1
    learning_rate: float = 1.5e-3
    warmup_steps: int = 200
    log_every: int = 100
    # then a refinement: a fresh AdamW at a constant learning rate (the schedule's last), its first
    # refine_approach_steps on the approach again, the rest on everything
    refine_steps: int = 2000
    refine_approach_steps: int = 1500
    refine_learning_rate: float = 1.5e-4

    def __post_init__(self) -> None:
        limits = {"seed": (0, 999), "layouts": (1, 33_333), "steps": (1, 1_000_000), "batch_size": (1, 4096),
                  "samples_per_observation": (1, 64), "approach_steps": (0, 1_000_000),
                  "warmup_steps": (0, 1_000_000), "log_every": (1, 1_000_000), "refine_steps": (0, 1_000_000),
                  "refine_approach_steps": (0, 1_000_000)}
        for name, (lo, hi) in limits.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ConfigError(f"train: {name} = {value!r}; expected an integer {lo} ... {hi}")
        for name in ("learning_rate", "refine_learning_rate"):
            value = getattr(self, name)
            if not (isinstance(value, float) and math.isfinite(value) and 0 < value <= 1):
                raise ConfigError(f"train: {name} = {value!r}; expected a number in (0, 1]")
        if self.approach_steps > self.steps:
            raise ConfigError(f"train: approach_steps = {self.approach_steps} exceeds steps = {self.steps}")
        if self.refine_approach_steps > self.refine_steps:
            raise ConfigError(f"train: refine_approach_steps = {self.refine_approach_steps} exceeds refine_steps = "
                              f"{self.refine_steps}")


def train_seeds(options: TrainOptions) -> range:
    start = TRAIN_SEED_BASE + 100_000 * options.seed
    return range(start, start + options.layouts)


def corpus() -> list[str]:
    """Every instruction the task can give (the tokenizer's training text)."""
    return [f"{phrase} the {colour} block" for phrases in VERBS.values() for phrase in phrases for colour in COLOURS]


def init_weights(model: XVLA, seed: int) -> None:
    """Seeded initialisation: PyTorch's defaults for convolutions and linear layers; token embeddings and
    soft prompts N(0, 0.02); per-domain [in, out] matrices N(0, 1/in), biases 0.

    Positional tables start at the scale of what they are added to, since where a block is is what the
    policy needs from the picture: the projector's 2-D image positions N(0, 2²) (the DaViT features they are
    added to are ~8 per element), the action transformer's N(0, 0.5²) (its projected context tokens are
    ~0.6). At N(0, 0.02) they would be a fraction of a percent of those, and AdamW grows a parameter by
    about the learning rate per step — too slowly for a 20-minute run."""
    torch.manual_seed(seed)
    for module in model.modules():
        if hasattr(module, "reset_parameters") and not isinstance(module, nn.Embedding):
            module.reset_parameters()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, DomainAwareLinear):
                module.fc.weight.normal_(0.0, 1.0 / math.sqrt(module.in_features))
                module.bias.weight.zero_()
            elif isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, 0.02)
        positions = model.vlm.multi_modal_projector.image_position_embed
        positions.row_embeddings.weight.normal_(0.0, IMAGE_POSITION_STD)
        positions.column_embeddings.weight.normal_(0.0, IMAGE_POSITION_STD)
        model.transformer.pos_emb.normal_(0.0, TRANSFORMER_POSITION_STD)


def collect_parallel(seeds: range, side: int, workers: int) -> demonstrations.Samples:
    """:func:`demonstrations.collect` over ``workers`` processes (worker i takes every i-th seed), merged part
    by part: the same samples in the same order for the same seeds and worker count."""
    workers = max(1, min(workers, len(seeds)))
    parts = [seeds[i::workers] for i in range(workers)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            done = list(pool.map(demonstrations.collect, parts, [side] * len(parts)))
    else:
        done = [demonstrations.collect(parts[0], side)]
    names: dict[str, int] = {}
    instr = []
    for part in done:
        remap = np.array([names.setdefault(name, len(names)) for name in part.instructions])
        instr.append(remap[part.instruction])
    return demonstrations.Samples(
        np.concatenate([p.images for p in done]), np.concatenate(instr), list(names),
        np.concatenate([p.proprio for p in done]), np.concatenate([p.actions for p in done]),
        np.concatenate([p.order for p in done]), sum(p.episodes for p in done), sum(p.successes for p in done))


def train(out_dir: str | Path, options: TrainOptions = TrainOptions(), *, force: bool = False,
          progress: Callable[[str], None] = print) -> dict:
    """Train and write the checkpoint to ``out_dir`` (replaced only when complete); returns the provenance."""
    out_dir = Path(out_dir)
    check_target(out_dir, force=force)
    t0 = time.perf_counter()
    torch.set_num_threads(max(1, min(os.cpu_count() or 1, 8)))
    cfg, side = size_config(SIZE)
    data = collect_parallel(train_seeds(options), side, workers=min(2, os.cpu_count() or 1))
    t_data = time.perf_counter() - t0
    progress(f"[train] {data.episodes} demonstrations ({data.successes} successful), {len(data.images)} samples "
             f"in {t_data:.0f} s")
    proc = ImageProcessor(height=side, width=side, crop_height=side, crop_width=side)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(out_dir, force=force) as tmp:
        write_tokenizer(tmp, cfg.text.vocab_size, corpus())
        tokenizer = TextTokenizer(tmp, cfg.text_tokens)
        ids = torch.from_numpy(np.stack([tokenizer(text) for text in data.instructions]))
        model = XVLA(cfg)
        init_weights(model, options.seed)
        model.train()
        losses = _fit(model, data, ids, proc, options, progress)
        model.eval()
        state = to_official({k: v.detach().contiguous() for k, v in model.state_dict().items()})
        (tmp / CONFIG_FILE).write_text(json.dumps(cfg.to_official_dict(), indent=2))
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / PREPROCESSOR_FILE).write_text(json.dumps(proc.to_dict(), indent=2))
        provenance = {
            "command": f"xvla-edge sim train OUT_DIR --seed {options.seed} --layouts {options.layouts} "
                       f"--steps {options.steps} --approach-steps {options.approach_steps} "
                       f"--refine-steps {options.refine_steps} --refine-approach-steps {options.refine_approach_steps}",
            "options": dataclasses.asdict(options), "size": SIZE, "domain_id": DOMAIN_ID,
            "generator_version": GENERATOR_VERSION,
            "demonstrations": {"layouts": options.layouts, "episodes": data.episodes, "expert_successes": data.successes,
                               "samples": int(len(data.images)),
                               "layout_seeds": [train_seeds(options).start, train_seeds(options).stop - 1]},
            "final_losses": losses, "seconds": {"data": round(t_data, 1),
                                                "total": round(time.perf_counter() - t0, 1)},
            "machine": {"processor": cpu_model(), "cpus": os.cpu_count(), "python": platform.python_version(),
                        "torch": torch.__version__},
        }
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    return provenance


def _fit(model: XVLA, data: demonstrations.Samples, ids: torch.Tensor, proc: ImageProcessor,
         options: TrainOptions, progress: Callable[[str], None]) -> dict[str, float]:
    """The scheduled run, then the refinement (a fresh AdamW at ``refine_learning_rate``); the running losses."""
    gen = torch.Generator().manual_seed(options.seed)
    batches = _Batches(data, ids, proc, options)
    opt = torch.optim.AdamW(model.parameters(), lr=options.learning_rate, weight_decay=0.01)
    running: dict[str, float] = {}
    _steps(model, opt, batches, gen, options.steps, options.approach_steps,
           lambda step: options.learning_rate * _schedule(step, options), running, options, progress, "")
    if options.refine_steps:
        opt = torch.optim.AdamW(model.parameters(), lr=options.refine_learning_rate, weight_decay=0.01)
        gen = torch.Generator().manual_seed(options.seed + 3)
        _steps(model, opt, batches, gen, options.refine_steps, options.refine_approach_steps,
               lambda step: options.refine_learning_rate, running, options, progress, "refine ")
    return {k: round(v, 5) for k, v in running.items()}


class _Batches:
    """Training batches as the network takes them: normalised pixels in the view slots, token ids, proprio, chunks."""

    def __init__(self, data: demonstrations.Samples, ids: torch.Tensor, proc: ImageProcessor,
                 options: TrainOptions) -> None:
        self.images = torch.from_numpy(data.images)
        self.proprio, self.actions = torch.from_numpy(data.proprio), torch.from_numpy(data.actions)
        self.instr, self.ids = torch.from_numpy(data.instruction), ids
        self.approach = torch.from_numpy(np.flatnonzero(data.order < APPROACH_SAMPLES))
        self.mean = torch.tensor(proc.mean, dtype=torch.float32).view(1, 1, 3, 1, 1)
        self.std = torch.tensor(proc.std, dtype=torch.float32).view(1, 1, 3, 1, 1)
        self.scale = torch.tensor(proc.rescale_factor, dtype=torch.float32)
        B, self.views, self.side = options.batch_size, self.images.shape[1], self.images.shape[2]
        self.mask = torch.zeros(B, NUM_VIEWS, dtype=torch.bool)
        self.mask[:, :self.views] = True
        self.domain = torch.full((B,), DOMAIN_ID)

    def pixels(self, idx: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(idx), NUM_VIEWS, 3, self.side, self.side)
        out[:, :self.views] = (self.images[idx].permute(0, 1, 4, 2, 3).float() * self.scale - self.mean) / self.std
        return out


def _steps(model: XVLA, opt: torch.optim.Optimizer, b: _Batches, gen: torch.Generator, steps: int,
           approach_steps: int, lr_at: Callable[[int], float], running: dict[str, float], options: TrainOptions,
           progress: Callable[[str], None], label: str) -> None:
    t0 = time.perf_counter()
    sampling = dataclasses.replace(options, approach_steps=approach_steps)
    for step in range(1, steps + 1):
        lr = lr_at(step)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = batch_indices(step, len(b.images), b.approach, sampling, gen)
        terms = flow_matching_loss(model, b.ids[b.instr[idx]], b.pixels(idx), b.mask, b.domain, b.proprio[idx],
                                   b.actions[idx], samples_per_observation=options.samples_per_observation,
                                   generator=gen)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        values = {k: float(v.detach()) for k, v in terms.items()}
        if not math.isfinite(values["loss"]):
            raise FloatingPointError(f"train: loss became {values['loss']} at {label}step {step}")
        for k, value in values.items():
            running[k] = 0.98 * running.get(k, value) + 0.02 * value
        if step % options.log_every == 0 or step == steps:
            progress(f"[train] {label}step {step}/{steps} " + " ".join(f"{k} {v:.4f}" for k, v in running.items())
                     + f" lr {lr:.2e} ({time.perf_counter() - t0:.0f} s)")


def batch_indices(step: int, n: int, approach: torch.Tensor, options: TrainOptions,
                  gen: torch.Generator) -> torch.Tensor:
    """The samples of optimiser step ``step``: for the first ``options.approach_steps`` drawn from
    ``approach`` (the samples of each demonstration's first :data:`APPROACH_SAMPLES`, where the instruction
    decides which way to go), then from all ``n``."""
    if step <= options.approach_steps:
        return approach[torch.randint(len(approach), (options.batch_size,), generator=gen)]
    return torch.randint(n, (options.batch_size,), generator=gen)


def _schedule(step: int, options: TrainOptions) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step <= options.warmup_steps:
        return step / max(options.warmup_steps, 1)
    progress = (step - options.warmup_steps) / max(options.steps - options.warmup_steps, 1)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
