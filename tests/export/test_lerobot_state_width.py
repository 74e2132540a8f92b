"""A LeRobot X-VLA checkpoint whose proprio input is LeRobot's default ``max_state_dim`` (32, wider than the
20-wide ee6d action), whose robot state is narrower (8 values, zero-padded) and whose tokenizer sits in
``tokenizer/``: it loads, exports to a bundle that says so (``proprio_dim`` 32, ``state_dim`` 8), and
``Policy.act`` on 8 state values gives the PyTorch model's chunk on the zero-padded 32. (The same against
LeRobot's own code: ``tests/xvla/test_parity_lerobot.py``.)"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from safetensors.torch import load_file, save_file  # noqa: E402

from runtime.policy import Policy  # noqa: E402
from runtime.types import Observation  # noqa: E402
from xvla.checkpoint import load_checkpoint  # noqa: E402
from xvla.errors import XVLAError  # noqa: E402

STATE, PROPRIO = 8, 32


@pytest.fixture(scope="module")
def lerobot_checkpoint(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint rewritten as LeRobot saves one: ``type: xvla`` config with LeRobot's field names,
    ``model.``-prefixed weights, and an action encoder sized for a 32-wide proprio (new rows seeded)."""
    out = tmp_path_factory.mktemp("lerobot") / "pretrained_model"
    shutil.copytree(tiny_checkpoint, out)
    d = json.loads((out / "config.json").read_text())
    d.pop("model_type")
    d.update(type="xvla", chunk_size=d.pop("num_actions"), max_state_dim=PROPRIO, use_proprio=True,
             input_features={"observation.state": {"type": "STATE", "shape": [STATE]},
                             "observation.images.image": {"type": "VISUAL", "shape": [3, 64, 64]}},
             output_features={"action": {"type": "ACTION", "shape": [20]}})
    (out / "config.json").write_text(json.dumps(d, indent=4))
    state = load_file(str(out / "model.safetensors"))
    key = "transformer.action_encoder.fc.weight"
    domains, flat = state[key].shape
    hidden = state["transformer.action_encoder.bias.weight"].shape[1]
    rows = flat // hidden  # 20 (x_t) + 20 (proprio) + dim_time
    old = state[key].view(domains, rows, hidden)
    gen = torch.Generator().manual_seed(7)
    extra = torch.randn(domains, PROPRIO - 20, hidden, generator=gen) * old.std()
    wide = torch.cat([old[:, :40], extra, old[:, 40:]], dim=1)  # [x_t 20 | proprio 32 | time]
    state[key] = wide.reshape(domains, -1).contiguous()
    save_file({"model." + k: v for k, v in state.items()}, str(out / "model.safetensors"))
    (out / "tokenizer").mkdir()  # where LeRobot keeps the tokenizer since August 2026
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json"):
        if (out / name).is_file():
            (out / name).rename(out / "tokenizer" / name)
    return out


def test_the_padded_state_reaches_the_network_as_lerobot_pads_it(lerobot_checkpoint, tmp_path):
    from export.bundle import ExportOptions, export_bundle

    model = load_checkpoint(lerobot_checkpoint)
    assert (model.config.dim_proprio, model.config.state_width) == (PROPRIO, STATE)
    manifest = export_bundle(lerobot_checkpoint, tmp_path / "b", ExportOptions(domain_id=3, views=1),
                             progress=lambda s: None)
    assert manifest["parity"]["passed"]
    assert (manifest["inputs"]["proprio_dim"], manifest["inputs"]["state_dim"]) == (PROPRIO, STATE)
    assert "tokenizer.json" in manifest["files"]  # taken from the checkpoint's tokenizer/ sub-directory
    policy = Policy.load(tmp_path / "b")
    assert policy.state_dim == STATE
    rng = np.random.default_rng(0)
    state = rng.normal(0, 0.5, STATE).astype(np.float32)
    noise = rng.standard_normal((30, 20)).astype(np.float32)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    chunk = policy.act(Observation(images=[image], instruction="pick up the cup", proprio=state, noise=noise), steps=3)
    pixels, mask, ids, padded, x1 = policy.preprocess(Observation(images=[image], instruction="pick up the cup",
                                                                  proprio=state, noise=noise))
    np.testing.assert_array_equal(padded[0, :STATE], state)
    assert not padded[0, STATE:].any() and padded.shape == (1, PROPRIO)
    assert model.config.view_slots == 1  # one camera in LeRobot's input_features: one view slot
    pix3 = pixels[:, :1]
    with torch.no_grad():
        ref = model.generate_actions(torch.from_numpy(ids), torch.from_numpy(pix3),
                                     torch.tensor([[True]]), torch.tensor([3]),
                                     torch.from_numpy(padded), steps=3, noise=torch.from_numpy(x1))[0].numpy()
    np.testing.assert_allclose(chunk.actions, ref, atol=1e-5)
    # the padding's place matters: the same 8 values at the end of the 32 give another chunk
    moved = np.zeros((1, PROPRIO), np.float32)
    moved[0, -STATE:] = state
    with torch.no_grad():
        other = model.generate_actions(torch.from_numpy(ids), torch.from_numpy(pix3),
                                       torch.tensor([[True]]), torch.tensor([3]),
                                       torch.from_numpy(moved), steps=3, noise=torch.from_numpy(x1))[0].numpy()
    assert np.abs(other - ref).max() > 1e-3
    with pytest.raises(XVLAError, match="observation.proprio: expected 8 values, got shape \\(32,\\)"):
        policy.act(Observation(images=[image], instruction="x", proprio=np.zeros(PROPRIO, np.float32)))
