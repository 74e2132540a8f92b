"""Parity with the official X-VLA implementation (commit 6bc2513) on tiny random weights.

The fixtures were produced by the official code itself (tools/make_official_fixtures.py; see
tests/fixtures/official_tiny/PROVENANCE.md): its own config.json, its own save_pretrained weights in the
official key layout, its processor's tokenizer and images, fixed noise, and its outputs. Our loader reads
those files through the same path as a released checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.model  # the network against the official outputs (tests/support/tiers.py)

torch = pytest.importorskip("torch")  # without it (a robot install) the module skips, not errors

from xvla import load_checkpoint
from xvla.preprocessing import ImageProcessor, TextTokenizer

FIXTURES = Path(__file__).parent.parent / "fixtures" / "official_tiny"
MODES = ["ee6d", "joint", "agibot_ee6d", "auto"]
TOL = 1e-5


def cases(mode: str) -> list[str]:
    return [c["name"] for c in json.loads((FIXTURES / mode / "cases.json").read_text())["cases"]]


@pytest.fixture(scope="module", params=MODES)
def official(request):
    mode = request.param
    return mode, load_checkpoint(FIXTURES / mode), np.load(FIXTURES / mode / "cases.npz")


def test_every_case_reproduces_the_official_outputs(official) -> None:
    mode, model, data = official
    names = cases(mode)
    assert len(names) >= 8
    for name in names:
        get = lambda key: torch.from_numpy(data[f"{name}/{key}"])
        ids, px, mask = get("input_ids"), get("image_input"), get("image_mask")
        vlm, aux = model.encode(ids, px, mask)
        np.testing.assert_allclose(vlm.numpy(), data[f"{name}/vlm_features"], atol=TOL, rtol=0, err_msg=f"{mode}/{name} vlm")
        np.testing.assert_allclose(aux.numpy(), data[f"{name}/aux_visual_inputs"], atol=TOL, rtol=0, err_msg=f"{mode}/{name} aux")
        out = model.generate_actions(ids, px, mask, get("domain_id"), get("proprio"), steps=int(data[f"{name}/steps"]),
                                     noise=get("noise"))
        expected = data[f"{name}/actions"]
        assert out.shape == expected.shape, f"{mode}/{name}"
        np.testing.assert_allclose(out.numpy(), expected, atol=TOL, rtol=0, err_msg=f"{mode}/{name} actions")


def test_every_step_matches_the_official_x0_prediction(official) -> None:
    mode, model, data = official
    name = cases(mode)[0]
    get = lambda key: torch.from_numpy(data[f"{name}/{key}"])
    enc = model.encode(get("input_ids"), get("image_input"), get("image_mask"))
    x1, proprio, d = get("noise"), get("proprio"), get("domain_id")
    x0_official, t_official = data[f"{name}/x0_pred"], data[f"{name}/t"]
    a = torch.zeros_like(x1)
    with torch.no_grad():
        for step in range(x0_official.shape[0]):
            t = torch.from_numpy(t_official[step])
            a = model.denoise_step(enc, x1 * t.view(-1, 1, 1) + a * (1 - t.view(-1, 1, 1)), proprio, t, d)
            np.testing.assert_allclose(a.numpy(), x0_official[step], atol=TOL, rtol=0, err_msg=f"{mode} step {step}")


def test_processor_inputs_match_the_official_processor() -> None:
    data = np.load(FIXTURES / "ee6d" / "cases.npz")
    meta = json.loads((FIXTURES / "ee6d" / "cases.json").read_text())
    tok, proc = TextTokenizer(FIXTURES / "ee6d"), ImageProcessor.from_dir(FIXTURES / "ee6d")
    ids = np.stack([tok(text) for text in meta["processor_texts"]])
    np.testing.assert_array_equal(ids, data["c7_processor_b2_s10/input_ids"])
    raw = data["processor/raw_images"]  # [B, V, H, W, 3] uint8
    expected = data["c7_processor_b2_s10/image_input"]
    expected_mask = data["c7_processor_b2_s10/image_mask"]
    for b in range(raw.shape[0]):
        views = [raw[b, v] if expected_mask[b, v] else None for v in range(3)]
        pixels, mask = proc(views)
        np.testing.assert_array_equal(mask, expected_mask[b])
        np.testing.assert_allclose(pixels[mask], expected[b][mask], atol=1e-5)
