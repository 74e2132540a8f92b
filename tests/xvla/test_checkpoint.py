"""Checkpoint loading: official layout, LeRobot prefix, native layout, and named errors for bad files."""

from __future__ import annotations

import json
import shutil

import pytest
torch = pytest.importorskip("torch")  # without it (a robot install) the module skips, not errors
from safetensors.torch import load_file, save_file

from xvla import load_checkpoint
from xvla.errors import CheckpointError, ConfigError
from xvla.keymap import to_official, to_ours


def copy_ckpt(src, dst):
    shutil.copytree(src, dst)
    return dst


def rewrite_weights(ckpt, edit) -> None:
    path = ckpt / "model.safetensors"
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path))


def test_official_key_names_are_written(tiny_checkpoint) -> None:
    keys = set(load_file(str(tiny_checkpoint / "model.safetensors")))
    for key in ["vlm.vision_tower.convs.0.proj.weight", "vlm.vision_tower.blocks.2.1.spatial_block.window_attn.fn.qkv.weight",
                "vlm.vision_tower.blocks.0.0.channel_block.ffn.fn.net.fc2.bias", "vlm.image_projection",
                "vlm.image_pos_embed.row_embeddings.weight", "vlm.language_model.model.shared.weight",
                "vlm.language_model.model.encoder.layers.1.self_attn.q_proj.weight", "transformer.soft_prompt_hub.weight",
                "transformer.action_encoder.fc.weight", "transformer.pos_emb"]:
        assert key in keys, key
    assert not any(".decoder." in k or "lm_head" in k for k in keys)


def test_official_layouts_and_shapes(tiny_checkpoint) -> None:
    state = load_file(str(tiny_checkpoint / "model.safetensors"))
    # image_projection is a raw [vision_dim, projection_dim] matrix used as x @ P
    assert list(state["vlm.image_projection"].shape) == [128, 32]
    # per-domain linear weights: one flattened [in, out] matrix per domain row
    assert list(state["transformer.action_encoder.fc.weight"].shape) == [30, (20 + 20 + 32) * 32]
    assert list(state["transformer.action_decoder.fc.weight"].shape) == [30, 32 * 20]
    assert list(state["transformer.soft_prompt_hub.weight"].shape) == [30, 32 * 32]


def test_keymap_round_trip_is_lossless(tiny_checkpoint) -> None:
    model = load_checkpoint(tiny_checkpoint)
    ours = model.state_dict()
    mapped, dropped = to_ours(to_official(ours))
    assert not dropped and set(mapped) == set(ours)
    assert all(torch.equal(mapped[k], ours[k]) for k in ours)


def test_image_projection_is_transposed_into_the_linear(tiny_checkpoint) -> None:
    raw = load_file(str(tiny_checkpoint / "model.safetensors"))["vlm.image_projection"]
    model = load_checkpoint(tiny_checkpoint)
    x = torch.randn(5, raw.shape[0])
    torch.testing.assert_close(model.vlm.multi_modal_projector.image_projection(x), x @ raw)


def test_lerobot_prefix_and_tied_alias_and_generation_keys(tiny_checkpoint, tmp_path) -> None:
    ckpt = copy_ckpt(tiny_checkpoint, tmp_path / "lerobot")
    def edit(state):
        state["vlm.language_model.model.encoder.embed_tokens.weight"] = state["vlm.language_model.model.shared.weight"].clone()
        state["vlm.language_model.final_logits_bias"] = torch.zeros(1, 1000)
        for k in list(state):
            state["model." + k] = state.pop(k)
    rewrite_weights(ckpt, edit)
    a, b = load_checkpoint(tiny_checkpoint), load_checkpoint(ckpt)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


def test_native_layout_checkpoint_loads(tiny_checkpoint, tmp_path) -> None:
    ckpt = copy_ckpt(tiny_checkpoint, tmp_path / "native")
    model = load_checkpoint(tiny_checkpoint)
    native = {k.replace("vlm.language_encoder.", "vlm.model.language_model.encoder.").replace(
        "vlm.vision_tower.", "vlm.model.vision_tower.").replace("vlm.multi_modal_projector.", "vlm.model.multi_modal_projector."): v
        for k, v in model.state_dict().items()}
    save_file({k: v.contiguous() for k, v in native.items()}, str(ckpt / "model.safetensors"))
    again = load_checkpoint(ckpt)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in again.state_dict().items())


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("transformer.norm.weight"), r"missing keys \(1\): transformer.norm.weight"),
        (lambda s: s.update({"transformer.extra.weight": torch.zeros(3)}), r"unexpected keys \(1\): transformer.extra.weight"),
        (lambda s: s.update({"transformer.pos_emb": torch.zeros(1, 256, 32)}),
         r"transformer.pos_emb: expected \[1, 512, 32\], found \[1, 256, 32\]"),
        (lambda s: s.update({"vlm.image_projection": torch.zeros(32, 128)}),
         r"vlm.multi_modal_projector.image_projection.weight: expected \[32, 128\], found \[128, 32\]"),
    ],
)
def test_weight_problems_are_named(tiny_checkpoint, tmp_path, edit, message) -> None:
    ckpt = copy_ckpt(tiny_checkpoint, tmp_path / "bad")
    rewrite_weights(ckpt, edit)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(ckpt)


def test_missing_and_corrupt_files_are_named(tiny_checkpoint, tmp_path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint directory not found"):
        load_checkpoint(tmp_path / "nope")
    ckpt = copy_ckpt(tiny_checkpoint, tmp_path / "c")
    (ckpt / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match=r"model.safetensors: not a readable safetensors file"):
        load_checkpoint(ckpt)
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no model.safetensors \(or model.safetensors.index.json\) found"):
        load_checkpoint(ckpt)
    (ckpt / "config.json").unlink()
    with pytest.raises(ConfigError, match="config file not found"):
        load_checkpoint(ckpt)


def test_config_weights_mismatch_is_reported(tiny_checkpoint, tmp_path) -> None:
    ckpt = copy_ckpt(tiny_checkpoint, tmp_path / "m")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["depth"] = 3
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"missing keys \(\d+\): transformer.blocks.2"):
        load_checkpoint(ckpt)


def test_sharded_checkpoint_loads(tiny_checkpoint, tmp_path) -> None:
    ckpt = copy_ckpt(tiny_checkpoint, tmp_path / "sharded")
    state = load_file(str(ckpt / "model.safetensors"))
    (ckpt / "model.safetensors").unlink()
    vlm = {k: v for k, v in state.items() if k.startswith("vlm.")}
    head = {k: v for k, v in state.items() if not k.startswith("vlm.")}
    save_file(vlm, str(ckpt / "model-00001-of-00002.safetensors"))
    save_file(head, str(ckpt / "model-00002-of-00002.safetensors"))
    index = {"weight_map": {**{k: "model-00001-of-00002.safetensors" for k in vlm},
                            **{k: "model-00002-of-00002.safetensors" for k in head}}}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    a, b = load_checkpoint(tiny_checkpoint), load_checkpoint(ckpt)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
