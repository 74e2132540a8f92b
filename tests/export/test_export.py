"""``xvla-edge export`` end to end on tiny checkpoints: files, manifest, parity, folding, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

pytestmark = pytest.mark.model  # every test exports bundles (tests/support/tiers.py)

onnx = pytest.importorskip("onnx")  # without it (a robot install) the module skips, not errors
torch = pytest.importorskip("torch")  # without it (a robot install) the module skips, not errors
from onnx import numpy_helper

from runtime.manifest import Manifest
from xvla import load_checkpoint, write_random_checkpoint
from xvla_edge.cli import main
from xvla.preprocessing import ImageProcessor, TextTokenizer


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def checkpoints(work) -> dict[str, Path]:
    out = {}
    for mode in ("ee6d", "joint", "agibot_ee6d", "auto"):
        extra = {"real_action_dim": 14} if mode == "auto" else {}
        out[mode] = write_random_checkpoint(work / f"ckpt-{mode}", "tiny", seed=7, action_mode=mode, **extra)
    return out


BUNDLES = {  # name → (mode, domain, views, precision)
    "ee6d-d3": ("ee6d", 3, 3, "fp32"),
    "ee6d-d17-1view": ("ee6d", 17, 1, "fp32"),
    "ee6d-fp16": ("ee6d", 3, 2, "fp16"),
    "joint": ("joint", 2, 2, "fp32"),
    "agibot": ("agibot_ee6d", 9, 3, "fp32"),
    "auto": ("auto", 0, 1, "fp32"),
}


@pytest.fixture(scope="module")
def bundles(work, checkpoints) -> dict[str, Path]:
    out = {}
    for name, (mode, domain, views, precision) in BUNDLES.items():
        path = work / "bundles" / name
        path.parent.mkdir(exist_ok=True)
        rc = main(["export", str(checkpoints[mode]), "--domain-id", str(domain), "--views", str(views),
                   "--precision", precision, "--out", str(path)])
        assert rc == 0, name
        out[name] = path
    return out


def run_bundle(bundle: Path, images, text, proprio, noise, steps=10, prefix=None, weights=None) -> np.ndarray:
    """Drive the two graphs with onnxruntime directly (independent of the export code's own check); ``prefix``
    [1, T, A] and ``weights`` [1, T]: real-time chunking's inputs (zeros when not given)."""
    man = json.loads((bundle / "manifest.json").read_text())
    views = man["inputs"]["views"]
    pixels, mask = ImageProcessor.from_dir(bundle)(images)
    ids = TextTokenizer(bundle, man["inputs"]["token_length"])(text)
    enc = ort.InferenceSession(str(bundle / "encoder.onnx"), providers=["CPUExecutionProvider"])
    den = ort.InferenceSession(str(bundle / "denoise.onnx"), providers=["CPUExecutionProvider"])
    (context,) = enc.run(None, {"pixel_values": pixels[None, :views], "image_mask": mask[None, :views], "input_ids": ids[None]})
    prev = np.zeros_like(noise)
    mix = {"prefix": np.zeros_like(noise) if prefix is None else prefix,
           "prefix_weights": np.zeros(noise.shape[:2], np.float32) if weights is None else weights}
    for i in range(steps, 0, -1):
        prev, action = den.run(None, {"context": context, "x1": noise, "prev": prev, "proprio": proprio,
                                      "t": np.array([i / steps], np.float32), **mix})
    return action


def torch_chunk(ckpt: Path, domain: int, images, text, proprio, noise, steps=10) -> np.ndarray:
    model = load_checkpoint(ckpt)
    pixels, mask = ImageProcessor.from_dir(ckpt)(images)
    ids = TextTokenizer(ckpt)(text)
    return model.generate_actions(torch.from_numpy(ids)[None], torch.from_numpy(pixels)[None],
                                  torch.from_numpy(mask)[None], torch.tensor([domain]), torch.from_numpy(proprio),
                                  steps=steps, noise=torch.from_numpy(noise)).numpy()


def observation(views: int, dim: int, seed: int = 11):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (90, 70, 3), dtype=np.uint8) for _ in range(views)]
    return images, rng.normal(0, 0.2, (1, dim)).astype(np.float32), rng.standard_normal((1, 30, dim)).astype(np.float32)


def test_files_and_manifest_are_consistent(bundles, checkpoints) -> None:
    bundle = bundles["ee6d-d3"]
    man = Manifest.load(bundle)
    man.verify_files(bundle)
    names = {p.name for p in bundle.iterdir()}
    assert {"manifest.json", "encoder.onnx", "denoise.onnx", "tokenizer.json", "preprocessor_config.json"} <= names
    assert set(man.files) == names - {"manifest.json"}
    raw = man.raw
    assert raw["domain_id"] == 3 and raw["embodiment"] == "libero-franka" and raw["action"]["chunk_seconds"] == 1.0
    assert raw["action"]["mode"] == "ee6d" and raw["action"]["dim"] == 20 and raw["action"]["chunk_length"] == 30
    assert raw["inputs"] == {"token_length": 50, "image_size": 64, "view_slots": 3, "views": 3, "proprio_dim": 20}
    assert raw["export"]["opset"] == 18 and raw["precision"] == "fp32"
    assert [s.name for s in man.encoder.inputs] == ["pixel_values", "image_mask", "input_ids"]
    assert man.encoder.inputs[0].shape == (1, 3, 3, 64, 64)
    assert [s.name for s in man.denoise.inputs] == ["context", "x1", "prev", "proprio", "t", "prefix", "prefix_weights"]
    assert man.supports_prefix and raw["parity"]["prefix"]["max_abs"]["action"] <= 1e-5
    assert man.denoise.outputs[1].shape == (1, 30, 20)
    assert raw["parity"]["passed"] and raw["parity"]["max_abs"]["action"] <= 1e-5
    from xvla.files import sha256_file
    assert raw["source"]["weights_sha256"] == sha256_file(checkpoints["ee6d"] / "model.safetensors")


@pytest.mark.parametrize("name", list(BUNDLES))
def test_bundle_matches_the_pytorch_model(bundles, checkpoints, name) -> None:
    mode, domain, views, precision = BUNDLES[name]
    dim = 14 if mode == "joint" else 20
    images, proprio, noise = observation(views, dim)
    ours = run_bundle(bundles[name], images, "open the top drawer", proprio, noise)
    ref = torch_chunk(checkpoints[mode], domain, images, "open the top drawer", proprio, noise)
    assert ours.shape == ref.shape == (1, 30, 14 if mode in ("joint", "auto") else 20)
    tol = 1e-5 if precision == "fp32" else 2e-3
    np.testing.assert_allclose(ours, ref, atol=tol, rtol=0)


def test_fp16_bundle_is_fp16_inside_with_fp32_islands(bundles) -> None:
    model = onnx.load(str(bundles["ee6d-fp16"] / "denoise.onnx"))
    types = {i.data_type for i in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in model.graph.input if i.name != "t")
    parity = Manifest.load(bundles["ee6d-fp16"]).raw["parity"]
    assert parity["passed"] and parity["chunk"]["position_mm"]["max"] <= 1.0 and parity["chunk"]["gripper_flips"] == 0


def test_the_fp16_bundle_mixes_the_prefix_in_fp32(bundles) -> None:
    """The mix and the post-processing after the last MatMul stay fp32: a weight-1 row comes out as the prefix
    to fp32 rounding (in fp16 it would be off by its half-precision rounding, ~1e-3 of its size)."""
    images, proprio, noise = observation(2, 20)
    prefix = (np.random.default_rng(4).standard_normal((1, 30, 20)) * 3 + 0.1).astype(np.float32)
    weights = np.zeros((1, 30), np.float32)
    weights[0, :8] = 1
    ours = run_bundle(bundles["ee6d-fp16"], images, "open the top drawer", proprio, noise, 4, prefix, weights)
    expected = prefix[0, :8].astype(np.float64)
    expected[:, [9, 19]] = 1 / (1 + np.exp(-expected[:, [9, 19]]))
    np.testing.assert_allclose(ours[0, :8], expected, rtol=0, atol=2e-6)
    half = expected.astype(np.float16).astype(np.float64)
    assert np.abs(half - expected).max() > 1e-3  # what an fp16 mix would have lost


def test_every_bundle_graph_passes_onnx_full_check(bundles) -> None:
    from calibration.graph_check import check_graph

    for name, bundle in bundles.items():
        for graph in ("encoder", "denoise"):
            check_graph(bundle / f"{graph}.onnx")  # raises GraphCheckError naming the file


def test_the_fp16_converter_alone_fails_the_full_check_and_the_tidied_graph_passes(bundles, tmp_path) -> None:
    """What the export fixes: the converter appends its Casts after their consumers and keeps stale value_info."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    from calibration.graph_check import GraphCheckError, check_graph
    from export.onnx_graphs import FP32_OPS, tidy_graph

    model = onnx.load(str(bundles["ee6d-d3"] / "denoise.onnx"))
    half = convert_float_to_float16(model, keep_io_types=True, op_block_list=DEFAULT_OP_BLOCK_LIST + FP32_OPS,
                                    disable_shape_infer=True)
    onnx.save_model(half, str(tmp_path / "raw.onnx"))
    with pytest.raises(GraphCheckError, match="raw.onnx: fails onnx.checker.*topologically sorted"):
        check_graph(tmp_path / "raw.onnx")
    tidy_graph(half)
    onnx.save_model(half, str(tmp_path / "tidy.onnx"))
    check_graph(tmp_path / "tidy.onnx")


def test_domain_is_folded_in_without_the_other_rows(bundles, checkpoints) -> None:
    state = load_checkpoint(checkpoints["ee6d"]).state_dict()
    prompts = state["transformer.soft_prompt_hub.weight"].view(30, 32, -1).numpy()
    model = onnx.load(str(bundles["ee6d-d3"] / "denoise.onnx"))
    assert [i.name for i in model.graph.input] == ["context", "x1", "prev", "proprio", "t", "prefix", "prefix_weights"]
    arrays = [numpy_helper.to_array(i) for i in model.graph.initializer]
    tables = [state[f"transformer.{k}.weight"].numpy() for k in ("soft_prompt_hub", "action_encoder.fc",
                                                                   "action_decoder.fc", "action_decoder.bias")]
    assert not any(a.size == t.size and np.array_equal(a.ravel(), t.ravel()) for a in arrays for t in tables)
    assert not any(a.size == t.size for a in arrays for t in tables[:3])  # no per-domain table at all
    def holds(row: np.ndarray) -> bool:
        return any(a.size == row.size and np.array_equal(a.reshape(row.shape), row) for a in arrays)
    assert holds(prompts[3]) and not holds(prompts[17]) and not holds(prompts[0])
    other = onnx.load(str(bundles["ee6d-d17-1view"] / "denoise.onnx"))
    assert any(np.array_equal(numpy_helper.to_array(i).reshape(prompts[17].shape), prompts[17])
               for i in other.graph.initializer if numpy_helper.to_array(i).size == prompts[17].size)


def test_two_domains_give_different_chunks(bundles) -> None:
    images, proprio, noise = observation(1, 20)
    a = run_bundle(bundles["ee6d-d3"], images + [None, None], "fold the cloth", proprio, noise)
    b = run_bundle(bundles["ee6d-d17-1view"], images, "fold the cloth", proprio, noise)
    assert np.abs(a - b).max() > 1e-2


def run_export(*args: str) -> tuple[int, str]:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["export", *args])
    return rc, err.getvalue()


def test_bad_arguments_are_named(work, checkpoints, bundles) -> None:
    ck = str(checkpoints["ee6d"])
    cases = [
        ([str(work / "missing"), "--domain-id", "0", "--out", str(work / "o1")], "directory not found"),
        ([ck, "--domain-id", "30", "--out", str(work / "o2")], "--domain-id 30 is out of range: this checkpoint has domains 0..29"),
        ([ck, "--domain-id", "0", "--precision", "int4", "--out", str(work / "o3")], "--precision 'int4' is not supported"),
        ([ck, "--domain-id", "0", "--views", "4", "--out", str(work / "o4")], "--views 4 is out of range"),
        ([ck, "--domain-id", "0", "--out", str(checkpoints["ee6d"] / "config.json" / "b")], "is not an existing directory"),
        ([ck, "--domain-id", "0", "--out", str(bundles["ee6d-d3"])], "already exists; pass --force"),
    ]
    for args, message in cases:
        rc, err = run_export(*args)
        assert rc == 1 and message in err, (args, err)


def test_unreadable_tokenizer_or_preprocessor_files_fail_before_tracing(work, checkpoints, monkeypatch) -> None:
    import shutil

    import export.bundle as bundle

    def no_tracing(*args, **kwargs):
        raise AssertionError("tracing started")

    monkeypatch.setattr(bundle, "load_checkpoint", no_tracing)
    for name, damage, message in [
        ("tokenizer.json", None, "no tokenizer found; expected tokenizer.json or vocab.json + merges.txt"),
        ("tokenizer.json", b"{not json", "tokenizer files could not be read"),
        ("preprocessor_config.json", b"{not json", "preprocessor_config.json: not valid JSON"),
        ("preprocessor_config.json", None, "preprocessor_config.json: missing"),
    ]:
        ck = work / f"damaged-{name}-{damage is None}"
        shutil.copytree(checkpoints["ee6d"], ck)
        (ck / name).unlink()
        if damage is not None:
            (ck / name).write_bytes(damage)
        rc, err = run_export(str(ck), "--domain-id", "0", "--out", str(work / "never"))
        assert rc == 1 and message in err and str(ck) in err, (name, err)
        assert not (work / "never").exists()
    rc, err = run_export(str(checkpoints["ee6d"]), "--domain-id", "0", "--image-size", "224", "--out",
                         str(work / "never"))  # a size that contradicts the checkpoint's own file
    assert rc == 1 and "images of 64×64, but an image size of 224 was given" in err, err
    assert not (work / "never").exists()


def test_a_checkpoint_without_preprocessor_file_exports_with_an_explicit_image_size(work, checkpoints) -> None:
    """The bundle then carries the processor it was verified with: X-VLA's usual one at that size, which is
    what the tiny checkpoint's own file says (64², bicubic, ImageNet), so the two preprocess alike."""
    import shutil

    from runtime.policy import Policy
    from xvla.preprocessing import ImageProcessor

    ck = work / "no-preprocessor"
    shutil.copytree(checkpoints["ee6d"], ck)
    (ck / "preprocessor_config.json").unlink()
    rc, err = run_export(str(ck), "--domain-id", "0", "--image-size", "64", "--out", str(work / "sized"))
    assert rc == 0, err
    assert ImageProcessor.from_dir(work / "sized") == ImageProcessor.from_dir(checkpoints["ee6d"])
    policy = Policy.load(work / "sized")
    assert policy.images.output_size == (64, 64)


def test_failed_export_keeps_the_previous_bundle(work, checkpoints, bundles, monkeypatch) -> None:
    import calibration.metrics as metrics

    target = bundles["auto"]
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    monkeypatch.setitem(metrics.TOLERANCES, "fp32", metrics.Tolerance(max_abs=0.0))
    rc, err = run_export(str(checkpoints["auto"]), "--domain-id", "0", "--views", "1", "--force", "--out", str(target))
    assert rc == 1 and "parity check failed" in err and "Nothing was written" in err
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no partial or old directories


def test_force_replaces_a_bundle_once_the_new_one_passes(work, checkpoints) -> None:
    out = work / "bundles" / "replace-me"
    assert main(["export", str(checkpoints["joint"]), "--domain-id", "1", "--views", "1", "--out", str(out)]) == 0
    assert main(["export", str(checkpoints["joint"]), "--domain-id", "4", "--views", "1", "--force", "--out", str(out)]) == 0
    assert Manifest.load(out).domain_id == 4
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]
