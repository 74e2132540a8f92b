"""Parity with LeRobot's own X-VLA policy (lerobot 0.4.4), on fixtures it made.

``tests/fixtures/lerobot_tiny/`` holds a tiny X-VLA saved by LeRobot's ``save_pretrained`` exactly as LeRobot
writes it (``config.json`` with ``"type": "xvla"``, ``max_state_dim`` 32 against the 20-wide ee6d action, an
8-value ``observation.state``; ``model.safetensors`` with ``model.``-prefixed keys) and the chunks LeRobot's
``predict_action_chunk`` gave for four observations with the noise fixed (``cases.npz``; generator
``tools/make_lerobot_fixtures.py``, provenance in ``PROVENANCE.md``). LeRobot's checkpoint carries no tokenizer
or image-processor files (it names ``facebook/bart-large`` and normalises images in its own pre-processor):
the tests add the official tiny fixture's, whose vocabulary and ImageNet normalisation are the same.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from xvla.checkpoint import load_checkpoint  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LEROBOT = FIXTURES / "lerobot_tiny"
OFFICIAL = FIXTURES / "official_tiny" / "ee6d"
ADDED = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
         "added_tokens.json", "preprocessor_config.json")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lerobot") / "pretrained_model"
    shutil.copytree(LEROBOT, out, ignore=shutil.ignore_patterns("cases.*", "PROVENANCE.md"))
    for name in ADDED:
        shutil.copy2(OFFICIAL / name, out / name)
    return out


@pytest.fixture(scope="module")
def cases() -> dict:
    data = np.load(LEROBOT / "cases.npz")
    return {k: data[k] for k in data.files} | json.loads((LEROBOT / "cases.json").read_text())


def test_the_checkpoint_is_as_lerobot_writes_it() -> None:
    config = json.loads((LEROBOT / "config.json").read_text())
    assert next(iter(config)) == "type" and config["type"] == "xvla" and config["max_state_dim"] == 32
    from safetensors import safe_open

    with safe_open(str(LEROBOT / "model.safetensors"), "np") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith("model.") for k in keys)


@pytest.mark.model
def test_the_network_gives_lerobots_chunks(checkpoint, cases) -> None:
    model = load_checkpoint(checkpoint)
    # one camera configured: LeRobot's num_image_views is 1, so no aux view tokens at all (official: always 3
    # slots, the absent ones as zero features — 0.43 apart on these weights)
    assert (model.config.dim_proprio, model.config.state_width, model.config.view_slots) == (32, 8, 1)
    for i in range(cases["cases"]):
        padded = np.zeros(32, np.float32)
        padded[:8] = cases["state"][i]
        np.testing.assert_array_equal(padded, cases["proprio"][i])  # LeRobot pads exactly so
        pixels = torch.from_numpy(cases["pixel_values"][i])[None, None]
        with torch.no_grad():
            ours = model.generate_actions(torch.from_numpy(cases["input_ids"][i])[None], pixels,
                                          torch.tensor([[True]]),
                                          torch.tensor([int(cases["domain_id"][i])]), torch.from_numpy(padded)[None],
                                          steps=cases["steps"], noise=torch.from_numpy(cases["noise"][i])[None])
        np.testing.assert_allclose(ours[0].numpy(), cases["actions"][i], atol=1e-5, err_msg=f"case {i}")


@pytest.mark.model
def test_a_bundle_of_it_gives_lerobots_chunks_from_the_robots_state(checkpoint, cases, tmp_path) -> None:
    """Exported (domain of each case), run by Policy.act on the uint8 camera image and the 8 state values."""
    pytest.importorskip("onnx")
    from export.bundle import ExportOptions, export_bundle
    from runtime.policy import Policy
    from runtime.types import Observation

    for i in range(cases["cases"]):
        domain = int(cases["domain_id"][i])
        bundle = tmp_path / f"d{domain}"
        if not bundle.exists():
            manifest = export_bundle(checkpoint, bundle, ExportOptions(domain_id=domain), progress=lambda s: None)
            assert (manifest["inputs"]["view_slots"], manifest["inputs"]["views"]) == (1, 1)
        policy = Policy.load(bundle)
        ids = cases["input_ids"][i]
        policy.token_ids = lambda instruction, ids=ids: ids[None]  # the fixture's tokens, not a re-tokenised text
        chunk = policy.act(Observation(images=[cases["image_uint8"][i]], instruction="(tokens given)",
                                       proprio=cases["state"][i], noise=cases["noise"][i]), steps=cases["steps"])
        np.testing.assert_allclose(chunk.actions, cases["actions"][i], atol=1e-4, err_msg=f"case {i}")
