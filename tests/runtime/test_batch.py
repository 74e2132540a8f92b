"""Batched bundles: ``xvla-edge export --batch-sizes`` makes graphs with a dynamic batch dimension, checked
against batch 1 at export; ``Policy.act_batch`` gives every observation the chunk ``Policy.act`` gives it alone."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from runtime.backends.base import BackendError
from runtime.manifest import BundleError, Manifest
from runtime.policy import Policy
from runtime.types import Observation
from xvla.errors import InputError

INSTRUCTIONS = ("pick up the red block", "touch the blue block", "lift the cup", "put the spoon on the towel")


def observations(policy: Policy, count: int, seed: int = 0) -> list[Observation]:
    """Different images (and a missing second view on odd rows), instructions, proprio, noise and timestamps."""
    rng = np.random.default_rng(seed)
    return [Observation(images=[rng.integers(0, 256, (96 + 8 * i, 128, 3), dtype=np.uint8),
                                None if i % 2 else rng.integers(0, 256, (80, 120, 3), dtype=np.uint8)],
                        instruction=INSTRUCTIONS[i % len(INSTRUCTIONS)],
                        proprio=rng.normal(0, 0.3, policy.state_dim).astype(np.float32), timestamp=10.0 + i,
                        noise=rng.standard_normal(policy.chunk_shape[1:], dtype=np.float32))
            for i in range(count)]


def test_export_records_the_sizes_the_batch_dimension_and_the_check(tiny_batch_bundle):
    manifest = Manifest.load(tiny_batch_bundle)
    assert manifest.batch_sizes == (1, 2, 4)
    shapes = {s.name: s.shape for s in (*manifest.encoder.inputs, *manifest.encoder.outputs,
                                        *manifest.denoise.inputs, *manifest.denoise.outputs)}
    assert all(shape[0] == "batch" for name, shape in shapes.items() if name != "t"), shapes
    assert shapes["t"] == (1,)
    check = manifest.raw["parity"]["batch"]
    assert check["passed"] and check["sizes"] == [1, 2, 4] and check["tolerance"] == 1e-5
    assert max(check["max_abs"].values()) <= 1e-5


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_act_batch_equals_act_for_every_observation(tiny_batch_bundle, count):
    with Policy.load(tiny_batch_bundle) as policy:
        obs = observations(policy, count)
        alone = [policy.act(o) for o in obs]
        together = policy.act_batch(obs)
    assert len(together) == count
    for a, b, o in zip(alone, together, obs):
        np.testing.assert_allclose(b.actions, a.actions, rtol=0, atol=1e-5)
        assert b.observation_timestamp == o.timestamp
        np.testing.assert_array_equal(b.timestamps, a.timestamps)
        assert [arm.position.shape for arm in b.arms] == [arm.position.shape for arm in a.arms]
    rows = np.stack([c.actions for c in together])
    assert len({r.tobytes() for r in rows}) == count  # no row is another's chunk


def test_act_batch_of_the_torch_backend_equals_its_act(tiny_batch_bundle):
    with Policy.load(tiny_batch_bundle, backend="torch") as policy:
        obs = observations(policy, 3, seed=1)
        alone = [policy.act(o).actions for o in obs]
        together = [c.actions for c in policy.act_batch(obs)]
        again = policy.act(obs[0]).actions  # back to batch 1 after a batch
    for a, b in zip(alone, together):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(again, alone[0])


def test_a_batch_1_bundle_runs_a_batch_one_by_one(tiny_bundle):
    with Policy.load(tiny_bundle) as policy:
        obs = [Observation(images=[np.full((64, 64, 3), 40 * i, np.uint8)], instruction="lift the cup",
                           proprio=np.full(policy.state_dim, 0.1 * i, np.float32),
                           noise=np.random.default_rng(i).standard_normal(policy.chunk_shape[1:], dtype=np.float32))
               for i in range(3)]
        alone = [policy.act(o).actions for o in obs]
        together = [c.actions for c in policy.act_batch(obs)]
        assert policy.act_batch([]) == []
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(b, a)


def test_a_bad_observation_is_named_by_its_index_and_nothing_runs(tiny_batch_bundle):
    with Policy.load(tiny_batch_bundle) as policy:
        obs = observations(policy, 3)
        obs[2] = Observation(images=obs[2].images, instruction="x", proprio=np.full(policy.state_dim, np.nan, np.float32))
        calls = []
        encode = policy.backend.encode
        policy.backend.encode = lambda *a: calls.append(a) or encode(*a)
        with pytest.raises(InputError, match=r"observations\[2\]: observation.proprio: contains NaN"):
            policy.act_batch(obs)
        with pytest.raises(InputError, match="steps = 0"):
            policy.act_batch(obs[:2], steps=0)
    assert calls == []


def test_the_backend_runs_any_batch_up_to_the_largest_and_refuses_more(tiny_batch_bundle):
    with Policy.load(tiny_batch_bundle) as policy:
        pixels, mask, ids, proprio, x1 = policy.preprocess(observations(policy, 1)[0])
        assert [policy.backend.batch_for(n) for n in (1, 2, 3, 4)] == [1, 2, 3, 4]  # dynamic shapes: no padding
        with pytest.raises(BackendError, match=r"batch of 5: this bundle runs batches of \[1, 2, 4\]"):
            policy.backend.encode(*[np.concatenate([a] * 5) for a in (pixels, mask, ids)])
        policy.backend.encode(*[np.concatenate([a] * 2) for a in (pixels, mask, ids)])
        with pytest.raises(BackendError, match="denoise\\(\\) of a batch of 1 after encode\\(\\) of 2"):
            policy.backend.denoise(x1, proprio, 2)


def test_a_backend_with_fixed_sizes_gets_padded_batches(tiny_batch_bundle):
    """TensorRT's way (a profile per listed size), on ONNX Runtime: 3 observations run as a batch of 4."""
    with Policy.load(tiny_batch_bundle) as policy:
        obs = observations(policy, 3, seed=4)
        alone = [policy.act(o).actions for o in obs]
        policy.backend.any_batch = False
        ran = []
        encode = policy.backend.encode
        policy.backend.encode = lambda px, *a: ran.append(px.shape[0]) or encode(px, *a)
        together = [c.actions for c in policy.act_batch(obs)]
    assert ran == [4] and len(together) == 3
    for a, b in zip(alone, together):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)


@pytest.mark.parametrize("sizes, named", [
    ([2, 4], "batch_sizes = [2, 4]: expected a list of 1 ... 64 sizes, increasing, starting with 1"),
    ([1, 1, 4], "batch_sizes = [1, 1, 4]"),
    ([1, 4, 2], "batch_sizes = [1, 4, 2]"),
    ([1, 65], "batch_sizes = [1, 65]"),
    ([], "batch_sizes = []"),
    ([1, True], "batch_sizes = [1, true]"),
    ("1 2 4", 'batch_sizes = "1 2 4"'),
    (list(range(1, 18)), "at most 16 of them"),
])
def test_batch_sizes_are_validated(tiny_batch_bundle, sizes, named):
    raw = json.loads((tiny_batch_bundle / "manifest.json").read_text())
    raw["batch_sizes"] = sizes
    with pytest.raises(BundleError, match=named.replace("[", r"\[").replace("]", r"\]")):
        Manifest.from_dict(raw)


def test_a_batch_dimension_only_where_the_manifest_declares_batches(tiny_bundle, tiny_batch_bundle):
    batch_1 = json.loads((tiny_bundle / "manifest.json").read_text())
    d = copy.deepcopy(batch_1)
    d["graphs"]["denoise"]["inputs"][1]["shape"][0] = "batch"  # x1 in a batch-1 bundle
    with pytest.raises(BundleError, match=r'graphs.denoise.inputs x1 shape = \["batch", 30, 20\]: expected positive'):
        Manifest.from_dict(d)
    batched = json.loads((tiny_batch_bundle / "manifest.json").read_text())
    for graph, index, shape, named in (("denoise", 4, ["batch"], r't shape = \["batch"\]: expected \[1\]'),
                                       ("denoise", 1, [1, 30, 20], r'x1 shape = \[1, 30, 20\]: expected \["batch", 30, 20\]'),
                                       ("denoise", 1, [30, "batch", 20], r'x1 shape = \[30, "batch", 20\]: expected positive'),
                                       ("encoder", 0, ["batch", 2, 3, 10**6, 10**6], "at most 67108864 elements")):
        d = copy.deepcopy(batched)
        d["graphs"][graph]["inputs"][index]["shape"] = shape
        with pytest.raises(BundleError, match=named):
            Manifest.from_dict(d)


def test_quantize_refuses_a_batched_bundle_by_name(tiny_batch_bundle, tmp_path):
    pytest.importorskip("onnx")
    from calibration.errors import CalibrationError
    from calibration.quantize import quantize_bundle
    from calibration.sets import CalibrationSet

    with pytest.raises(CalibrationError, match=r"exported for batch sizes \[1, 2, 4\]; quantize starts from a batch-1"):
        quantize_bundle(tiny_batch_bundle, CalibrationSet.__new__(CalibrationSet), tmp_path / "int8")


@pytest.mark.parametrize("sizes", [(1, 0), (1, 65), (2, 4), (1, 4, 2)])
def test_export_refuses_bad_batch_sizes_before_any_work(tiny_checkpoint, tmp_path, sizes):
    pytest.importorskip("onnx")
    from export.bundle import ExportError, ExportOptions, export_bundle

    with pytest.raises(ExportError, match=rf"--batch-sizes {' '.join(map(str, sizes))}: expected sizes 1 ... 64, "
                                          "increasing, starting with 1"):
        export_bundle(tiny_checkpoint, tmp_path / "out", ExportOptions(domain_id=3, batch_sizes=sizes))
    assert not (tmp_path / "out").exists()
