"""Real-time chunking inside the exported denoise graph: ``Policy.act(obs, prefix=...)`` on ONNX Runtime against the
reference sampler (:meth:`xvla.model.XVLA.generate_actions` with ``prefix``/``weights``), the manifest's
``supports_prefix``, bundles exported before it, and hostile prefixes refused before anything runs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # without it (a robot install) the module skips, not errors

from runtime.manifest import BundleError, Manifest
from runtime.policy import Policy
from runtime.types import Observation, PrefixUnsupported
from xvla import load_checkpoint
from xvla.errors import InputError
from xvla.preprocessing import ImageProcessor, TextTokenizer
from xvla.realtime_chunking import Prefix, check_prefix, scheduled_prefix

pytestmark = pytest.mark.model

T, A = 30, 20  # the tiny checkpoint's chunk and action width
GRIPPERS = [9, 19]  # ee6d's gripper channels: a sigmoid on them after the last step


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_checkpoint(tiny_checkpoint)


def observation(seed: int = 0, views: int = 1) -> Observation:
    rng = np.random.default_rng(seed)
    return Observation(images=[rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(views)],
                       instruction="put the spoon on the towel", proprio=rng.normal(0, 0.3, A).astype(np.float32),
                       timestamp=5.0, noise=rng.standard_normal((T, A), dtype=np.float32))


def committed(seed: int = 3, rows: int = T) -> np.ndarray:
    """Rows of an executing chunk in the model's representation (positions, rot6d entries, gripper logits)."""
    return (np.random.default_rng(seed).standard_normal((rows, A)) * 0.8).astype(np.float32)


def reference(ckpt, model, o: Observation, domain: int, steps: int, prefix: Prefix | None = None) -> np.ndarray:
    """The PyTorch reference sampler's chunk for ``o`` (same noise), with ``prefix`` mixed in if given."""
    pixels, mask = ImageProcessor.from_dir(ckpt)(o.images)
    ids = TextTokenizer(ckpt)(o.instruction)
    extra = {}
    if prefix is not None:
        rows, weights = prefix.padded(T)
        extra = {"prefix": torch.from_numpy(rows)[None], "weights": torch.from_numpy(weights)[None]}
    return model.generate_actions(torch.from_numpy(ids)[None], torch.from_numpy(pixels)[None],
                                  torch.from_numpy(mask)[None], torch.tensor([domain]),
                                  torch.from_numpy(o.proprio)[None], steps=steps,
                                  noise=torch.from_numpy(o.noise)[None], **extra)[0].numpy()


def decoded(rows: np.ndarray) -> np.ndarray:
    """ee6d's output transform of rows in the model's representation, stated here: a sigmoid on the grippers."""
    out = rows.astype(np.float64)
    out[:, GRIPPERS] = 1 / (1 + np.exp(-out[:, GRIPPERS]))
    return out


def test_the_manifest_says_the_bundle_takes_a_prefix(tiny_bundle, tiny_bundle_before_prefix):
    manifest = Manifest.load(tiny_bundle)
    assert manifest.supports_prefix
    inputs = {s.name: (s.shape, s.dtype) for s in manifest.denoise.inputs}
    assert inputs["prefix"] == ((1, T, A), "float32") and inputs["prefix_weights"] == ((1, T), "float32")
    figures = manifest.raw["parity"]["prefix"]
    assert figures["delay"] == 6 and figures["horizon"] == 15
    assert 0 < figures["max_abs"]["action"] <= 1e-5 and figures["max_abs"]["x0"] <= 1e-5
    assert not Manifest.load(tiny_bundle_before_prefix).supports_prefix
    assert "prefix" not in Manifest.load(tiny_bundle_before_prefix).raw["parity"]


@pytest.mark.parametrize("steps", [1, 4, 10])
def test_zero_weights_give_the_chunk_without_a_prefix(tiny_bundle, tiny_checkpoint, model, steps):
    o = observation(seed=steps)
    zero = Prefix(committed(), np.zeros(T, np.float32))
    with Policy.load(tiny_bundle) as policy:
        today = policy.act(o, steps=steps).actions
        with_zero_weights = policy.act(o, steps=steps, prefix=zero).actions
    np.testing.assert_array_equal(with_zero_weights, today)  # the graph's mix is exact at weight 0
    np.testing.assert_allclose(today, reference(tiny_checkpoint, model, o, 3, steps), rtol=0, atol=1e-6)


@pytest.mark.parametrize("delay,horizon,rows", [(6, 15, 24), (0, 12, 12), (4, 4, 4), (30, 30, 30), (2, 20, 9)])
def test_onnxruntime_equals_the_reference_sampler_with_a_prefix(tiny_bundle, tiny_checkpoint, model, delay, horizon,
                                                                 rows):
    o = observation(seed=delay)
    prefix = scheduled_prefix(committed(rows=rows), length=T, dim=A, delay=delay, horizon=horizon)
    with Policy.load(tiny_bundle) as policy:
        chunk = policy.act(o, steps=5, prefix=prefix).actions
        today = policy.act(o, steps=5).actions
    np.testing.assert_allclose(chunk, reference(tiny_checkpoint, model, o, 3, 5, prefix), rtol=0, atol=1e-5)
    if delay < T:
        assert np.abs(chunk[delay:] - today[delay:]).max() > 1e-4  # the prefix changed the later rows too


def test_a_batched_bundle_mixes_rows_with_and_without_a_prefix(tiny_batch_bundle, tiny_checkpoint, model):
    obs = [observation(seed=20 + i, views=2) for i in range(3)]
    prefixes = [scheduled_prefix(committed(seed=1), length=T, dim=A, delay=4, horizon=15), None,
                scheduled_prefix(committed(seed=2, rows=8), length=T, dim=A, delay=8, horizon=8)]
    with Policy.load(tiny_batch_bundle) as policy:
        together = policy.act_batch(obs, steps=4, prefixes=prefixes)
        alone = [policy.act(o, steps=4, prefix=p) for o, p in zip(obs, prefixes)]
    for o, p, a, b in zip(obs, prefixes, together, alone):
        ref = reference(tiny_checkpoint, model, o, 3, 4, p)
        np.testing.assert_allclose(a.actions, ref, rtol=0, atol=1e-5)
        np.testing.assert_allclose(a.actions, b.actions, rtol=0, atol=1e-5)


def test_a_server_bundle_continues_each_rows_prefix_in_its_own_domain(tiny_server_bundle, tiny_checkpoint, model):
    obs = [observation(seed=30 + i, views=2) for i in range(4)]
    domains = [17, 0, 6, 0]
    prefixes = [scheduled_prefix(committed(seed=i), length=T, dim=A, delay=2 + i, horizon=16) if i != 1 else None
                for i in range(4)]
    with Policy.load(tiny_server_bundle) as server:
        assert server.manifest.supports_prefix
        chunks = server.act_batch(obs, steps=3, domain_ids=domains, prefixes=prefixes)
        one = server.act(obs[0], steps=3, domain_id=17, prefix=prefixes[0])
    for o, d, p, chunk in zip(obs, domains, prefixes, chunks):
        np.testing.assert_allclose(chunk.actions, reference(tiny_checkpoint, model, o, d, 3, p), rtol=0, atol=1e-5)
    np.testing.assert_allclose(one.actions, chunks[0].actions, rtol=0, atol=1e-5)


def test_the_torch_backend_mixes_as_the_reference_sampler(tiny_bundle, tiny_checkpoint, model):
    o = observation(seed=9)
    prefix = scheduled_prefix(committed(seed=4), length=T, dim=A, delay=5, horizon=14)
    with Policy.load(tiny_bundle, backend="torch") as policy:
        with_prefix = policy.act(o, steps=4, prefix=prefix).actions
        zero = policy.act(o, steps=4, prefix=Prefix(prefix.rows, np.zeros_like(prefix.weights))).actions
        today = policy.act(o, steps=4).actions  # after a chunk with a prefix: the buffers are zeros again
    np.testing.assert_allclose(with_prefix, reference(tiny_checkpoint, model, o, 3, 4, prefix), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(zero, today)
    np.testing.assert_allclose(today, reference(tiny_checkpoint, model, o, 3, 4), rtol=0, atol=1e-6)


def test_weight_one_rows_are_the_prefix_after_decoding(tiny_bundle):
    rows = committed(seed=8, rows=20)
    prefix = scheduled_prefix(rows, length=T, dim=A, delay=7, horizon=20)
    with Policy.load(tiny_bundle) as policy:
        chunk = policy.act(observation(seed=1), steps=3, prefix=prefix).actions
    np.testing.assert_allclose(chunk[:7], decoded(rows[:7]), rtol=0, atol=1e-6)
    assert np.abs(chunk[7:] - decoded(np.pad(rows, ((0, 10), (0, 0)))[7:])).max() > 1e-3  # the rest is the model's


def test_device_resident_buffers_bind_the_prefix_once_and_zero_it_after(tiny_bundle):
    """The CUDA path's OrtValues (exercised on the CPU): a prefix reaches the device buffers, and the chunk after
    it, without one, is today's chunk again."""
    o, prefix = observation(seed=4), scheduled_prefix(committed(), length=T, dim=A, delay=3, horizon=15)
    host = Policy.load(tiny_bundle, backend="onnxruntime")
    device = Policy.load(tiny_bundle, backend="onnxruntime", device_buffers=True)
    assert device.backend.on_device
    for p in (None, prefix, None, prefix):
        np.testing.assert_array_equal(device.act(o, steps=4, prefix=p).actions, host.act(o, steps=4, prefix=p).actions)
    np.testing.assert_array_equal(device.act(o, steps=4).actions, host.act(o, steps=4).actions)


def test_act_async_passes_the_prefix(tiny_bundle):
    o, prefix = observation(seed=6), scheduled_prefix(committed(), length=T, dim=A, delay=5, horizon=12)
    with Policy.load(tiny_bundle) as policy:
        np.testing.assert_array_equal(policy.act_async(o, prefix=prefix).result(timeout=60).actions,
                                      policy.act(o, prefix=prefix).actions)


def test_info_says_a_bundle_exported_before_real_time_chunking_lacks_it(tiny_bundle_before_prefix, capsys):
    from xvla_edge.cli import main

    assert main(["info", str(tiny_bundle_before_prefix)]) == 0
    assert "chunking:  no real-time chunking (exported before it: re-export" in capsys.readouterr().out


def test_a_bundle_exported_before_real_time_chunking_refuses_a_prefix_by_name_and_runs_without(
        tiny_bundle, tiny_bundle_before_prefix):
    o = observation(seed=2)
    prefix = scheduled_prefix(committed(), length=T, dim=A, delay=3, horizon=10)
    with Policy.load(tiny_bundle_before_prefix) as old, Policy.load(tiny_bundle) as new:
        with pytest.raises(PrefixUnsupported, match=r"prefix: bundle tiny-before-prefix .* exported before real-time "
                                                    r"chunking.*Re-export it"):
            old.act(o, prefix=prefix)
        with pytest.raises(PrefixUnsupported, match=r"prefixes\[0\]: bundle tiny-before-prefix"):
            old.act_batch([o], prefixes=[prefix])
        assert isinstance(PrefixUnsupported("x"), InputError)
        np.testing.assert_array_equal(old.act(o).actions, new.act(o).actions)  # the same graph but for the mix
        np.testing.assert_array_equal(old.act_batch([o], prefixes=[None])[0].actions, new.act(o).actions)


class Untouchable:
    """A backend that fails the test if anything reaches it."""

    def __getattr__(self, name):
        raise AssertionError(f"the backend was called ({name}) with a refused prefix")


def hand_built(rows, weights) -> Prefix:
    return Prefix(rows, weights)  # a Prefix not made by check_prefix: the policy checks it again


GOOD = check_prefix(committed(rows=10), np.linspace(1, 0, 10, dtype=np.float32), length=T, dim=A)


@pytest.mark.parametrize("prefix,named", [
    (hand_built(np.where(np.arange(200).reshape(10, 20) == 42, np.nan, GOOD.rows), GOOD.weights),
     r"prefix.rows\[2\]\[2\] = nan: expected a finite value"),
    (hand_built(np.full((10, 20), np.inf, np.float32), GOOD.weights), r"prefix.rows\[0\]\[0\] = inf"),
    (hand_built(GOOD.rows * 1e6, GOOD.weights), r"prefix.rows\[0\]\[\d+\] = .*within ±10000"),
    (hand_built(GOOD.rows[:, :14], GOOD.weights), r"prefix.rows: expected \[rows <= 30, 20\] .* got shape \[10, 14\]"),
    (hand_built(committed(rows=31), np.zeros(31, np.float32)), r"prefix.rows: .* got shape \[31, 20\]"),
    (hand_built(GOOD.rows[:0], GOOD.weights[:0]), r"prefix.rows: .*at least one\), got shape \[0, 20\]"),
    (hand_built(GOOD.rows, GOOD.weights[:9]), r"prefix.weights: expected one weight per prefix row \(10\), got 9"),
    (hand_built(GOOD.rows, GOOD.weights * 2), r"prefix.weights\[0\] = 2.0: expected a weight 0 ... 1"),
    (hand_built(GOOD.rows, -GOOD.weights), r"prefix.weights\[0\] = -1.0: expected a weight 0 ... 1"),
    (hand_built(GOOD.rows, np.full(10, np.nan, np.float32)), r"prefix.weights\[0\] = nan"),
    (hand_built(GOOD.rows, GOOD.weights[::-1].copy()), r"prefix.weights\[1\] = .* > weights\[0\] = 0.0: expected "
                                                       r"weights that do not increase"),
    (hand_built("rows", GOOD.weights), r"prefix.rows: expected \[rows <= 30, 20\] numbers"),
    ((GOOD.rows, GOOD.weights), r"prefix: expected an xvla.realtime_chunking.Prefix .* got tuple"),
    (GOOD.rows, r"prefix: expected an xvla.realtime_chunking.Prefix .* got ndarray"),
    ({"rows": GOOD.rows, "weights": GOOD.weights}, r"prefix: expected an xvla.realtime_chunking.Prefix .* got dict"),
])
def test_a_hostile_prefix_is_refused_by_name_and_nothing_reaches_the_backend(tiny_bundle, prefix, named):
    policy = Policy.load(tiny_bundle)
    policy.backend = Untouchable()
    with pytest.raises(InputError, match=named):
        policy.act(observation(), prefix=prefix)
    with pytest.raises(InputError, match=named.replace("prefix", r"prefixes\[1\]", 1)):
        policy.act_batch([observation(), observation(1)], prefixes=[None, prefix])


@pytest.mark.parametrize("prefixes,named", [
    ([GOOD], r"prefixes: expected a list of one prefix \(or None\) per observation \(2\), got list of 1"),
    (GOOD, r"prefixes: expected a list .* got Prefix"),
    ((p for p in [GOOD, GOOD]), r"prefixes: expected a list .* got generator"),
])
def test_act_batch_needs_one_prefix_per_observation(tiny_bundle, prefixes, named):
    policy = Policy.load(tiny_bundle)
    policy.backend = Untouchable()
    with pytest.raises(InputError, match=named):
        policy.act_batch([observation(), observation(1)], prefixes=prefixes)


@pytest.mark.parametrize("change,named", [
    (lambda ins: [i for i in ins if i["name"] != "prefix_weights"], r"graphs.denoise.inputs names .* expected "
                                                                    r"exactly .*prefix, prefix_weights"),
    (lambda ins: [{**i, "dtype": "float16"} if i["name"] == "prefix" else i for i in ins],
     r"graphs.denoise.inputs prefix dtype = \"float16\": expected 'float32'"),
    (lambda ins: [{**i, "shape": [1, 30]} if i["name"] == "prefix" else i for i in ins],
     r"graphs.denoise.inputs prefix shape = \[1, 30\]: expected \[1, 30, 20\]"),
    (lambda ins: [{**i, "shape": [1, 29]} if i["name"] == "prefix_weights" else i for i in ins],
     r"graphs.denoise.inputs prefix_weights shape = \[1, 29\]: expected \[1, 30\]"),
])
def test_the_prefix_inputs_are_validated_by_name(tiny_bundle, change, named):
    raw = json.loads((tiny_bundle / "manifest.json").read_text())
    raw["graphs"]["denoise"]["inputs"] = change(raw["graphs"]["denoise"]["inputs"])
    with pytest.raises(BundleError, match=named):
        Manifest.from_dict(raw)


def test_a_manifest_that_drops_the_prefix_inputs_of_its_graph_is_refused(tiny_bundle, tmp_path):
    """Editing the manifest to hide the inputs does not make the graph an older one: the graph's own I/O is
    checked against it when the policy loads."""
    bundle = shutil.copytree(tiny_bundle, tmp_path / "edited")
    raw = json.loads((bundle / "manifest.json").read_text())
    raw["graphs"]["denoise"]["inputs"] = [i for i in raw["graphs"]["denoise"]["inputs"]
                                          if i["name"] not in ("prefix", "prefix_weights")]
    (bundle / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(Exception, match=r"prefix: declared by the graph, not in the manifest"):
        Policy.load(bundle, backend="onnxruntime")
