"""`sim train`: the curriculum's batches, and a few steps end to end into a checkpoint every command loads."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from xvla.checkpoint import load_checkpoint  # noqa: E402
from xvla_edge.cli import build_parser  # noqa: E402
from xvla_edge.sim.train import APPROACH_SAMPLES, PROVENANCE_FILE, TrainOptions, batch_indices, train  # noqa: E402


def test_the_first_steps_draw_only_from_the_approach_then_from_everything():
    order = np.tile(np.arange(60), 20)  # 20 demonstrations of 60 samples
    approach = torch.from_numpy(np.flatnonzero(order < APPROACH_SAMPLES))
    options = TrainOptions(steps=100, approach_steps=40, batch_size=64)
    gen = torch.Generator().manual_seed(0)
    early = torch.cat([batch_indices(step, len(order), approach, options, gen) for step in range(1, 41)])
    late = torch.cat([batch_indices(step, len(order), approach, options, gen) for step in range(41, 81)])
    assert order[early.numpy()].max() < APPROACH_SAMPLES
    assert len(set(order[early.numpy()])) == APPROACH_SAMPLES  # the whole approach, not one sample of it
    assert order[late.numpy()].max() >= 50 and order[late.numpy()].min() == 0


@pytest.mark.model
def test_a_short_run_writes_a_loadable_checkpoint_whose_command_reproduces_its_options(tmp_path):
    options = TrainOptions(seed=3, layouts=1, steps=3, approach_steps=2, batch_size=2, warmup_steps=1, log_every=1,
                           refine_steps=2, refine_approach_steps=1)
    lines: list[str] = []
    provenance = train(tmp_path / "ckpt", options, progress=lines.append)
    assert provenance["demonstrations"]["episodes"] == 3 and provenance["demonstrations"]["expert_successes"] == 3
    assert sum(line.startswith("[train] step") for line in lines) == 3
    assert sum(line.startswith("[train] refine step") for line in lines) == 2
    assert json.loads((tmp_path / "ckpt" / PROVENANCE_FILE).read_text()) == provenance
    cfg = load_checkpoint(tmp_path / "ckpt").config
    assert cfg.text_tokens == 8
    argv = shlex.split(provenance["command"].replace("OUT_DIR", str(tmp_path / "again")))
    args = build_parser()[0].parse_args(argv[1:])
    assert (args.seed, args.layouts, args.steps, args.approach_steps) == (3, 1, 3, 2)
    assert (args.refine_steps, args.refine_approach_steps) == (2, 1)
