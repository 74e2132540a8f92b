"""What ``xvla-edge export`` is asked to make (torch-free, so the command parses without torch)."""

from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("fp32", "fp16")


@dataclass(frozen=True)
class ExportOptions:
    """One bundle: the domain folded in (``domain_id``), or the domains a server bundle serves (``domains``: ids,
    or ``"all"`` of the checkpoint), the robot's views and arms, precision and sampler defaults."""

    domain_id: int | None = None
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
    domains: tuple[int, ...] | str | None = None  # a server bundle: these domain ids, or "all"
    #: the denoise graph takes real-time chunking's prefix inputs (False: the graph of bundles made before them,
    #: for the tests that such bundles still run and the benchmark of the mix's cost)
    prefix_inputs: bool = True


def parse_domains(text: str) -> tuple[int, ...] | str:
    """``--domains``: ``all``, or comma-separated domain ids (``0,3,6``); ValueError names what is wrong."""
    if text.strip() == "all":
        return "all"
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--domains {text!r}: expected 'all' or domain ids separated by commas, e.g. 0,3,6") from None
