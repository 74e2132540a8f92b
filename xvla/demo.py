"""``xvla-edge demo``: the pipeline on CPU with random weights.

Example: ``xvla-edge demo --size tiny``

Today: writes a random-weight checkpoint in the official layout, loads it through the same loader as a
released checkpoint, preprocesses a synthetic observation and prints one action chunk with timings.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", default="tiny", choices=["tiny", "small", "full"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--workdir", type=Path, default=None, help="keep the checkpoint here (default: a temp dir)")


def run(args: argparse.Namespace) -> int:
    import torch

    from xvla import load_checkpoint, write_random_checkpoint
    from xvla.preprocessing import ImageProcessor, TextTokenizer

    work = args.workdir or Path(tempfile.mkdtemp(prefix="xvla-demo-"))
    ckpt = work / f"checkpoint-{args.size}"
    t0 = time.perf_counter()
    if not ckpt.exists():
        write_random_checkpoint(ckpt, args.size, seed=0)
    t1 = time.perf_counter()
    model = load_checkpoint(ckpt)
    t2 = time.perf_counter()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), None, rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)]
    pixels, mask = ImageProcessor.from_dir(ckpt)(images)
    ids = TextTokenizer(ckpt, model.config.text_tokens)("pick up the red block and place it in the bowl")
    proprio = np.zeros(model.config.dim_action, np.float32)
    t3 = time.perf_counter()
    chunk = model.generate_actions(
        torch.from_numpy(ids)[None], torch.from_numpy(pixels)[None], torch.from_numpy(mask)[None],
        torch.tensor([0]), torch.from_numpy(proprio)[None], steps=args.steps,
        noise=torch.from_numpy(rng.standard_normal((1, model.config.num_actions, model.config.dim_action)).astype(np.float32)),
    )[0].numpy()
    t4 = time.perf_counter()
    np.set_printoptions(precision=3, suppress=True, linewidth=140)
    print(f"checkpoint: {ckpt} ({args.size}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters)")
    print(f"action chunk {chunk.shape} (first 3 of {chunk.shape[0]} actions):\n{chunk[:3]}")
    print(f"write {t1 - t0:.2f} s | load {t2 - t1:.2f} s | preprocess {t3 - t2:.3f} s | "
          f"chunk ({args.steps} steps) {t4 - t3:.3f} s")
    return 0
