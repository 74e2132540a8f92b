"""Bad settings for the sim commands end in one named error, before anything runs."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from xvla.errors import ConfigError, XVLAError
from xvla_edge.sim.evaluate import EvaluationError, episode_spec, evaluate_cli, run_episodes


@pytest.mark.parametrize("seed, split, match", [
    (-1, "random", "seed -1"), (10_000_000, "random", "training layouts"), (1.5, "random", "seed 1.5"),
    (True, "random", "seed True"), (0, "sideways", "split 'sideways'"),
])
def test_episode_spec_refuses_bad_seeds_and_splits(seed, split, match):
    with pytest.raises(EvaluationError, match=match):
        episode_spec(seed, split)


def test_not_nearest_never_names_the_block_nearest_the_gripper():
    import numpy as np

    for seed in range(40):
        scene, start = episode_spec(seed, "not-nearest")
        nearest = int(np.argmin(np.linalg.norm(scene.positions - start[:2], axis=1)))
        assert scene.target != nearest


@pytest.mark.parametrize("kwargs, match", [
    (dict(latency_s=math.nan), "latency nan"), (dict(latency_s=-0.1), "latency -0.1"),
    (dict(latency_s=3.0), "latency 3.0 s: expected a number 0 ... 1"), (dict(latency_s=True), "latency True"),
    (dict(seeds=[]), "0 episodes"), (dict(seeds=[0, -5]), "seed -5"), (dict(daemon=True, expert=True), "not both"),
    (dict(chunking="fade"), "chunking 'fade': expected one of rtc, blend, replace"),
    (dict(expert=True, chunking="rtc"), "the scripted expert plans from the table and takes no prefix"),
])
def test_run_episodes_refuses_bad_settings(tiny_bundle, kwargs, match):
    kwargs = {"seeds": [0], **kwargs}
    with pytest.raises(EvaluationError, match=match):
        run_episodes(tiny_bundle, **kwargs)


def test_a_missing_bundle_is_named(tmp_path):
    with pytest.raises(XVLAError, match="nothing"):
        run_episodes(tmp_path / "nothing", [0])


@pytest.mark.parametrize("kwargs, match", [
    (dict(episodes=0), "--episodes = 0"), (dict(episodes=10**9), "--episodes"), (dict(seed=-3), "--seed = -3"),
    (dict(name="../up"), "--name '../up'"), (dict(bundle=None), "--bundle is required"),
    (dict(latency_s=[0.1, 7.0]), "latency 7.0"), (dict(latency_s=[0.01 * i for i in range(33)],
                                                       chunking=["blend", "replace"]), "66 cells"),
])
def test_eval_command_refuses_bad_arguments(tiny_bundle, tmp_path, kwargs, match):
    args = dict(bundle=tiny_bundle, backend="onnxruntime", daemon=False, expert=True, episodes=1, seed=0,
                split="random", latency_s=[0.1], out=tmp_path / "out", name=None, progress=None)
    args.update(kwargs)
    with pytest.raises(EvaluationError, match=match):
        evaluate_cli(**args)


def test_the_eval_command_runs_a_grid_of_cells_on_the_same_seeds(tiny_bundle, tmp_path):
    """Each chunking at each latency, the same episodes, one set of files per cell named by it."""
    reports = evaluate_cli(bundle=tiny_bundle, backend="onnxruntime", daemon=False, expert=True, episodes=2, seed=3,
                           split="random", latency_s=[0.1, 0.3], out=tmp_path, name="grid", progress=None,
                           chunking=["blend", "replace"])
    cells = [(r.settings["chunking"], r.settings["latency_s"]) for r in reports]
    assert cells == [("blend", 0.1), ("blend", 0.3), ("replace", 0.1), ("replace", 0.3)]
    assert all([e.seed for e in r.episodes] == [3, 4] for r in reports)
    assert {p.name for p in tmp_path.glob("*.json")} == {f"grid-{c}-{x:g}s.json" for c, x in cells}
    for r in reports:  # every hand-over after the first chunk has its seam
        assert all(len(e.seams) >= e.chunks - 2 for e in r.episodes) and r.summary()["handovers"] > 0


def test_train_options_are_checked():
    pytest.importorskip("torch")
    from xvla_edge.sim.train import TrainOptions

    for bad, match in ((dict(seed=-1), "seed = -1"), (dict(steps=0), "steps = 0"),
                       (dict(learning_rate=math.inf), "learning_rate = inf"), (dict(batch_size=True), "batch_size"),
                       (dict(steps=10, approach_steps=20), "approach_steps = 20 exceeds steps = 10")):
        with pytest.raises(ConfigError, match=match):
            TrainOptions(**bad)


@pytest.mark.subprocess
def test_cli_train_into_an_existing_directory_is_one_line(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "ckpt").mkdir()
    out = subprocess.run([sys.executable, "-m", "xvla_edge", "sim", "train", str(tmp_path / "ckpt")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "already exists" in out.stderr and "Traceback" not in out.stderr
