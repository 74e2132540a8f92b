"""A LoRA fine-tune through the whole chain: ``xvla-edge export BASE --lora ADAPTER`` → bundle → ``Policy.act`` gives
the chunks of PEFT's own model (tests/fixtures/lora_tiny, made by tools/make_lora_fixtures.py with the official
code and PEFT) within 1e-5; the manifest records the adapter; the torch backend and the calibration gate merge
it again; a failed merge writes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.model  # every test exports or runs a bundle (tests/support/tiers.py)
torch = pytest.importorskip("torch")  # without it (a robot install) the module skips, not errors
pytest.importorskip("onnx")

from runtime.manifest import Manifest  # noqa: E402
from runtime.policy import Policy  # noqa: E402
from runtime.types import Observation  # noqa: E402
from xvla.constants import ADAPTER_CONFIG, ADAPTER_WEIGHTS  # noqa: E402
from xvla.errors import XVLAError  # noqa: E402
from xvla.files import sha256_file  # noqa: E402
from xvla_edge.cli import main  # noqa: E402

FIXTURES = Path(__file__).parent.parent / "fixtures" / "lora_tiny"
BASE, ADAPTER = FIXTURES / "base", FIXTURES / "adapter"
DOMAIN = 3


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((FIXTURES / "cases.json").read_text())


@pytest.fixture(scope="module")
def data():
    return np.load(FIXTURES / "cases.npz")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, str]:
    """The fixture base with the fixture adapter, exported for domain 3 by the command line; (bundle, its output)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("lora") / "bundle"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(["export", str(BASE), "--lora", str(ADAPTER), "--domain-id", str(DOMAIN), "--out", str(out)])
    assert rc == 0, printed.getvalue()
    return out, printed.getvalue()


def observation(data, name: str) -> Observation:
    return Observation(images=list(data[f"{name}/images"]), instruction="", proprio=data[f"{name}/proprio"][0],
                       noise=data[f"{name}/noise"][0])


def check_chunks(policy: Policy, meta: dict, data) -> int:
    """Every domain-3 case of the fixtures through ``policy``: PEFT's chunk within 1e-5. Returns the cases run."""
    cases = [c for c in meta["cases"] if c["domain_id"] == DOMAIN]
    for case in cases:
        name = case["name"]
        obs = observation(data, name)
        obs = Observation(images=obs.images, instruction=case["instruction"], proprio=obs.proprio, noise=obs.noise)
        _, _, ids, _, _ = policy.preprocess(obs)
        np.testing.assert_array_equal(ids, data[f"{name}/input_ids"])  # the official processor's tokens
        chunk = policy.act(obs, steps=case["steps"])
        np.testing.assert_allclose(chunk.actions, data[f"{name}/peft_actions"][0], atol=1e-5, rtol=0, err_msg=name)
    return len(cases)


def test_the_bundle_gives_the_peft_models_chunks(exported, meta, data) -> None:
    bundle, printed = exported
    assert "LoRA adapter adapter merged: r 8, alpha 16" in printed
    with Policy.load(bundle) as policy:
        assert check_chunks(policy, meta, data) >= 3


def test_the_manifest_records_the_adapter(exported, capsys) -> None:
    bundle, _ = exported
    manifest = Manifest.load(bundle)  # validated, source.lora included
    lora = manifest.raw["source"]["lora"]
    config = json.loads((ADAPTER / ADAPTER_CONFIG).read_text())
    assert lora["name"] == "adapter" and Path(lora["path"]) == ADAPTER.resolve()
    assert {k: v["sha256"] for k, v in lora["files"].items()} == {n: sha256_file(ADAPTER / n)
                                                                 for n in (ADAPTER_CONFIG, ADAPTER_WEIGHTS)}
    assert (lora["r"], lora["lora_alpha"]) == (config["r"], config["lora_alpha"]) == (8, 16)
    assert lora["target_modules"] == sorted(config["target_modules"])
    assert lora["modules_to_save"] == sorted(config["modules_to_save"])
    assert manifest.raw["source"]["weights_sha256"] == sha256_file(BASE / "model.safetensors")  # the base's
    assert main(["info", str(bundle)]) == 0
    assert "lora:      adapter merged (r 8, alpha 16, 62 layers; saved transformer.action_decoder" in capsys.readouterr().out


def test_the_torch_backend_merges_the_recorded_adapter_again(exported, meta, data, tmp_path) -> None:
    bundle, _ = exported
    with Policy.load(bundle, backend="torch") as policy:
        check_chunks(policy, meta, data)
    changed = tmp_path / "changed"
    shutil.copytree(ADAPTER, changed)
    config = json.loads((changed / ADAPTER_CONFIG).read_text())
    (changed / ADAPTER_CONFIG).write_text(json.dumps({**config, "lora_alpha": 8}))
    with pytest.raises(XVLAError, match="this is not the adapter the bundle was exported with"):
        Policy.load(bundle, backend="torch", lora=changed)


def test_the_gate_uses_the_merged_model_as_its_reference(exported, tmp_path, capsys) -> None:
    from calibration.capture import synthetic
    from calibration.sets import write_set

    bundle, _ = exported
    write_set(synthetic(Manifest.load(bundle), 3, seed=2), tmp_path / "set")
    rc = main(["calibrate", "check", str(bundle), "--set", str(tmp_path / "set"), "--json", str(tmp_path / "g.json")])
    assert rc == 0, capsys.readouterr()
    report = json.loads((tmp_path / "g.json").read_text())
    assert report["reference"]["lora"] == str(ADAPTER.resolve()) and report["arms"][0]["max_abs"] <= 1e-5
    moved = tmp_path / "moved"
    shutil.copytree(ADAPTER, moved)
    rc = main(["calibrate", "check", str(bundle), "--set", str(tmp_path / "set"), "--reference-lora", str(moved)])
    assert rc == 0  # the same files elsewhere
    (moved / ADAPTER_WEIGHTS).write_bytes((moved / ADAPTER_WEIGHTS).read_bytes()[:-4] + b"\0\0\0\0")
    rc = main(["calibrate", "check", str(bundle), "--set", str(tmp_path / "set"), "--reference-lora", str(moved)])
    assert rc == 2 and "this is not the adapter the bundle was exported with" in capsys.readouterr().err


def test_a_bundle_without_an_adapter_refuses_one(tiny_bundle) -> None:
    with pytest.raises(XVLAError, match="was exported without a LoRA adapter"):
        Policy.load(tiny_bundle, backend="torch", lora=ADAPTER)


def test_a_failed_merge_writes_nothing(tmp_path) -> None:
    from export.bundle import ExportOptions, export_bundle
    from safetensors.numpy import load_file, save_file

    bad = tmp_path / "bad"
    shutil.copytree(ADAPTER, bad)
    state = load_file(str(bad / ADAPTER_WEIGHTS))
    key = "base_model.model.transformer.blocks.1.mlp.fc2.lora_B.weight"
    state[key] = np.zeros((state[key].shape[0] + 1, 8), np.float32)  # passes the reader, fails at the merge
    save_file(state, str(bad / ADAPTER_WEIGHTS))
    with pytest.raises(XVLAError, match=r"fc2.weight gives a \[49, \d+\] update"):
        export_bundle(BASE, tmp_path / "out", ExportOptions(domain_id=DOMAIN, lora=str(bad)), progress=lambda _: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]  # no bundle, no partial directory
