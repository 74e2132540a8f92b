"""Demonstrations: every layout once per block, so the picture alone never tells which block to go to."""

from __future__ import annotations

import numpy as np

from xvla_edge.sim.demonstrations import ORDERED_EVERY, SAMPLE_EVERY, collect, episode
from xvla_edge.sim.scene import COLOURS, N_BLOCKS


def test_each_layout_is_demonstrated_once_per_block_from_the_same_start():
    data = collect(range(5, 7), 64)
    assert data.episodes == 2 * N_BLOCKS and data.successes == data.episodes
    runs = [episode(seed, 64, target, SAMPLE_EVERY) for seed in (5, 6) for target in range(N_BLOCKS)]
    assert sum(len(run[1]) for run in runs) == len(data.images)
    for layout in (runs[:N_BLOCKS], runs[N_BLOCKS:]):
        scenes = [run[0] for run in layout]
        assert all(np.array_equal(s.positions, scenes[0].positions) for s in scenes)
        assert sorted(s.colours[s.target] for s in scenes) == sorted(scenes[0].colours)
        first_images = [run[1][0] for run in layout]
        assert all(np.array_equal(im, first_images[0]) for im in first_images)  # the same picture ...
        first_proprio = [run[2][0] for run in layout]
        assert all(np.array_equal(p, first_proprio[0]) for p in first_proprio)
        start = first_proprio[0][:2]
        for scene, run in zip(scenes, layout):  # ... and the first label heads for the named block
            heading = run[3][0][-1, :2] - start
            to_blocks = scene.positions - start
            cosine = to_blocks @ heading / np.linalg.norm(to_blocks, axis=1) / np.linalg.norm(heading)
            assert int(np.argmax(cosine)) == scene.target, (scene.instruction, cosine)
    names = [data.instructions[k] for k in data.instruction]
    assert len(set(names)) == 2 * N_BLOCKS


def test_samples_are_every_second_step_of_the_same_run():
    _, every, proprio_every, _, _ = episode(9, 32)
    _, sparse, proprio_sparse, _, _ = episode(9, 32, sample_every=2)
    assert len(sparse) == (len(every) + 1) // 2
    assert np.array_equal(np.stack(proprio_sparse), np.stack(proprio_every[::2]))
    assert np.array_equal(sparse[3], every[6])


def test_every_third_layout_has_its_colours_in_order_across_the_table():
    ordered = [episode(seed, 32, target, 4)[0] for seed in (ORDERED_EVERY * 7,) for target in range(N_BLOCKS)]
    mixed = [episode(seed, 32, 0, 4)[0] for seed in range(ORDERED_EVERY * 7 + 1, ORDERED_EVERY * 7 + 30)
             if seed % ORDERED_EVERY]
    for scene in ordered:
        assert scene.colours == tuple(COLOURS) and np.all(np.diff(scene.positions[:, 1]) > 0)
    assert any(scene.colours != tuple(COLOURS) for scene in mixed)
