"""``xvla-edge rollback --robot DIR``: make the previous bundle active again (see :mod:`xvla_edge.deploy.rollback`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--robot", type=Path, required=True, help="the robot's bundle directory")


def run(args: argparse.Namespace) -> int:
    from xvla_edge.deploy.layout import FlashError
    from xvla_edge.deploy.rollback import rollback

    try:
        rollback(args.robot)
    except FlashError as exc:
        print(f"xvla-edge rollback: {exc}", file=sys.stderr)
        return 1
    return 0
