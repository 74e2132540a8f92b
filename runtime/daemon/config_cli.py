"""``xvla-edge config check FILE``: validate a robot.toml without running anything.

Exit codes: 0 valid (prints a summary), 1 invalid (every problem, one per line), 2 unreadable file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = sub.add_parser("check", help="validate a robot.toml")
    check.add_argument("file", type=Path)


def run(args: argparse.Namespace) -> int:
    from runtime.daemon.config import ConfigError, load_config

    try:
        cfg = load_config(args.file)
    except ConfigError as exc:
        unreadable = "cannot read" in str(exc) and "\n" not in str(exc)
        print(f"{args.file}: invalid\n{exc}" if not unreadable else str(exc), file=sys.stderr)
        return 2 if unreadable else 1
    cams = ", ".join(f"slot {c.slot}: {c.source} {c.width}x{c.height}@{c.fps:g} (stale after {c.max_age_s:g} s)"
                     for c in cfg.cameras)
    print(f"{args.file}: valid\n  bundle: {cfg.bundle.path} ({cfg.bundle.backend}, {cfg.bundle.device})\n"
          f"  cameras: {cams}\n  arm: {cfg.arm.driver} {cfg.arm.port or ''} ({cfg.arm.space})\n"
          f"  control: {cfg.control.rate_hz:g} Hz, splice {cfg.splice.mode}, next chunk at "
          f"{cfg.inference.start_fraction:g} left\n  health: "
          f"{f'http://{cfg.health.host}:{cfg.health.port}' if cfg.health.port else 'off'}")
    return 0
