"""``xvla-edge flash BUNDLE --robot DIR``: install a verified bundle as the robot's active one.

Example: ``xvla-edge flash ./bundles/widowx-fp16 --robot /var/lib/xvla-edge``

Verifies the bundle's checksums, stages a copy in DIR, builds TensorRT engines there when TensorRT is
installed, runs one smoke inference, then switches ``DIR/current`` atomically and keeps the old bundle as
``DIR/previous`` (``xvla-edge rollback --robot DIR`` switches back). Layout and guarantees:
:mod:`runtime.flash`.

Exit status: 0 installed (or already active); 1 refused or failed, the active bundle unchanged; 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="bundle directory made by `xvla-edge export`")
    p.add_argument("--robot", type=Path, required=True, metavar="DIR",
                   help="the robot's bundle directory (created if missing; holds `current` and `previous`)")
    p.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "tensorrt"],
                   help="backend of the smoke inference (default: tensorrt on cuda when engines were built)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device of the smoke inference")
    p.add_argument("--smoke-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="refuse the bundle when its smoke inference takes longer (default 600)")


def run(args: argparse.Namespace) -> int:
    from runtime.flash import flash
    from xvla.errors import XVLAError

    try:
        flash(args.bundle, args.robot, backend=args.backend, device=args.device, smoke_timeout_s=args.smoke_timeout)
    except XVLAError as exc:
        print(f"xvla-edge flash: refused, the active bundle is unchanged: {exc}", file=sys.stderr)
        return 1
    return 0
