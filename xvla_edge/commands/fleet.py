"""``xvla-edge fleet status --robot user@host:/path ...`` and ``xvla-edge fleet agent`` (the robot's side of a
fleet flash, run over SSH: :mod:`xvla_edge.deploy.fleet.agent`).

``status`` asks every robot which bundle is active and previous, and when it last changed, and with
``--health-url`` what its daemon's ``/healthz`` says, and what of its ``history.jsonl`` was skipped (a torn
line) (``--json FILE``: the same as JSON). Exit status: 0 every robot answered, 1 one did not.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from runtime.backends.names import AUTO, BUNDLE_CHOICES, DEVICES


def add_ssh_arguments(p: argparse.ArgumentParser) -> None:
    """How the workstation reaches robots (shared with ``flash``)."""
    p.add_argument("--known-hosts", type=Path, default=None, metavar="FILE",
                   help="known_hosts file to check robots' host keys against (default: ssh's); unknown keys are refused")
    p.add_argument("--identity", type=Path, default=None, metavar="FILE", help="private key (default: ssh's, or the agent)")
    p.add_argument("--remote-xvla-edge", default="xvla-edge", metavar="COMMAND",
                   help="how xvla-edge is run on the robots (default: xvla-edge on the PATH of the ssh user)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="fleet_command", metavar="{status,agent}", required=True)
    status = sub.add_parser("status", help="which bundle each robot runs, and its last flash")
    status.add_argument("--robot", action="append", required=True, metavar="USER@HOST[:PORT]:/PATH")
    status.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the answers as JSON")
    status.add_argument("--health-url", default=None, metavar="URL",
                        help="the daemon's /healthz as seen on the robot, e.g. http://127.0.0.1:8765/healthz")
    add_ssh_arguments(status)
    agent = sub.add_parser("agent", help="the robot's side of a fleet flash (run over ssh by the workstation)")
    agent.add_argument("dir", type=Path, help="the robot's bundle directory")
    agent.add_argument("op", choices=["have", "put", "assemble", "flash", "status", "health", "probe", "rollback"])
    agent.add_argument("args", nargs="*")
    agent.add_argument("--backend", default=AUTO, choices=BUNDLE_CHOICES)
    agent.add_argument("--device", default="cpu", choices=DEVICES)
    agent.add_argument("--smoke-timeout", type=float, default=600.0)


def ssh_options(args: argparse.Namespace):  # noqa: ANN201 - SSHOptions, imported when the command runs
    import shlex

    from xvla_edge.deploy.fleet.ssh import SSHOptions

    return SSHOptions(known_hosts=args.known_hosts, identity=args.identity,
                      xvla_edge=tuple(shlex.split(args.remote_xvla_edge)))


def run(args: argparse.Namespace) -> int:
    if args.fleet_command == "agent":
        from xvla_edge.deploy.fleet import agent

        return agent.main(args.dir, args.op, args.args, backend=args.backend, device=args.device,
                          smoke_timeout_s=args.smoke_timeout)
    from xvla_edge.deploy.fleet.ssh import Agent, RemoteError, Robot

    options, answers, ok = ssh_options(args), {}, True
    for target in args.robot:
        try:
            robot = Robot.parse(target)
            agent = Agent(robot, options)
            answers[target] = (agent.call("status", "probe", args.health_url, timeout_s=60) if args.health_url
                               else agent.call("status", "status", timeout_s=60))
        except RemoteError as exc:
            answers[target], ok = {"error": str(exc)}, False
    for target, a in answers.items():
        if "error" in a:
            print(f"{target}: unreachable: {a['error']}")
            continue
        current, previous, last = a.get("current") or {}, a.get("previous") or {}, a.get("last") or {}
        health = ""
        if "health" in a:
            h = a["health"]
            health = (f", daemon {h.get('status')} on {(h.get('bundle_id') or '-')[:12]}" if h is not None
                      else f", daemon not answering ({a.get('reason')})")
        print(f"{target}: current {current.get('name', '-')} ({(current.get('bundle_id') or '-')[:12]}), previous "
              f"{previous.get('name', '-')}, last {last.get('action', '-')} at {last.get('time', '-')}{health}")
        for warning in a.get("warnings") or []:
            print(f"{target}: warning: {warning}")
    if args.json is not None:
        args.json.write_text(json.dumps(answers, indent=2))
    return 0 if ok else 1
