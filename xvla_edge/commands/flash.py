"""``xvla-edge flash BUNDLE --robot DIR`` (on the robot) or ``--robot user@host[:port]:/path ...`` (from a
workstation): install a verified bundle as a robot's active one.

Examples::

    xvla-edge flash ./bundles/widowx-fp16 --robot /var/lib/xvla-edge
    xvla-edge flash ./bundles/widowx-fp16 --robot ops@arm1:/var/lib/xvla-edge --robot ops@arm2:/var/lib/xvla-edge \\
        --canary 1 --parallel 4 --json flash.json

On the robot: verifies the bundle's checksums, stages a copy in DIR, builds TensorRT engines there when TensorRT
is installed, runs one smoke inference, then switches ``DIR/current`` atomically and keeps the old bundle as
``DIR/previous`` (``xvla-edge rollback --robot DIR`` switches back). Layout and guarantees:
:mod:`xvla_edge.deploy.layout`, :mod:`xvla_edge.deploy.install`. From a workstation: the same on every robot over
SSH, sending only the files a robot lacks (by sha256, resumed after a dropped connection), canary robots first
(:mod:`xvla_edge.deploy.fleet.rollout`).

Exit status: 0 installed everywhere (or already active); 1 refused or failed somewhere (every such robot keeps
its active bundle; the summary names robot, step and cause); 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from runtime.backends.names import AUTO, BUNDLE_CHOICES, DEVICES
from xvla_edge.commands.fleet import add_ssh_arguments, ssh_options


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="bundle directory made by `xvla-edge export`")
    p.add_argument("--robot", action="append", required=True, metavar="DIR | USER@HOST[:PORT]:/PATH",
                   help="the robot's bundle directory (created if missing; holds `current` and `previous`); "
                        "repeat with user@host:/path for a fleet")
    p.add_argument("--backend", default=AUTO, choices=BUNDLE_CHOICES,
                   help="backend of the smoke inference (default: tensorrt on cuda when engines were built)")
    p.add_argument("--device", default="cpu", choices=DEVICES, help="device of the smoke inference")
    p.add_argument("--smoke-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="refuse the bundle when its smoke inference takes longer (default 600)")
    fleet = p.add_argument_group("a fleet over SSH (--robot user@host:/path)")
    fleet.add_argument("--parallel", type=int, default=4, metavar="N", help="robots flashed at once (default 4)")
    fleet.add_argument("--canary", type=int, default=0, metavar="K",
                       help="flash K robots first; the rest only when all K succeeded (default 0)")
    fleet.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the per-robot results as JSON")
    fleet.add_argument("--restart-command", default=None, metavar="COMMAND",
                       help="run on each robot after its switch, e.g. 'sudo systemctl restart xvla-edge'")
    fleet.add_argument("--health-url", default=None, metavar="URL",
                       help="the daemon's /healthz as seen on the robot, e.g. http://127.0.0.1:8765/healthz: it must "
                            "name the new bundle, else the robot is rolled back")
    fleet.add_argument("--health-timeout", type=float, default=120.0, metavar="SECONDS",
                       help="how long the daemon may take to report the new bundle (default 120)")
    add_ssh_arguments(fleet)


def run(args: argparse.Namespace) -> int:
    from xvla.errors import XVLAError
    from xvla_edge.deploy.fleet.ssh import Robot

    remote = [Robot.is_remote(r) for r in args.robot]
    if any(remote):
        if not all(remote):
            print("xvla-edge flash: --robot: give either one local directory or user@host:/path targets, not both",
                  file=sys.stderr)
            return 2
        if args.parallel < 1 or args.canary < 0 or not 0 < args.health_timeout <= 3600:
            print("xvla-edge flash: --parallel must be >= 1, --canary >= 0 and --health-timeout in (0, 3600]",
                  file=sys.stderr)
            return 2
        return _fleet(args)
    if len(args.robot) > 1:
        print("xvla-edge flash: one local --robot DIR at a time", file=sys.stderr)
        return 2
    from xvla_edge.deploy.install import flash

    try:
        flash(args.bundle, args.robot[0], backend=args.backend, device=args.device, smoke_timeout_s=args.smoke_timeout)
    except XVLAError as exc:
        print(f"xvla-edge flash: refused, the active bundle is unchanged: {exc}", file=sys.stderr)
        return 1
    return 0


def _fleet(args: argparse.Namespace) -> int:
    from runtime.manifest import BundleError
    from xvla_edge.deploy.fleet.rollout import Daemon, rollout, table
    from xvla_edge.deploy.fleet.ssh import RemoteError, Robot

    try:
        robots = [Robot.parse(r) for r in args.robot]
        results = rollout(args.bundle, robots, ssh_options(args), backend=args.backend, device=args.device,
                          smoke_timeout_s=args.smoke_timeout, parallel=args.parallel, canary=args.canary,
                          daemon=Daemon(args.restart_command, args.health_url, args.health_timeout))
    except (BundleError, RemoteError) as exc:
        print(f"xvla-edge flash: refused before anything was sent: {exc}", file=sys.stderr)
        return 1
    print(table(results))
    if args.json is not None:
        args.json.write_text(json.dumps([r.to_dict() for r in results], indent=2))
    return 0 if all(r.result == "ok" for r in results) else 1
