"""Bundles cannot lie: every manifest field is validated with its name, the directory holds exactly the listed
files, graph files are inventory members, and the bundle id is the sha256 of the canonical manifest."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import shutil

import pytest

from runtime.backends.base import BackendError
from runtime.manifest import BundleError, Manifest
from runtime.manifest_schema import MAX_STEPS
from runtime.policy import Policy


@pytest.fixture()
def raw(tiny_bundle) -> dict:
    return json.loads((tiny_bundle / "manifest.json").read_text())


def refused(d: dict) -> str:
    with pytest.raises(BundleError) as info:
        Manifest.from_dict(d)
    return str(info.value)


def edited(raw: dict, path: str, value) -> dict:
    d = copy.deepcopy(raw)
    *parents, key = path.split(".")
    target = d
    for p in parents:
        target = target[p]
    if value is KeyError:
        del target[key]
    else:
        target[key] = value
    return d


@pytest.mark.parametrize("path, value, named", [
    ("action.mode", "bogus", 'action.mode = "bogus": expected one of "ee6d"'),
    ("action.chunk_seconds", -1.0, "action.chunk_seconds = -1.0"),
    ("action.chunk_seconds", 0, "action.chunk_seconds = 0"),
    ("action.chunk_seconds", math.nan, "action.chunk_seconds = nan"),
    ("action.chunk_seconds", math.inf, "action.chunk_seconds = inf"),
    ("action.chunk_seconds", "1", 'action.chunk_seconds = "1"'),
    ("action.output_dim", 21, "action.output_dim = 21: expected an integer 1 ... action.dim (20)"),
    ("action.gripper_channels", [9], "action.gripper_channels = [9]: expected [9, 19]"),
    ("action.arms", True, "action.arms = true"),
    ("domain_id", -1, "domain_id = -1"),
    ("domain_id", "3", 'domain_id = "3"'),
    ("embodiment", "../../escaped", 'embodiment = "../../escaped": expected a plain name'),
    ("sampler.default_steps", 10**9, f"sampler.default_steps = 1000000000: expected an integer 1 ... {MAX_STEPS}"),
    ("sampler.default_steps", 0, "sampler.default_steps = 0"),
    ("inputs.image_size", 10**6, "inputs.image_size = 1000000"),
    ("inputs.views", 4, "inputs.views = 4"),
    ("inputs.proprio_dim", 14, "inputs.proprio_dim = 14: expected an integer 20 ... 1024 (the action width, 20,"),
    ("inputs.proprio_dim", 32, "graphs.denoise.inputs proprio shape"),  # wider, but the graph says 20
    ("inputs.state_dim", 20, "inputs.state_dim = 20: expected an integer 1 ... 19 (narrower than inputs.proprio_dim)"),
    ("inputs.state_dim", "8", 'inputs.state_dim = "8"'),
    ("precision", "int4", 'precision = "int4"'),
    ("files", {}, "files = {}: expected an object listing every file"),
    ("graphs.encoder.file", "../x.onnx", 'graphs.encoder.file = "../x.onnx": expected a file listed in files'),
    ("graphs.denoise.file", "/etc/passwd", 'graphs.denoise.file = "/etc/passwd"'),
    ("action.dim", KeyError, "action.dim: missing"),
])
def test_every_field_is_validated_by_name(raw, path, value, named):
    assert named in refused(edited(raw, path, value))


def test_shapes_must_agree_with_the_fields_they_come_from(raw):
    """An edited size is a named problem, not a numpy broadcast error at run time."""
    d = edited(raw, "inputs.image_size", raw["inputs"]["image_size"] * 2)
    assert "graphs.encoder.inputs pixel_values shape" in refused(d) and "(from action and inputs)" in refused(d)
    d = copy.deepcopy(raw)
    d["graphs"]["denoise"]["inputs"][0]["shape"] = [1, 3, 9]
    assert "context" in refused(d)
    d = copy.deepcopy(raw)
    d["graphs"]["encoder"]["inputs"][0]["shape"] = [1, 2**20, 3, 2**20, 2**20]
    assert "at most" in refused(d)


def test_file_names_must_be_plain(raw):
    for name in ("../outside.onnx", "sub/x.onnx", "/abs.onnx", "..", "manifest.json"):
        d = copy.deepcopy(raw)
        d["files"][name] = {"sha256": "0" * 64, "bytes": 1}
        assert f'files: "{name}" is not a plain file name' in refused(d)


def test_all_problems_are_reported_together(raw):
    d = edited(edited(raw, "domain_id", -1), "sampler.default_steps", 0)
    lines = refused(d).splitlines()
    assert len(lines) == 2 and all(line.startswith("manifest.json: ") for line in lines)


def test_the_directory_must_hold_exactly_the_listed_files(tiny_bundle, tmp_path):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "b")
    Policy.load(bundle).close()
    (bundle / "engines").mkdir()  # built on the robot, stamped on its own: allowed
    Manifest.load(bundle).verify_files(bundle)
    man = json.loads((bundle / "manifest.json").read_text())
    del man["files"]["encoder.onnx.data"]  # drop a file from the inventory, then tamper with it
    (bundle / "manifest.json").write_text(json.dumps(man))
    data = bytearray((bundle / "encoder.onnx.data").read_bytes())
    data[64] ^= 0xFF
    (bundle / "encoder.onnx.data").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="encoder.onnx.data not listed in manifest.json"):
        Policy.load(bundle)
    shutil.copy2(tiny_bundle / "manifest.json", bundle / "manifest.json")
    shutil.copy2(tiny_bundle / "encoder.onnx.data", bundle / "encoder.onnx.data")
    (bundle / "extra.onnx").write_bytes(b"x")
    with pytest.raises(BundleError, match="extra.onnx not listed in manifest.json"):
        Policy.load(bundle)


def test_bundle_id_is_the_sha256_of_the_canonical_manifest(tiny_bundle, raw):
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    manifest = Manifest.load(tiny_bundle)
    assert manifest.bundle_id == hashlib.sha256(canonical.encode()).hexdigest()
    spaced = json.loads(json.dumps(raw, indent=4))  # formatting does not change the id; any field does
    assert Manifest.from_dict(spaced).bundle_id == manifest.bundle_id
    assert Manifest.from_dict(edited(raw, "action.chunk_seconds", 2.5)).bundle_id != manifest.bundle_id


def test_the_graph_files_must_declare_what_the_manifest_promises(tiny_bundle, tmp_path):
    """A manifest edited consistently with itself still cannot disagree with its ONNX graphs."""
    bundle = shutil.copytree(tiny_bundle, tmp_path / "b")
    man = json.loads((bundle / "manifest.json").read_text())
    for graph, key in (("encoder", "outputs"), ("denoise", "inputs")):
        context = next(t for t in man["graphs"][graph][key] if t["name"] == "context")
        context["shape"][1] += 1
    (bundle / "manifest.json").write_text(json.dumps(man))
    Manifest.load(bundle).verify_files(bundle)  # valid as a manifest, every file intact
    with pytest.raises(BackendError, match=r"encoder.onnx does not match manifest.json: context: the graph declares"):
        Policy.load(bundle, backend="onnxruntime")


def test_info_shows_the_id_and_refuses_a_lying_bundle(tiny_bundle, raw, tmp_path, capsys):
    from xvla_edge.cli import main

    expected = hashlib.sha256(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert main(["info", str(tiny_bundle), "--verify"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{tiny_bundle}: bundle {expected}\n") and "sizes and sha256 verified" in out
    assert f"engines:   none (TensorRT engines are built on the robot: `xvla-edge build {tiny_bundle}`)" in out
    assert "chunking:  real-time chunking supported (the denoise graph takes a prefix)" in out
    assert main(["info", str(tiny_bundle), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bundle_id"] == expected
    bundle = shutil.copytree(tiny_bundle, tmp_path / "b")
    (bundle / "manifest.json").write_text(json.dumps(edited(raw, "action.chunk_seconds", -2.0)))
    assert main(["info", str(bundle)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("xvla-edge info: error: ") and "action.chunk_seconds = -2.0" in err


def test_oversize_and_deeply_nested_manifests_are_refused_by_name(tmp_path):
    for name, text in (("nested", "[" * 100_000 + "]" * 100_000), ("huge", '{"pad": "' + "x" * (2 << 20) + '"}'),
                       ("truncated", '{"schema_version": 1, "files": {')):
        bundle = tmp_path / name
        bundle.mkdir()
        (bundle / "manifest.json").write_text(text)
        with pytest.raises(BundleError, match=rf"{name}/manifest.json: "):
            Manifest.load(bundle)


def test_a_manifest_edited_to_another_domain_is_refused(tiny_bundle, tmp_path):
    """The denoise graph carries the domain folded into it; a manifest that names another one is refused at load
    (the graph's own stamp read without the onnx package, compared with what onnx itself reads)."""
    import onnx

    from runtime.graph_stamp import DOMAIN_KEY, read_metadata

    assert read_metadata(tiny_bundle / "denoise.onnx") == {
        p.key: p.value for p in onnx.load(str(tiny_bundle / "denoise.onnx"), load_external_data=False).metadata_props}
    assert read_metadata(tiny_bundle / "denoise.onnx")[DOMAIN_KEY] == "3"
    bundle = shutil.copytree(tiny_bundle, tmp_path / "b")
    man = json.loads((bundle / "manifest.json").read_text())
    man["domain_id"] = 7
    (bundle / "manifest.json").write_text(json.dumps(man))
    Manifest.load(bundle).verify_files(bundle)  # valid as a manifest, every file intact
    with pytest.raises(BundleError, match=r"manifest.json: domain_id = 7, but denoise.onnx was exported for domain 3"):
        Policy.load(bundle)


@pytest.mark.parametrize("damage", [b"", b"\x08", b"\xff" * 20, b"\x72\xff\xff\xff\xff\x0f", b"\x0b"])
def test_a_graph_that_is_not_onnx_is_refused_by_name_when_its_stamp_is_read(tmp_path, damage):
    from runtime.graph_stamp import read_metadata

    path = tmp_path / "denoise.onnx"
    path.write_bytes(damage)
    if damage:
        with pytest.raises(BundleError, match=rf"{path}: not an ONNX model"):
            read_metadata(path)
    else:
        assert read_metadata(path) == {}


def test_a_directory_named_manifest_json_is_named_as_such(tmp_path):
    (tmp_path / "b" / "manifest.json").mkdir(parents=True)
    with pytest.raises(BundleError, match=r"b/manifest.json: a directory or other non-file; expected the bundle's manifest"):
        Manifest.load(tmp_path / "b")


LORA = {"name": "X-VLA-libero-spatial-peft", "path": "/data/X-VLA-libero-spatial-peft",
        "files": {"adapter_config.json": {"sha256": "a" * 64, "bytes": 900},
                  "adapter_model.safetensors": {"sha256": "b" * 64, "bytes": 10**8}},
        "r": 8, "lora_alpha": 16.0, "target_modules": ["fc1", "qkv"], "modules_to_save": ["transformer.soft_prompt_hub"],
        "layers": 148, "base_model_name_or_path": "2toINF/X-VLA-Pt"}


def test_the_lora_block_is_optional_and_validated(raw):
    assert "lora" not in raw["source"]  # a manifest without it (every bundle before adapters) stays valid
    with_lora = edited(raw, "source.lora", LORA)
    assert Manifest.from_dict(with_lora).raw["source"]["lora"] == LORA
    for path, value, named in [
        ("r", 0, "source.lora.r = 0: expected an integer 1 ... 4096"),
        ("lora_alpha", math.nan, "source.lora.lora_alpha = nan: expected a finite non-zero number"),
        ("name", "../escaped", 'source.lora.name = "../escaped": expected the adapter directory'),
        ("files", {"adapter_config.json": LORA["files"]["adapter_config.json"]}, "source.lora.files = "),
        ("files", {**LORA["files"], "adapter_config.json": {"sha256": "xyz", "bytes": 1}}, "source.lora.files = "),
        ("target_modules", [], "source.lora.target_modules = []: expected a non-empty list"),
        ("modules_to_save", [7], "source.lora.modules_to_save = [7]: expected a list of module names"),
        ("base_model_name_or_path", 3, "source.lora.base_model_name_or_path = 3: expected a string or null"),
        ("layers", KeyError, "source.lora.layers: missing"),
    ]:
        assert named in refused(edited(with_lora, f"source.lora.{path}", value)), path
    assert "source.lora = [1]: expected an object" in refused(edited(raw, "source.lora", [1]))
