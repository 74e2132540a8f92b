"""Action modes: what the sampler does to actions and proprio before each network call and after the last.

| mode          | dim                | before each call                          | after the last call          |
|---------------|--------------------|-------------------------------------------|------------------------------|
| ee6d          | 20                 | zero gripper channels 9, 19 of x_t/proprio | sigmoid on channels 9, 19   |
| joint         | 14                 | zero gripper channels 6, 13 of x_t/proprio | sigmoid on channels 6, 13   |
| agibot_ee6d   | 20                 | nothing                                    | nothing                      |
| auto          | max_action_dim     | nothing                                    | keep the first real_dim      |

The gripper mask is a constant multiply (not an in-place write) so the same arithmetic exports to ONNX.
Masks are built once per (dtype, device, width) and reused: the sampling loop then issues device operations
only — no tensor from host data, no index list copied to the device — which CUDA-graph capture requires.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    _masks: dict[tuple, torch.Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_config(cls, cfg: XVLAConfig) -> ActionSpace:
        output_dim = cfg.real_action_dim if cfg.action_mode == "auto" else cfg.dim_action
        return cls(cfg.action_mode, cfg.dim_action, GRIPPER_CHANNELS[cfg.action_mode], output_dim, cfg.dim_proprio)

    def keep_mask(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
                  width: int | None = None) -> torch.Tensor:
        """[width] (default: the action width) of ones with zeros on the gripper channels (all ones when the
        mode zeroes nothing); built once per (dtype, device, width) — do not modify it."""
        width = self.dim if width is None else width
        key = ("keep", dtype, torch.device(device or "cpu"), width)
        if key not in self._masks:
            keep = [0.0 if c in self.gripper_channels else 1.0 for c in range(width)]
            self._masks[key] = torch.tensor(keep, dtype=dtype, device=key[2])
        return self._masks[key]

    def _gripper_mask(self, device: torch.device) -> torch.Tensor:
        """[dim] bool, True on the gripper channels; built once per device."""
        key = ("gripper", device)
        if key not in self._masks:
            self._masks[key] = torch.tensor([c in self.gripper_channels for c in range(self.dim)], device=device)
        return self._masks[key]

    def preprocess(self, proprio: torch.Tensor, x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero the gripper channels of proprio [B, proprio_dim] and x_t [B, T, dim] (no-op for modes
        without); a proprio wider than the action (LeRobot's ``max_state_dim``) has the same channels zeroed."""
        if not self.gripper_channels:
            return proprio, x_t
        return (proprio * self.keep_mask(proprio.dtype, proprio.device, proprio.shape[-1]),
                x_t * self.keep_mask(x_t.dtype, x_t.device))

    def postprocess(self, action: torch.Tensor) -> torch.Tensor:
        """Final prediction [B, T, dim] → actions [B, T, output_dim] in the robot's units (sigmoid on the
        gripper channels, selected by a device mask rather than an index list)."""
        if self.gripper_channels:
            action = torch.where(self._gripper_mask(action.device), torch.sigmoid(action), action)
        return action[..., : self.output_dim]
