"""``xvla-edge checkpoint --out OUT_DIR --size tiny|small|full``: write a random-weight checkpoint.

Example: ``xvla-edge checkpoint --out /tmp/ckpt --size tiny --action-mode ee6d``
"""

from __future__ import annotations

import argparse

from xvla.config import ACTION_MODES
from xvla.extras import needs
from xvla.sizes import SIZES
from xvla_edge.commands import add_out, out_path


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_out(p, "directory to create (must not exist or be empty)")
    p.add_argument("--size", default="tiny", choices=list(SIZES))
    p.add_argument("--action-mode", default="ee6d", choices=ACTION_MODES)
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    with needs("torch"):
        from xvla.random_checkpoint import write_random_checkpoint

    out = write_random_checkpoint(out_path(args), args.size, seed=args.seed, action_mode=args.action_mode)
    print(f"wrote {args.size} checkpoint ({args.action_mode}) to {out}")
    return 0
