"""The network and the sampler: shapes, semantics checked against independent statements, input errors."""

from __future__ import annotations

import numpy as np
import pytest
torch = pytest.importorskip("torch")  # without it (a robot install) the module skips, not errors

from xvla import load_checkpoint, write_random_checkpoint
from xvla.action_head import timestep_embedding
from xvla.errors import InputError

from tests.support.model_inputs import inputs, restated_sampler


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_checkpoint(tiny_checkpoint)


def test_chunk_shape_and_gripper_range(model) -> None:
    out = model.generate_actions(**inputs(model))
    assert out.shape == (1, 30, 20)
    assert ((out[..., [9, 19]] > 0) & (out[..., [9, 19]] < 1)).all()


def test_noise_argument_makes_it_deterministic(model) -> None:
    noise = torch.randn(1, 30, 20)
    a = model.generate_actions(**inputs(model), noise=noise)
    b = model.generate_actions(**inputs(model), noise=noise)
    c = model.generate_actions(**inputs(model), noise=noise + 1)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_time_embedding_is_cos_then_sin_with_period_100() -> None:
    t = torch.tensor([0.3, 1.0])
    emb = timestep_embedding(t, 32)
    k = np.arange(16)
    freqs = 100.0 ** (-k / 16)
    expected = np.concatenate([np.cos(t.numpy()[:, None] * freqs), np.sin(t.numpy()[:, None] * freqs)], axis=1)
    np.testing.assert_allclose(emb.numpy(), expected, atol=1e-6)


def test_sampler_is_x0_renoising_with_the_same_noise(model) -> None:
    """Re-state the released sampler from its definition and compare (not an Euler step)."""
    inp = inputs(model, seed=3)
    noise = torch.randn(1, 30, 20)
    steps = 4
    a = restated_sampler(model, inp, noise, steps)
    torch.testing.assert_close(model.generate_actions(**inp, steps=steps, noise=noise), a, atol=1e-6, rtol=0)


def test_gripper_channels_do_not_reach_the_network(model) -> None:
    inp = inputs(model)
    noise = torch.randn(1, 30, 20)
    base = model.generate_actions(**inp, noise=noise)
    inp["proprio"][:, [9, 19]] += 5.0
    noise2 = noise.clone()
    noise2[..., [9, 19]] += 5.0
    torch.testing.assert_close(model.generate_actions(**inp, noise=noise2), base, atol=0, rtol=0)


def test_missing_view_gets_zero_features_not_zero_pixels(model) -> None:
    inp = inputs(model, views=(True, False, True))
    noise = torch.randn(1, 30, 20)
    base = model.generate_actions(**inp, noise=noise)
    inp["image_input"][:, 1] = torch.randn(3, 64, 64)  # pixels of a masked view are ignored
    torch.testing.assert_close(model.generate_actions(**inp, noise=noise), base, atol=0, rtol=0)
    _, aux = model.encode(inp["input_ids"], inp["image_input"], inp["image_mask"])
    n = model.config.tokens_per_view(64)
    assert not aux[:, :n].any() and aux[:, n:].abs().sum() > 0
    # zero *pixels* in a valid view give different (non-zero) features
    _, aux0 = model.encode(inp["input_ids"], torch.zeros_like(inp["image_input"]), torch.ones(1, 3, dtype=torch.bool))
    assert aux0[:, :n].abs().sum() > 0


def test_text_encoder_equals_transformers_bart_encoder_without_mask(model) -> None:
    embeds = torch.randn(2, 55, model.config.text.d_model)
    with torch.no_grad():
        expected = model.vlm.language_encoder(inputs_embeds=embeds).last_hidden_state
        torch.testing.assert_close(model.vlm.encode_text(embeds), expected, atol=1e-5, rtol=1e-5)


def test_batch_rows_are_independent(model) -> None:
    inp = inputs(model, B=2, seed=5)
    noise = torch.randn(2, 30, 20)
    both = model.generate_actions(**inp, noise=noise)
    one = model.generate_actions(**{k: v[1:] for k, v in inp.items()}, noise=noise[1:])
    torch.testing.assert_close(both[1:], one, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode, dim, out_dim", [("joint", 14, 14), ("agibot_ee6d", 20, 20), ("auto", 20, 14)])
def test_other_action_modes(tmp_path, mode, dim, out_dim) -> None:
    extra = {"real_action_dim": 14} if mode == "auto" else {}
    m = load_checkpoint(write_random_checkpoint(tmp_path / mode, "tiny", action_mode=mode, **extra))
    inp = inputs(m)
    out = m.generate_actions(**inp, steps=2)
    assert out.shape == (1, 30, out_dim)
    if mode == "joint":
        assert ((out[..., [6, 13]] > 0) & (out[..., [6, 13]] < 1)).all()


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("proprio", torch.zeros(1, 7), r"proprio must be \[B=1, 20\] for action_mode 'ee6d'; got tensor of shape \[1, 7\]"),
        ("image_input", torch.zeros(1, 3, 3, 64, 48), "must be square"),
        ("image_input", torch.zeros(1, 2, 3, 64, 64), r"image_input must be \[B=1, 3, 3, H, W\]"),
        ("image_input", torch.zeros(1, 3, 3, 64, 64, dtype=torch.uint8), "normalised floating-point"),
        ("image_mask", torch.zeros(1, 3, dtype=torch.bool), "at least one valid view"),
        ("domain_id", torch.tensor([30]), r"domain_id values must be in \[0, 30\); got \[30\]"),
        ("input_ids", torch.zeros(1, 50), "input_ids must be an integer tensor"),
        ("input_ids", torch.full((1, 50), 5000), r"input_ids values must be in \[0, 1000\)"),
        ("input_ids", torch.ones(1, 60, dtype=torch.long), "exceeds the text encoder's 64 positions"),
    ],
)
def test_bad_inputs_are_named(model, key, value, message) -> None:
    inp = inputs(model)
    inp[key] = value
    with pytest.raises(InputError, match=message):
        model.generate_actions(**inp)


def test_sequence_longer_than_max_len_seq_is_named(tmp_path) -> None:
    m = load_checkpoint(write_random_checkpoint(tmp_path / "short", "tiny", max_len_seq=64))
    with pytest.raises(InputError, match=r"= 95 exceeds max_len_seq 64"):
        m.generate_actions(**inputs(m))
    ok = load_checkpoint(write_random_checkpoint(tmp_path / "ok", "tiny"))
    for steps in (0, 101, 10**9):
        with pytest.raises(InputError, match=rf"steps = {steps}: expected an integer 1 \.\.\. 100"):
            ok.generate_actions(**inputs(m), steps=steps)
