"""X-VLA's flow-matching training objective (ee6d action mode), as the official training code defines it.

Per sample a time t in [0, 1) is drawn stratified over the batch (one uniform offset plus i/B, modulo
1 − 1e-5); with noise ε ~ N(0, I) the network gets x_t = t·ε + (1 − t)·a (gripper channels of x_t and
proprio zeroed by the action space) and predicts the clean chunk a. The loss is

    500 · (MSE of positions 0-2 + MSE of positions 10-12)
  +  10 · (MSE of rot6d 3-8 + MSE of rot6d 13-18)
  +   1 · mean of the BCE-with-logits of the gripper channels 9 and 19.

``samples_per_observation`` > 1 draws that many (t, ε) per observation and runs the vision-language encoder
once for all of them (the same objective; the encoder is the costly half on a CPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xvla.errors import ConfigError
from xvla.model import XVLA

POSITION_SCALE = 500.0
ROT6D_SCALE = 10.0
GRIPPER_SCALE = 1.0
_POSITION = ([0, 1, 2], [10, 11, 12])
_ROT6D = ([3, 4, 5, 6, 7, 8], [13, 14, 15, 16, 17, 18])
_GRIPPER = [9, 19]


def stratified_times(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """[n] times: (u + i/n) mod (1 − 1e-5) for one u ~ U[0, 1)."""
    u = torch.rand(1, generator=generator)
    return (u + torch.arange(n) / n) % (1 - 1e-5)


def flow_matching_loss(model: XVLA, input_ids: torch.Tensor, image_input: torch.Tensor, image_mask: torch.Tensor,
                       domain_id: torch.Tensor, proprio: torch.Tensor, action: torch.Tensor, *,
                       samples_per_observation: int = 1,
                       generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The loss terms (``position``, ``rot6d``, ``gripper``, scaled) and their sum ``loss`` for a batch.

    ``action`` [B, num_actions, 20] is the target chunk in the robot's units, gripper channels in 0 … 1.
    """
    if model.config.action_mode != "ee6d":
        raise ConfigError(f"training: action_mode {model.config.action_mode!r} has no objective here; "
                          "only 'ee6d' is implemented")
    k = int(samples_per_observation)
    vlm_features, aux = model.vlm(input_ids, image_input, image_mask)
    if k > 1:
        vlm_features, aux = vlm_features.repeat_interleave(k, 0), aux.repeat_interleave(k, 0)
        domain_id, proprio, action = (x.repeat_interleave(k, 0) for x in (domain_id, proprio, action))
    n = action.shape[0]
    t = stratified_times(n, generator).to(action)
    noise = torch.randn(action.shape, generator=generator).to(action)
    x_t = t.view(-1, 1, 1) * noise + (1 - t).view(-1, 1, 1) * action
    pred = model.denoise_step((vlm_features, aux), x_t, proprio, t, domain_id)
    position = sum(F.mse_loss(pred[..., idx], action[..., idx]) for idx in _POSITION) * POSITION_SCALE
    rot6d = sum(F.mse_loss(pred[..., idx], action[..., idx]) for idx in _ROT6D) * ROT6D_SCALE
    gripper = F.binary_cross_entropy_with_logits(pred[..., _GRIPPER], action[..., _GRIPPER]) * GRIPPER_SCALE
    return {"loss": position + rot6d + gripper, "position": position, "rot6d": rot6d, "gripper": gripper}
