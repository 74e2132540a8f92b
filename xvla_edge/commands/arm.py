"""``xvla-edge arm check --config robot.toml``: look at the configured arm's link before enabling torque.

Builds the arm of ``[arm]`` (no daemon, no policy) and asks its backend for a read-only probe
(:meth:`drivers.arm.Arm.probe`): what answers on the link — per motor its id, model, position, torque and error
bits — and what would stop the daemon from connecting. Nothing moves: no goal is written and torque is never
enabled. Exit status: 0 everything answered and nothing is wrong; 1 the link works but the probe found
problems (a motor missing, a hardware error, a calibration the servos do not hold); 2 the robot.toml is unreadable
or invalid; 3 the link is absent (the port cannot be opened, or nothing answers); 4 this arm's driver has no probe.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

LINK_ABSENT, NO_PROBE = 3, 4


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="read-only probe of the configured arm: IDs, positions, errors (moves "
                                         "nothing; exit 0 fine, 1 problems, 2 bad config, 3 no link, 4 no probe)")
    check.add_argument("--config", type=Path, required=True, help="the robot.toml whose [arm] to check")
    check.add_argument("--json", action="store_true", help="print what the probe found as JSON")


def run(args: argparse.Namespace) -> int:
    from drivers.arm import ArmError, ArmLinkError, NoProbe
    from xvla_edge.daemon.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        found = config.arm_factory()().probe()
    except NoProbe as exc:
        print(f"xvla-edge arm check: {exc} (driver {config.arm.driver!r})", file=sys.stderr)
        return NO_PROBE
    except ArmLinkError as exc:
        print(f"xvla-edge arm check: no link: {exc}", file=sys.stderr)
        return LINK_ABSENT
    except ArmError as exc:
        print(f"xvla-edge arm check: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(found, indent=2, default=str) if args.json else describe(found))
    if not found.get("link", True):
        return LINK_ABSENT
    return 1 if found.get("problems") else 0


def describe(found: dict) -> str:
    """The probe's findings, one line per motor, then the problems."""
    head = {k: v for k, v in found.items() if k not in ("motors", "problems")}
    lines = ["arm: " + ", ".join(f"{k} {v}" for k, v in head.items())]
    for m in found.get("motors", []):
        label = f"  {m.get('name', '?')} (id {m.get('id', '?')}): "
        if not m.get("found", True):
            lines.append(label + "no answer" + (f" ({m['why']})" if m.get("why") else ""))
            continue
        lines.append(label + ", ".join(f"{k} {v}" for k, v in m.items() if k not in ("name", "id", "found")))
    problems = found.get("problems", [])
    lines += [f"problem: {p}" for p in problems] or ["no problems found: the link is up and every motor answers"]
    return "\n".join(lines)
