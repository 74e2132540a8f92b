"""``export --precision fp16`` passes its gate by construction: the rule islands when they suffice, else the nodes
a search finds kept in fp32 too, recorded in the manifest; refused with the measured errors when nothing passes.

The fp16-sensitive checkpoint (:func:`sensitive_checkpoint`) is a tiny random one (seed 1) whose decoder puts every
pose 4 m further out: positions of 4.2-4.6 m, where fp16's spacing is 3.9 mm, so the decoder's bias Add rounds each
coordinate by up to 2 mm when it runs in fp16 and the rule-based bundle misses the 1 mm limit. Every other layer is
as random as any tiny checkpoint's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

pytestmark = pytest.mark.model  # every test exports bundles (tests/support/tiers.py)

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
from onnx import numpy_helper
from safetensors.torch import load_file, save_file

from runtime.manifest import Manifest
from runtime.manifest_schema import PREFIX_INPUTS
from xvla import load_checkpoint, write_random_checkpoint
from xvla.preprocessing import ImageProcessor, TextTokenizer
from xvla_edge.cli import main

DOMAIN, VIEWS, SHIFT_M = 3, 2, 4.0
DECODER_BIAS = "transformer.action_decoder.bias.weight"  # the official key: [domains, 20]
DENOISE_RULE_INPUTS = ["x1", "prev", "proprio", "t", *PREFIX_INPUTS]  # as export keeps them


@pytest.fixture(scope="module")
def sensitive_checkpoint(tmp_path_factory) -> Path:
    ckpt = write_random_checkpoint(tmp_path_factory.mktemp("fp16") / "sensitive", "tiny", seed=1)
    weights = load_file(str(ckpt / "model.safetensors"))
    weights[DECODER_BIAS][:, [0, 1, 2, 10, 11, 12]] += SHIFT_M  # both arms' xyz
    save_file(weights, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    return ckpt


@pytest.fixture(scope="module")
def exported(sensitive_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """The checkpoint's fp32 bundle, and its fp16 bundle (the search ran)."""
    root = tmp_path_factory.mktemp("fp16-bundles")
    for precision in ("fp32", "fp16"):
        assert main(["export", str(sensitive_checkpoint), "--domain-id", str(DOMAIN), "--views", str(VIEWS),
                     "--precision", precision, "--out", str(root / precision)]) == 0
    return {"fp32": root / "fp32", "fp16": root / "fp16", "root": root}


@pytest.fixture(scope="module")
def rule_graphs(exported) -> Path:
    """The sensitive checkpoint's graphs as the rule islands alone make them."""
    return rule_only(exported["fp32"], exported["root"] / "rule-only")


def rule_only(fp32_bundle: Path, out: Path) -> Path:
    """The fp32 bundle's graphs converted with the rule islands alone (no search)."""
    from export.onnx_graphs import convert_fp16

    out.mkdir()
    for name in ("encoder", "denoise"):
        for suffix in (".onnx", ".onnx.data"):
            shutil.copy(fp32_bundle / f"{name}{suffix}", out / f"{name}{suffix}")
    convert_fp16(out / "encoder.onnx")
    convert_fp16(out / "denoise.onnx", DENOISE_RULE_INPUTS)
    return out


def precisions(path: Path) -> dict[str, int]:
    """Node name → the float element type it computes in (fp16 if any float output is), Casts and Identities (the
    conversion's plumbing) left out: read from ONNX's own shape inference of the file."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False))
    types = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.value_info, *model.graph.output)}
    out = {}
    for node in model.graph.node:
        kinds = {types.get(o) for o in node.output} & {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
        if node.op_type not in ("Cast", "Identity") and kinds:
            out[node.name] = onnx.TensorProto.FLOAT16 if onnx.TensorProto.FLOAT16 in kinds else onnx.TensorProto.FLOAT
    return out


def fp32_nodes(path: Path) -> set[str]:
    return {n for n, t in precisions(path).items() if t == onnx.TensorProto.FLOAT}


def position_error_mm(graphs: Path, ckpt: Path, seed: int = 5) -> float:
    """Largest xyz distance (mm, arm 0) between the graphs' chunk and the PyTorch model's on an observation of
    this test's own (not the export's parity set)."""
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (80, 100, 3), dtype=np.uint8) for _ in range(VIEWS)]
    proprio = rng.normal(0, 0.2, (1, 20)).astype(np.float32)
    noise = rng.standard_normal((1, 30, 20)).astype(np.float32)
    pixels, mask = ImageProcessor.from_dir(ckpt)(images)
    ids = TextTokenizer(ckpt)("put the spoon on the towel")
    enc = ort.InferenceSession(str(graphs / "encoder.onnx"), providers=["CPUExecutionProvider"])
    den = ort.InferenceSession(str(graphs / "denoise.onnx"), providers=["CPUExecutionProvider"])
    (context,) = enc.run(None, {"pixel_values": pixels[None, :VIEWS], "image_mask": mask[None, :VIEWS],
                                "input_ids": ids[None]})
    prev = np.zeros_like(noise)
    for i in range(10, 0, -1):
        prev, ours = den.run(None, {"context": context, "x1": noise, "prev": prev, "proprio": proprio,
                                    "t": np.array([i / 10], np.float32), "prefix": np.zeros_like(noise),
                                    "prefix_weights": np.zeros(noise.shape[:2], np.float32)})  # no prefix
    ref = load_checkpoint(ckpt).generate_actions(
        torch.from_numpy(ids)[None], torch.from_numpy(pixels)[None], torch.from_numpy(mask)[None],
        torch.tensor([DOMAIN]), torch.from_numpy(proprio), steps=10, noise=torch.from_numpy(noise)).numpy()
    return float(1000 * np.linalg.norm(ours[..., 0:3] - ref[..., 0:3], axis=-1).max())


def test_the_rule_islands_miss_the_gate_and_the_searched_bundle_passes(exported, rule_graphs,
                                                                       sensitive_checkpoint) -> None:
    assert position_error_mm(rule_graphs, sensitive_checkpoint) > 1.0  # what today's conversion would have shipped
    assert position_error_mm(exported["fp16"], sensitive_checkpoint) < 0.5
    raw = Manifest.load(exported["fp16"]).raw  # validated on load, mixed_precision included
    search = raw["mixed_precision"]["search"]
    assert not search["before"]["passed"] and search["before"]["chunk"]["position_mm"]["max"] > 1.0
    assert search["after"]["passed"] and raw["parity"]["passed"]
    assert raw["parity"]["chunk"] == search["after"]["chunk"]  # the figures of the graphs written


def test_the_search_keeps_few_nodes_in_fp32_and_the_manifest_names_them(exported, rule_graphs,
                                                                         sensitive_checkpoint) -> None:
    raw = Manifest.load(exported["fp16"]).raw
    rule = rule_graphs
    for graph in ("encoder", "denoise"):
        searched, before = precisions(exported["fp16"] / f"{graph}.onnx"), precisions(rule / f"{graph}.onnx")
        added = {n for n, t in searched.items()
                 if t == onnx.TensorProto.FLOAT and before[n] == onnx.TensorProto.FLOAT16}
        assert added == set(raw["mixed_precision"]["search"]["nodes"][graph]), graph
        assert set(raw["mixed_precision"]["rule"]["nodes"][graph]) == fp32_nodes(rule / f"{graph}.onnx")
        assert fp32_nodes(exported["fp16"] / f"{graph}.onnx") < set(precisions(exported["fp32"] / f"{graph}.onnx"))
        assert onnx.TensorProto.FLOAT16 in searched.values()  # still an fp16 graph
    # the node made sensitive is among them: the Add that reads domain 3's decoder bias
    bias = load_file(str(sensitive_checkpoint / "model.safetensors"))[DECODER_BIAS][DOMAIN].numpy()
    model = onnx.load(str(exported["fp32"] / "denoise.onnx"))
    holding = {t.name for t in model.graph.initializer
               if numpy_helper.to_array(t).size == bias.size and np.array_equal(numpy_helper.to_array(t).ravel(), bias)}
    adds = {n.name for n in model.graph.node if n.op_type == "Add" and holding & set(n.input)}
    assert adds and adds <= set(raw["mixed_precision"]["search"]["nodes"]["denoise"])


def test_the_search_is_deterministic_and_bounded(exported, sensitive_checkpoint, tmp_path) -> None:
    import functools

    from export.mixed_precision import Fp16Refused, fp16_graphs
    from export.verify import measure_parity

    raw = Manifest.load(exported["fp16"]).raw
    gate = functools.partial(measure_parity, load_checkpoint(sensitive_checkpoint), sensitive_checkpoint,
                             domains={DOMAIN: 1}, server=False, prefix=True, views=VIEWS, steps=10,
                             precision="fp16")
    def graphs(folder: Path) -> dict[str, Path]:
        folder.mkdir()
        for name in ("encoder.onnx", "encoder.onnx.data", "denoise.onnx", "denoise.onnx.data"):
            shutil.copy(exported["fp32"] / name, folder / name)
        return {"encoder": folder / "encoder.onnx", "denoise": folder / "denoise.onnx"}
    keep = {"encoder": [], "denoise": DENOISE_RULE_INPUTS}
    again = fp16_graphs(graphs(tmp_path / "again"), keep, gate, progress=lambda line: None)
    assert again.fp32_nodes == raw["mixed_precision"]["search"]["nodes"]
    assert again.search["kept_blocks"] == raw["mixed_precision"]["search"]["kept_blocks"]
    assert again.search["sensitivity"] == raw["mixed_precision"]["search"]["sensitivity"]
    with pytest.raises(Fp16Refused, match=r"stopped at its bound \(3 candidates.*position max \d"):
        fp16_graphs(graphs(tmp_path / "bounded"), keep, gate, progress=lambda line: None, max_candidates=3)


def test_an_impossible_tolerance_is_refused_naming_the_errors_and_the_previous_bundle_stays(
        exported, sensitive_checkpoint, monkeypatch, capsys) -> None:
    import calibration.metrics as metrics

    target = exported["root"] / "previous"
    shutil.copytree(exported["fp16"], target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    monkeypatch.setitem(metrics.TOLERANCES, "fp16", metrics.Tolerance(position_mm=1e-9, rotation_deg=1e-9,
                                                                       joint_deg=1e-9, gripper_flips=0))
    rc = main(["export", str(sensitive_checkpoint), "--domain-id", str(DOMAIN), "--views", str(VIEWS),
               "--precision", "fp16", "--force", "--out", str(target)])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "fp16 cannot meet the tolerance" in err and "even with every node in fp32" in err, err
    for named in ("position max", "rotation max", "gripper flips", "Nothing was written"):
        assert named in err, (named, err)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]


def test_a_bundle_that_passes_with_the_rules_keeps_them_without_a_search(tiny_checkpoint, tiny_bundle, tmp_path,
                                                                         monkeypatch) -> None:
    import export.bundle as bundle

    gated = []
    real = bundle.measure_parity
    monkeypatch.setattr(bundle, "measure_parity", lambda *a, **k: gated.append(1) or real(*a, **k))
    lines: list[str] = []
    out = tmp_path / "fp16"
    bundle.export_bundle(tiny_checkpoint, out, bundle.ExportOptions(domain_id=3, views=1, precision="fp16"),
                         progress=lines.append)
    raw = Manifest.load(out).raw
    assert raw["mixed_precision"]["search"] is None and len(gated) == 1  # one gate: the rule graphs passed it
    assert not any("search" in line for line in lines)
    rule = rule_only(tiny_bundle, tmp_path / "rule-only")  # today's conversion of the same graphs
    for graph in ("encoder", "denoise"):
        assert precisions(out / f"{graph}.onnx") == precisions(rule / f"{graph}.onnx")
        assert set(raw["mixed_precision"]["rule"]["nodes"][graph]) == fp32_nodes(rule / f"{graph}.onnx")


def test_the_fp32_islands_read_the_graph_inputs_unrounded(tiny_bundle, tmp_path) -> None:
    """The converter casts each graph input to fp16 and back for the fp32 nodes that read it (and each fp32
    output to fp16 and back): x1 and prev would reach the re-noise island rounded. The export reconnects them."""
    rule = rule_only(tiny_bundle, tmp_path / "rule-only")
    model = onnx.load(str(rule / "denoise.onnx"), load_external_data=False)
    producer = {o: n for n in model.graph.node for o in n.output}
    def to(node) -> int:
        return next(a.i for a in node.attribute if a.name == "to")
    for node in model.graph.node:
        if node.op_type == "Cast" and to(node) == onnx.TensorProto.FLOAT and node.input[0] in producer:
            inner = producer[node.input[0]]
            assert not (inner.op_type == "Cast" and to(inner) == onnx.TensorProto.FLOAT16), (inner.name, node.name)
    # only the re-noise island (fp32) reads x1 and prev: nothing casts them to fp16 any more
    assert not [n.name for n in model.graph.node if n.op_type == "Cast" and to(n) == onnx.TensorProto.FLOAT16
                and {"x1", "prev"} & set(n.input)]
