"""What ``xvla-edge export`` is asked to make (torch-free, so the command parses without torch)."""

from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("fp32", "fp16")


@dataclass(frozen=True)
class ExportOptions:
    """One bundle: the domain folded in, the robot's views and arms, precision and sampler defaults."""

    domain_id: int
    embodiment: str | None = None
    precision: str = "fp32"
    views: int | None = None  # cameras the robot has; None: every view slot of the checkpoint (official: 3)
    chunk_seconds: float | None = None
    arms: int | None = None
    steps: int = 10
    rot6d_layout: str = "rows"
    image_size: int | None = None  # only for a checkpoint without preprocessor_config.json
    force: bool = False
    batch_sizes: tuple[int, ...] = (1,)  # batch sizes the graphs run at (more than (1,): a dynamic batch dimension)
    lora: str | None = None  # a PEFT LoRA adapter directory merged into the checkpoint's weights
