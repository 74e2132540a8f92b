"""X-VLA's training objective against a plain numpy re-statement of it (same random draws)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
torch = pytest.importorskip("torch")  # without it (a robot install) the module skips, not errors

from xvla.errors import ConfigError
from xvla.model import XVLA
from xvla.objective import flow_matching_loss, stratified_times
from xvla.random_checkpoint import randomize
from xvla.sizes import size_config


def batch(model: XVLA, B: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    ids = torch.randint(4, cfg.text.vocab_size, (B, 8), generator=g)
    images = torch.randn(B, 3, 3, 64, 64, generator=g)
    mask = torch.tensor([[True, False, False]] * B)
    proprio = torch.randn(B, 20, generator=g)
    action = torch.randn(B, cfg.num_actions, 20, generator=g) * 0.1
    action[..., [9, 19]] = torch.rand(B, cfg.num_actions, 2, generator=g)  # gripper targets in 0..1
    return ids, images, mask, torch.full((B,), 3), proprio, action


@pytest.fixture(scope="module")
def model() -> XVLA:
    m = XVLA(size_config("tiny")[0])
    randomize(m, 0)
    return m.eval()


def bce(logit: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean(np.maximum(logit, 0) - logit * target + np.log1p(np.exp(-np.abs(logit)))))


def test_loss_terms_match_the_formula(model):
    ids, images, mask, domain, proprio, action = batch(model)
    terms = flow_matching_loss(model, ids, images, mask, domain, proprio, action,
                               generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # the same draws, in the same order: t, then the noise
    u = float(torch.rand(1, generator=g))
    noise = torch.randn(action.shape, generator=g).numpy()
    B = action.shape[0]
    t = np.array([(u + i / B) % (1 - 1e-5) for i in range(B)], np.float32)
    a = action.numpy()
    x_t = t[:, None, None] * noise + (1 - t[:, None, None]) * a
    x_t[..., [9, 19]] = 0.0
    p = proprio.numpy().copy()
    p[:, [9, 19]] = 0.0
    with torch.no_grad():
        vlm, aux = model.vlm(ids, images, mask)
        pred = model.transformer(domain, vlm, aux, torch.from_numpy(x_t), torch.from_numpy(p),
                                 torch.from_numpy(t)).numpy()
    mse = lambda idx: float(np.mean((pred[..., idx] - a[..., idx]) ** 2))  # noqa: E731
    position = 500 * (mse([0, 1, 2]) + mse([10, 11, 12]))
    rot6d = 10 * (mse([3, 4, 5, 6, 7, 8]) + mse([13, 14, 15, 16, 17, 18]))
    gripper = bce(pred[..., [9, 19]], a[..., [9, 19]])
    for name, value in (("position", position), ("rot6d", rot6d), ("gripper", gripper)):
        assert float(terms[name].detach()) == pytest.approx(value, rel=1e-4), name
    assert float(terms["loss"]) == pytest.approx(position + rot6d + gripper, rel=1e-4)


def test_times_are_stratified_over_the_batch():
    t = stratified_times(8, torch.Generator().manual_seed(1)).numpy()
    assert np.all((t >= 0) & (t < 1))
    assert np.allclose(np.sort(np.diff(np.sort(t)))[1:], 1 / 8, atol=1e-6)  # one gap wraps around 1


def test_several_samples_per_observation_equal_a_repeated_batch(model):
    ids, images, mask, domain, proprio, action = batch(model, B=2)
    shared = flow_matching_loss(model, ids, images, mask, domain, proprio, action, samples_per_observation=3,
                                generator=torch.Generator().manual_seed(2))
    rep = lambda x: x.repeat_interleave(3, 0)  # noqa: E731
    repeated = flow_matching_loss(model, rep(ids), rep(images), rep(mask), rep(domain), rep(proprio), rep(action),
                                  generator=torch.Generator().manual_seed(2))
    assert float(shared["loss"]) == pytest.approx(float(repeated["loss"]), rel=1e-5)


def test_other_action_modes_are_refused_by_name():
    cfg = dataclasses.replace(size_config("tiny")[0], action_mode="joint")
    m = XVLA(cfg)
    ids, images, mask, domain, _, _ = batch(model=XVLA(size_config("tiny")[0]))
    with pytest.raises(ConfigError, match="'joint'"):
        flow_matching_loss(m, ids, images, mask, domain, torch.zeros(3, 14), torch.zeros(3, 30, 14))
