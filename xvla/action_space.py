"""Action modes: what the sampler does to actions and proprio before each network call and after the last.

| mode          | dim                | before each call                          | after the last call          |
|---------------|--------------------|-------------------------------------------|------------------------------|
| ee6d          | 20                 | zero gripper channels 9, 19 of x_t/proprio | sigmoid on channels 9, 19   |
| joint         | 14                 | zero gripper channels 6, 13 of x_t/proprio | sigmoid on channels 6, 13   |
| agibot_ee6d   | 20                 | nothing                                    | nothing                      |
| auto          | max_action_dim     | nothing                                    | keep the first real_dim      |

The gripper mask is a constant multiply (not an in-place write) so the same arithmetic exports to ONNX.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xvla.config import XVLAConfig
from xvla.constants import GRIPPER_CHANNELS



@dataclass(frozen=True)
class ActionSpace:
    """The pre/post-processing of one action mode."""

    mode: str
    dim: int
    gripper_channels: tuple[int, ...]
    output_dim: int
    proprio_dim: int = 0  # 0: the action width

    @classmethod
    def from_config(cls, cfg: XVLAConfig) -> ActionSpace:
        output_dim = cfg.real_action_dim if cfg.action_mode == "auto" else cfg.dim_action
        return cls(cfg.action_mode, cfg.dim_action, GRIPPER_CHANNELS[cfg.action_mode], output_dim, cfg.dim_proprio)

    def keep_mask(self, dtype: torch.dtype = torch.float32, device: torch.device | None = None,
                  width: int | None = None) -> torch.Tensor:
        """[width] (default: the action width) of ones with zeros on the gripper channels (all ones when the
        mode zeroes nothing)."""
        mask = torch.ones(self.dim if width is None else width, dtype=dtype, device=device)
        for c in self.gripper_channels:
            mask[c] = 0.0
        return mask

    def preprocess(self, proprio: torch.Tensor, x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero the gripper channels of proprio [B, proprio_dim] and x_t [B, T, dim] (no-op for modes
        without); a proprio wider than the action (LeRobot's ``max_state_dim``) has the same channels zeroed."""
        if not self.gripper_channels:
            return proprio, x_t
        mask = self.keep_mask(proprio.dtype, proprio.device)
        if proprio.shape[-1] == self.dim:
            return proprio * mask, x_t * mask
        return proprio * self.keep_mask(proprio.dtype, proprio.device, proprio.shape[-1]), x_t * mask

    def postprocess(self, action: torch.Tensor) -> torch.Tensor:
        """Final prediction [B, T, dim] → actions [B, T, output_dim] in the robot's units."""
        if self.gripper_channels:
            idx = list(self.gripper_channels)
            action = action.clone()
            action[..., idx] = torch.sigmoid(action[..., idx])
        return action[..., : self.output_dim]
