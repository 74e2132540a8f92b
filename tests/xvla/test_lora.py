"""LoRA adapters merged at load, against PEFT itself (tests/fixtures/lora_tiny, made by tools/make_lora_fixtures.py
with the official code and PEFT), and every kind of adapter refused by name."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # without it (a robot install) the module skips, not errors
from safetensors.numpy import load_file as load_np, save_file as save_np  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from xvla import load_checkpoint  # noqa: E402
from xvla.checkpoint import read_weights  # noqa: E402
from xvla.errors import CheckpointError  # noqa: E402
from xvla.keymap import to_ours  # noqa: E402
from xvla.constants import ADAPTER_CONFIG, ADAPTER_WEIGHTS  # noqa: E402
from xvla.lora import LINEAR_LAYERS, read_adapter  # noqa: E402

FIXTURES = Path(__file__).parent.parent / "fixtures" / "lora_tiny"
BASE, ADAPTER = FIXTURES / "base", FIXTURES / "adapter"
QKV = "base_model.model.transformer.blocks.0.attn.qkv"


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((FIXTURES / "cases.json").read_text())


@pytest.fixture(scope="module")
def data():
    return np.load(FIXTURES / "cases.npz")


@pytest.fixture(scope="module")
def merged_model():
    return load_checkpoint(BASE, lora=ADAPTER)


def edited(tmp_path: Path, config=None, tensors=None) -> Path:
    """A copy of the fixture adapter with ``config(dict)`` / ``tensors(dict)`` applied to its files."""
    out = tmp_path / "adapter"
    shutil.copytree(ADAPTER, out)
    if config is not None:
        cfg = json.loads((out / ADAPTER_CONFIG).read_text())
        config(cfg)
        (out / ADAPTER_CONFIG).write_text(json.dumps(cfg))
    if tensors is not None:
        state = load_np(str(out / ADAPTER_WEIGHTS))
        tensors(state)
        save_np(state, str(out / ADAPTER_WEIGHTS))
    return out


# --------------------------------------------------------------------------------------------------------------
# what PEFT adapts, and the merge against PEFT's merge_and_unload
# --------------------------------------------------------------------------------------------------------------
def test_the_adapted_layers_are_the_linear_layers_peft_chose(meta) -> None:
    """PEFT's "all-linear" on the official model adapted exactly the layers LINEAR_LAYERS names (no convolution,
    no image projection, no embedding), and the adapter's pairs are those layers."""
    base_modules = {k.rsplit(".", 1)[0] for k in load_file(str(BASE / "model.safetensors"))}
    ours = {m for m in base_modules if LINEAR_LAYERS.fullmatch(m)}
    assert ours == set(meta["adapted_modules"])
    assert set(read_adapter(ADAPTER).pairs) == ours
    assert any(m.startswith("vlm.vision_tower.") for m in ours) and any(".encoder.layers." in m for m in ours)
    assert not any(".convs." in m or "image_projection" in m for m in meta["adapted_modules"])


def test_merged_weights_equal_pefts_merge_and_unload() -> None:
    adapter = read_adapter(ADAPTER)
    assert (adapter.rank, adapter.alpha, adapter.scale) == (8, 16.0, 2.0)
    ours = load_checkpoint(BASE, lora=ADAPTER).state_dict()
    peft, _ = to_ours(load_file(str(FIXTURES / "merged.safetensors")))
    base, _ = to_ours(read_weights(BASE))
    assert set(peft) - {"vlm.multi_modal_projector.visual_temporal_embed.pos_idx_to_embed"} <= set(ours)
    changed = 0
    for key, want in peft.items():
        np.testing.assert_allclose(ours[key].numpy(), want.numpy(), rtol=0, atol=1e-6, err_msg=key)
        changed += not torch.equal(want, base[key])
    # every adapted layer and every saved module moved: the fixture's adapter is not a zero adapter
    assert changed == len(adapter.pairs) + len(adapter.saved)


def test_the_merged_model_gives_the_peft_models_chunks(merged_model, meta, data) -> None:
    for case in meta["cases"]:
        get = lambda key: torch.from_numpy(data[f"{case['name']}/{key}"])  # noqa: E731
        with torch.no_grad():
            out = merged_model.generate_actions(get("input_ids"), get("image_input"), get("image_mask"),
                                                torch.tensor([case["domain_id"]]), get("proprio"),
                                                steps=case["steps"], noise=get("noise"))
        peft = data[f"{case['name']}/peft_actions"]
        np.testing.assert_allclose(out.numpy(), peft, atol=1e-5, rtol=0, err_msg=case["name"])
        assert np.abs(peft - data[f"{case['name']}/base_actions"]).max() > 1e-2  # the adapter matters


def test_other_ranks_and_alphas_scale_the_update(tmp_path) -> None:
    """lora_alpha / r scales B @ A: alpha 4 instead of 16 gives a quarter of PEFT's update, as PEFT would."""
    quarter = load_checkpoint(BASE, lora=edited(tmp_path, config=lambda c: c.update(lora_alpha=4))).state_dict()
    peft, _ = to_ours(load_file(str(FIXTURES / "merged.safetensors")))
    base, _ = to_ours(read_weights(BASE))
    key = "transformer.blocks.1.mlp.fc2.weight"
    np.testing.assert_allclose((quarter[key] - base[key]).numpy(), ((peft[key] - base[key]) / 4).numpy(), atol=1e-6)


def test_manifest_record(tmp_path) -> None:
    record = read_adapter(ADAPTER).record()
    assert record["name"] == "adapter" and record["r"] == 8 and record["lora_alpha"] == 16.0
    assert set(record["files"]) == {ADAPTER_CONFIG, ADAPTER_WEIGHTS}
    assert record["modules_to_save"] == sorted(["transformer.soft_prompt_hub", "transformer.action_encoder",
                                                "transformer.action_decoder"])
    assert "qkv" in record["target_modules"]


# --------------------------------------------------------------------------------------------------------------
# refusals
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(use_dora=True), "use_dora = true is not supported"),
    (lambda c: c.update(use_rslora=True), "use_rslora = true is not supported"),
    (lambda c: c.update(bias="lora_only"), 'bias = "lora_only" is not supported'),
    (lambda c: c.update(lora_bias=True), "lora_bias = true is not supported"),
    (lambda c: c.update(rank_pattern={"qkv": 4}), "rank_pattern = .* is not supported"),
    (lambda c: c.update(alpha_pattern={"fc1": 32}), "alpha_pattern = .* is not supported"),
    (lambda c: c.update(layers_to_transform=[0]), "layers_to_transform = .* is not supported"),
    (lambda c: c.update(peft_type="LOHA"), "peft_type is 'LOHA'; only LoRA adapters"),
    (lambda c: c.update(r=0), "r = 0; expected an integer 1"),
    (lambda c: c.update(r=4), r"lora_A \[8, \d+\] and lora_B \[\d+, 8\]; expected \[4, in\] and \[out, 4\]"),
    (lambda c: c.update(lora_alpha=float("nan")), "lora_alpha = NaN; expected a finite"),
    (lambda c: c.update(target_modules=".*attn.*"), "a pattern string is not supported"),
    (lambda c: c["target_modules"].append("embed_tokens"), "names 'embed_tokens', which is not a linear layer"),
    (lambda c: c.update(target_modules=["qkv"]), r"adapts '[^']+', which is not among target_modules"),
    (lambda c: c["modules_to_save"].append("transformer.pos_emb"),
     "modules_to_save names 'transformer.pos_emb' but the file holds none"),
])
def test_unsupported_configs_are_refused_by_name(tmp_path, edit, message) -> None:
    with pytest.raises(CheckpointError, match=message):
        read_adapter(edited(tmp_path, config=edit))


def _rename(old: str, new: str):
    return lambda s: s.update({new: s.pop(old)})


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.update({f"{QKV}.lora_B.bias": np.zeros(144, np.float32)}), r"is a LoRA bias \(lora_bias\)"),
    (lambda s: s.update({f"{QKV}.lora_magnitude_vector": np.ones(144, np.float32)}), r"DoRA magnitude vector"),
    (lambda s: s.update({"base_model.model.vlm.language_model.model.shared.lora_embedding_A":
                         np.zeros((8, 1000), np.float32)}), "LoRA on an embedding table"),
    (lambda s: s.pop(f"{QKV}.lora_B.weight"), r"qkv.lora_B.weight is missing \(its other half"),
    (lambda s: s.update({"base_model.model.vlm.vision_tower.convs.0.proj.lora_A.weight": np.zeros((8, 3, 7, 7),
                                                                                                 np.float32)}),
     "adapts 'vlm.vision_tower.convs.0.proj', which is not a linear layer of X-VLA"),
    (lambda s: s.update({"base_model.model.transformer.pos_emb": np.zeros((1, 512, 48), np.float32)}),
     "is neither a LoRA matrix"),
    (_rename(f"{QKV}.lora_A.weight", "transformer.blocks.0.attn.qkv.lora_A.weight"),
     "does not start with 'base_model.model.'"),
    (lambda s: s.__setitem__(f"{QKV}.lora_B.weight", np.full_like(s[f"{QKV}.lora_B.weight"], np.nan)),
     "qkv.lora_B.weight holds non-finite values"),
    (lambda s: s["base_model.model.transformer.soft_prompt_hub.weight"].__setitem__((0, 0), np.inf),
     "soft_prompt_hub.weight holds non-finite values"),
    (lambda s: s.update({f"{QKV}.lora_A.weight": s[f"{QKV}.lora_A.weight"].astype(np.float64)}),
     "has dtype F64; expected F32 or F16"),
])
def test_unsupported_weights_are_refused_by_name(tmp_path, edit, message) -> None:
    with pytest.raises(CheckpointError, match=message):
        read_adapter(edited(tmp_path, tensors=edit))


@pytest.mark.parametrize("edit, message", [
    # a layer the base has no weight for (depth 2: no block 7)
    (lambda s: s.update({k.replace("blocks.0.", "blocks.7."): v for k, v in s.items() if k.startswith(QKV)}),
     r"transformer.blocks.7.attn.qkv.weight matches no weight of the base checkpoint"),
    # an adapter for a wider model: B @ A of another shape
    (lambda s: s.__setitem__(f"{QKV}.lora_B.weight", np.zeros((150, 8), np.float32)),
     r"qkv.weight gives a \[150, 48\] update; the base's transformer.blocks.0.attn.qkv.weight is \[144, 48\]"),
    (lambda s: s.__setitem__("base_model.model.transformer.soft_prompt_hub.weight", np.zeros((31, 1536), np.float32)),
     r"soft_prompt_hub.weight gives a \[31, 1536\] update; the base's .* is \[30, 1536\]"),
])
def test_adapters_for_another_base_are_refused_at_the_merge(tmp_path, edit, message) -> None:
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(BASE, lora=edited(tmp_path, tensors=edit))


def test_missing_torn_and_pickled_files_are_named(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="LoRA adapter directory not found"):
        read_adapter(tmp_path / "nope")
    torn = edited(tmp_path)
    blob = (torn / ADAPTER_WEIGHTS).read_bytes()
    (torn / ADAPTER_WEIGHTS).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match=r"adapter_model.safetensors: not a readable safetensors file, torn or "
                                              "truncated"):
        read_adapter(torn)
    (torn / ADAPTER_WEIGHTS).write_bytes(b"\xff" * 8 + blob[8:])  # a header length beyond the file
    with pytest.raises(CheckpointError, match="torn or truncated"):
        read_adapter(torn)
    (torn / ADAPTER_WEIGHTS).rename(torn / "adapter_model.bin")
    with pytest.raises(CheckpointError, match="adapter_model.bin is a pickle"):
        read_adapter(torn)
    (torn / ADAPTER_CONFIG).write_text("{not json")
    with pytest.raises(CheckpointError, match="adapter_config.json: not valid JSON"):
        read_adapter(torn)
    (torn / ADAPTER_CONFIG).unlink()
    with pytest.raises(CheckpointError, match="adapter_config.json: not found"):
        read_adapter(torn)


def test_a_hub_base_of_another_name_warns(tmp_path, caplog) -> None:
    other = edited(tmp_path, config=lambda c: c.update(base_model_name_or_path="2toINF/X-VLA-Pt"))
    with caplog.at_level(logging.WARNING, logger="xvla.checkpoint"):
        load_checkpoint(BASE, lora=other)
    assert re.search(r"base_model_name_or_path is '2toINF/X-VLA-Pt', the base checkpoint is 'base'", caplog.text)
    caplog.clear()
    assert read_adapter(other).base_warning(tmp_path / "X-VLA-Pt") is None  # the same name: no warning
    local = edited(tmp_path / "l", config=lambda c: c.update(base_model_name_or_path="/data/ckpt/x-vla"))
    assert read_adapter(local).base_warning(BASE) is None  # a path of the training machine says nothing
