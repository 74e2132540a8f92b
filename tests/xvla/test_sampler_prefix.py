"""The reference sampler's real-time chunking mix: zero weights give today's chunk, weight-1 rows give the prefix,
and every step mixes before it re-noises (checked against the sampler re-stated from its definition)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # without it (a robot install) the module skips, not errors

from xvla import load_checkpoint
from xvla.errors import InputError
from xvla.realtime_chunking import prefix_weights

from tests.support.model_inputs import inputs, restated_sampler

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_checkpoint(tiny_checkpoint)


def committed(seed: int = 5, B: int = 1) -> torch.Tensor:
    """A prefix in the model's representation: positions, rot6d entries, gripper logits of either sign."""
    return torch.randn(B, 30, 20, generator=torch.Generator().manual_seed(seed)) * 2


def schedule(delay: int, horizon: int, B: int = 1) -> torch.Tensor:
    return torch.from_numpy(prefix_weights(30, delay, horizon)).expand(B, 30).clone()


def test_zero_weights_give_todays_chunk_bit_for_bit(model) -> None:
    inp, noise = inputs(model, B=2, seed=1), torch.randn(2, 30, 20)
    today = model.generate_actions(**inp, noise=noise, steps=4)
    mixed = model.generate_actions(**inp, noise=noise, steps=4, prefix=committed(B=2), weights=torch.zeros(2, 30))
    assert torch.equal(mixed, today)


def test_weight_one_rows_are_the_prefix_after_decoding(model) -> None:
    inp, noise, prefix = inputs(model, seed=2), torch.randn(1, 30, 20), committed()
    today = model.generate_actions(**inp, noise=noise, steps=3)
    out = model.generate_actions(**inp, noise=noise, steps=3, prefix=prefix, weights=schedule(6, 14))
    decoded = prefix.clone()
    decoded[..., [9, 19]] = torch.sigmoid(decoded[..., [9, 19]])  # ee6d's output transform, stated here
    torch.testing.assert_close(out[:, :6], decoded[:, :6], atol=1e-6, rtol=0)
    assert not torch.allclose(out[:, 14:], today[:, 14:], atol=1e-4)  # the free rows follow the re-noised prefix


def test_every_step_mixes_before_it_renoises(model) -> None:
    """The sampler re-stated with the mix x0 <- w * prefix + (1 - w) * x0 after each network call."""
    inp, noise, prefix, steps = inputs(model, seed=3), torch.randn(1, 30, 20), committed(7), 4
    w = schedule(3, 12)
    a = restated_sampler(model, inp, noise, steps, mix=lambda x0: w[..., None] * prefix + (1 - w[..., None]) * x0)
    out = model.generate_actions(**inp, steps=steps, noise=noise, prefix=prefix, weights=w)
    torch.testing.assert_close(out, a, atol=1e-6, rtol=0)


@pytest.mark.parametrize("change,named", [
    (lambda p, w: (p, None), "expected both .* got only prefix"),
    (lambda p, w: (None, w), "expected both .* got only weights"),
    (lambda p, w: (p[:, :29], w), r"prefix must be \[B=2, 30, 20\]"),
    (lambda p, w: (p[..., :14], w), r"prefix must be \[B=2, 30, 20\]"),
    (lambda p, w: (p, w[:, :, None]), r"weights must be \[B=2, 30\]"),
    (lambda p, w: (p.tolist(), w), r"prefix must be .* got list"),
    (lambda p, w: (p.index_put((torch.tensor(1), torch.tensor(4), torch.tensor(0)), torch.tensor(float("nan"))), w),
     r"prefix\[1\].rows\[4\]\[0\] = nan"),
    (lambda p, w: (p, w * 2), r"prefix\[0\].weights\[0\] = 2.0: expected a weight 0 ... 1"),
    (lambda p, w: (p, w.flip(1)),  # 22 zeros, then rising to 1
     r"prefix\[0\].weights\[22\] = .* > weights\[21\] = 0.0: expected weights that do not increase"),
])
def test_hostile_prefix_is_refused_by_name(model, change, named: str) -> None:
    prefix, weights = change(committed(B=2), schedule(2, 8, B=2))
    with pytest.raises(InputError, match=named):
        model.generate_actions(**inputs(model, B=2), steps=1, prefix=prefix, weights=weights)


def test_a_prefix_is_given_in_the_model_representation(model) -> None:
    """Gripper logits, not openings: a prefix holding the decoded opening would come out as sigmoid(opening)."""
    inp, noise, prefix = inputs(model, seed=4), torch.randn(1, 30, 20), committed(9)
    out = model.generate_actions(**inp, noise=noise, steps=2, prefix=prefix, weights=schedule(30, 30))
    np.testing.assert_allclose(out[0, :, 9].numpy(), torch.sigmoid(prefix[0, :, 9]).numpy(), atol=1e-6)
    np.testing.assert_allclose(out[0, :, :9].numpy(), prefix[0, :, :9].numpy(), atol=1e-6)
