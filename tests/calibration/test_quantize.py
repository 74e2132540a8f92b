"""``xvla-edge quantize``: a Q/DQ INT8 bundle that passes the INT8 gate, written atomically from an fp32 bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
onnx = pytest.importorskip("onnx")  # without it (a robot install) the module skips, not errors
from hypothesis import given
from hypothesis import strategies as st

from calibration import quantize as q
from calibration.errors import CalibrationError
from calibration.sets import load_set
from runtime.backends.onnxruntime import create_session
from runtime.manifest import Manifest
from xvla.files import sha256_file
from runtime.policy import Policy
from xvla_edge.cli import main


def digests(bundle: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(bundle.iterdir())}


@pytest.fixture(scope="module")
def int8(fp32_bundle, calib_set, tmp_path_factory) -> tuple[Path, dict, dict]:
    """(INT8 bundle, the command's JSON report, the input bundle's file digests before the run)."""
    before = digests(fp32_bundle)
    out = tmp_path_factory.mktemp("int8")
    assert main(["quantize", str(fp32_bundle), "--set", str(calib_set), "--out", str(out / "bundle"),
                 "--speed-observations", "4", "--json", str(out / "report.json")]) == 0
    return out / "bundle", json.loads((out / "report.json").read_text()), before


def test_int8_bundle_passes_the_gate_against_the_checkpoint(int8, calib_set, tmp_path) -> None:
    bundle, _, _ = int8
    assert main(["calibrate", "check", str(bundle), "--set", str(calib_set), "--json", str(tmp_path / "g.json")]) == 0
    report = json.loads((tmp_path / "g.json").read_text())
    assert report["precision"] == "int8" and report["reference"]["kind"] == "checkpoint"
    assert report["tolerance"] == {"position_mm": 3.0, "rotation_deg": 1.5, "joint_deg": 1.5, "gripper_flips": 0}
    arm = report["arms"][0]
    assert arm["position_mm"]["max"] <= 3.0 and arm["rotation_deg"]["max"] <= 1.5 and arm["gripper_flips"] == 0
    assert arm["max_abs"] > 1e-4  # really INT8: not the fp32 graphs under another name


def test_int8_bundle_is_qdq_with_the_reported_layers_kept_fp32(int8, fp32_bundle) -> None:
    bundle, report, before = int8
    man = Manifest.load(bundle)
    man.verify_files(bundle)
    assert man.precision == "int8" and man.raw["quantization"]["format"] == "QDQ"
    assert man.raw["parity"]["passed"] and man.raw["parity"]["tolerance"]["position_mm"] == 3.0
    assert man.files["denoise.onnx"]["sha256"] != Manifest.load(fp32_bundle).files["denoise.onnx"]["sha256"]
    assert digests(fp32_bundle) == before  # the input bundle was only read
    excluded = set(report["excluded_nodes"])
    assert excluded == set(man.raw["quantization"]["excluded_nodes"])
    checked = 0
    for graph in ("encoder", "denoise"):
        model = onnx.load(str(bundle / f"{graph}.onnx"), load_external_data=False)
        producers = {o: n.op_type for n in model.graph.node for o in n.output}
        inits = {i.name: i for i in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type not in ("MatMul", "Gemm"):
                continue
            quantized = all(producers.get(i) == "DequantizeLinear" for i in node.input[:2])
            assert quantized == (f"{graph}/{node.name}" not in excluded), node.name
            if quantized:  # weights stored as int8, symmetric (zero point 0)
                dq = next(n for n in model.graph.node if n.output[0] == node.input[1])
                if dq.input[0] in inits:
                    checked += 1
                    assert inits[dq.input[0]].data_type == onnx.TensorProto.INT8
                    zp = onnx.numpy_helper.to_array(inits[dq.input[2]])
                    assert zp.dtype == np.int8 and not zp.any()
    assert checked > 0 and report["quantized_nodes"] > len(excluded)


def test_int8_graphs_pass_onnx_full_check_and_follow_tensorrt_qdq_rules(int8, tmp_path) -> None:
    from calibration.graph_check import check_graph, tensorrt_qdq_problems

    for graph in ("encoder", "denoise"):
        check_graph(int8[0] / f"{graph}.onnx")
        model = onnx.load(str(int8[0] / f"{graph}.onnx"))
        assert tensorrt_qdq_problems(model) == []
        assert sum(n.op_type == "DequantizeLinear" for n in model.graph.node) > 0
    # the rules can fail: a zero point moved off 0, and a Q/DQ pair moved onto a MatMul's output
    model = onnx.load(str(int8[0] / "denoise.onnx"))
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and len(n.input) > 2)
    zero = next(t for t in model.graph.initializer if t.name == dq.input[2])
    zero.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(zero) + np.int8(3), zero.name))
    assert any("zero point" in p for p in tensorrt_qdq_problems(model))
    consumer = next(n for n in model.graph.node if dq.output[0] in n.input)
    consumer.op_type = "Softmax"
    assert any("feeds ['Softmax']" in p for p in tensorrt_qdq_problems(model))


def test_search_kept_the_most_sensitive_blocks(int8) -> None:
    _, report, _ = int8
    sensitivity, excluded = report["sensitivity"], report["excluded_blocks"]
    # with every MatMul in INT8 this tiny checkpoint misses the 3 mm limit, so blocks were ranked and kept fp32
    assert sensitivity and excluded
    ranked = sorted(sensitivity, key=lambda b: -sensitivity[b])
    assert excluded == ranked[: len(excluded)]
    assert report["speed"]["fp32_s"] > 0 and report["speed"]["int8_s"] > 0
    assert report["speed"]["speedup"] == pytest.approx(report["speed"]["fp32_s"] / report["speed"]["int8_s"])


@given(st.integers(1, 12), st.integers(0, 12))
def test_bisection_finds_the_fewest_exclusions(n, needed) -> None:
    """Excluding the ``needed`` most sensitive blocks passes, fewer fail (the search runs after all-INT8 failed)."""
    order, needed = [f"b{i}" for i in range(n)], max(needed, 1)
    if needed >= n:  # passing needs every block in fp32: there is no INT8 bundle to write
        with pytest.raises(q.QuantizeFailed):
            q._fewest_exclusions(order, lambda k: k >= needed, lambda _: None)
    else:
        assert q._fewest_exclusions(order, lambda k: k >= needed, lambda _: None) == order[:needed]


def test_an_int8_bundle_keeps_real_time_chunking_and_its_mix_in_fp32(int8, fp32_bundle, calib_set) -> None:
    """The Q/DQ graph keeps the prefix inputs (calibrated with zero weights) and mixes outside any quantized
    op: a weight-1 row is the decoded prefix to fp32 rounding, the rest within the INT8 gate of the fp32 bundle."""
    from xvla.realtime_chunking import scheduled_prefix

    bundle, _, _ = int8
    rows = (np.random.default_rng(3).standard_normal((12, 20)) * 0.8).astype(np.float32)
    prefix = scheduled_prefix(rows, length=30, dim=20, delay=5, horizon=12)
    obs = load_set(calib_set).observation(1, (30, 20))
    with Policy.load(bundle) as int8_policy, Policy.load(fp32_bundle) as fp32_policy:
        assert int8_policy.manifest.supports_prefix
        ours, theirs = (p.act(obs, prefix=prefix).actions for p in (int8_policy, fp32_policy))
    decoded = rows[:5].astype(np.float64)
    decoded[:, [9, 19]] = 1 / (1 + np.exp(-decoded[:, [9, 19]]))
    np.testing.assert_allclose(ours[:5], decoded, rtol=0, atol=1e-6)
    assert 1e-4 < np.abs(ours[5:] - theirs[5:]).max() < 0.05  # INT8 where the network decides


def test_sampler_loop_matches_the_runtime(fp32_bundle, calib_set) -> None:
    """The calibration data and the search's reference come from the same loop the robot runs."""
    s = load_set(calib_set)
    with Policy.load(fp32_bundle, "onnxruntime") as policy:
        man = policy.manifest
        enc, den = (create_session(fp32_bundle / g.file, "cpu", None) for g in (man.encoder, man.denoise))
        for i in range(2):
            obs = s.observation(i, (30, 20))
            pixels, mask, ids, proprio, x1 = policy.preprocess(obs)
            feeds: list = []
            sample = q.Sample({"pixel_values": pixels, "image_mask": mask, "input_ids": ids}, x1, proprio)
            chunk = q.sample_chunk(enc, den, sample, 10, feeds)
            np.testing.assert_array_equal(chunk, policy.act(obs).actions)
            assert [f["t"][0] for f in feeds] == [np.float32(k / 10) for k in range(10, 0, -1)]


def test_failure_leaves_no_output_and_the_input_untouched(fp32_bundle, calib_set, tmp_path, monkeypatch) -> None:
    before = digests(fp32_bundle)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(q, "_final_gate", broken)
    opts = q.QuantizeOptions(overrides={"position_mm": 1e3, "rotation_deg": 1e3}, speed_observations=0)
    with pytest.raises(RuntimeError, match="disk full"):
        q.quantize_bundle(fp32_bundle, load_set(calib_set), tmp_path / "int8", opts)
    assert list(tmp_path.iterdir()) == [] and digests(fp32_bundle) == before


def test_refuses_non_fp32_input_and_writing_into_the_input(int8, calib_set, fp32_bundle) -> None:
    bundle, _, _ = int8
    with pytest.raises(CalibrationError, match="precision 'int8'; quantize starts from an fp32 bundle"):
        q.quantize_bundle(bundle, load_set(calib_set), bundle.parent / "again")
    with pytest.raises(CalibrationError, match="must not be the input bundle"):
        q.quantize_bundle(fp32_bundle, load_set(calib_set), fp32_bundle / "int8")
