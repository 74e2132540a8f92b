"""``xvla-edge ctl COMMAND``: operate a running daemon over its control socket (``[operator].socket``).

    xvla-edge ctl status
    xvla-edge ctl instruction "put the cup in the sink"
    xvla-edge ctl start [--seconds 60] | stop | hold | resume | estop | clear-estop | record

``estop`` goes to the control loop's own e-stop socket beside the control socket (nothing in the daemon can
delay it; see :mod:`xvla_edge.daemon.control`), or to the control socket when there is none. Human-readable by
default, ``--json`` prints the daemon's reply. Exit codes: 0 done, 1 refused by the daemon
(the reason is printed), 2 usage, 3 no daemon listens on the socket, 4 permission denied on the socket (ask
for the group named in ``[operator].socket_group``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DEFAULT_SOCKET = Path("/run/xvla-edge/control.sock")
NOT_RUNNING, DENIED = 3, 4


def add_arguments(p: argparse.ArgumentParser) -> None:
    from xvla_edge.daemon.control import COMMANDS

    p.add_argument("action", choices=COMMANDS, metavar="COMMAND", help=f"one of: {', '.join(COMMANDS)}")
    p.add_argument("text", nargs="?", default=None, help="instruction: the new task, in words")
    p.add_argument("--seconds", type=float, default=None, help="start: end the episode after this long")
    p.add_argument("--socket", type=Path, default=Path(os.environ.get("XVLA_CONTROL_SOCKET", DEFAULT_SOCKET)),
                   help=f"the daemon's control socket (default: $XVLA_CONTROL_SOCKET or {DEFAULT_SOCKET})")
    p.add_argument("--json", action="store_true", help="print the daemon's reply as JSON")


def run(args: argparse.Namespace) -> int:
    from xvla_edge.daemon.control import estop, send

    if (args.action == "instruction") != (args.text is not None):
        print("xvla-edge ctl: instruction takes the text (and only instruction takes one)", file=sys.stderr)
        return 2
    request: dict = {"command": args.action}
    if args.text is not None:
        from xvla.errors import InputError
        from xvla.instruction import check_instruction

        try:  # the daemon checks it too; here a terminal that is not UTF-8 is named before anything is sent
            request["text"] = check_instruction(args.text)
        except InputError as exc:
            print(f"xvla-edge ctl: {exc}", file=sys.stderr)
            return 2
    if args.seconds is not None:
        request["seconds"] = args.seconds
    try:
        if args.action == "estop":  # the control loop's own e-stop socket first: nothing else can delay it
            reply = estop(args.socket)
        else:
            reply = send(args.socket, request)
    except PermissionError:
        print(f"xvla-edge ctl: permission denied on {args.socket}: join the group that owns it "
              f"(ls -l {args.socket})", file=sys.stderr)
        return DENIED
    except (FileNotFoundError, ConnectionRefusedError):
        print(f"xvla-edge ctl: no daemon listens on {args.socket} (is it running with [operator].socket set?)",
              file=sys.stderr)
        return NOT_RUNNING
    except (OSError, ValueError) as exc:
        print(f"xvla-edge ctl: {args.socket}: {exc}", file=sys.stderr)
        return NOT_RUNNING
    if args.json:
        print(json.dumps(reply, indent=2, default=str))
    elif not reply.get("ok"):
        print(f"refused: {reply.get('error')}", file=sys.stderr)
    else:
        print(describe(args.action, reply))
    return 0 if reply.get("ok") else 1


def describe(action: str, reply: dict) -> str:
    if "state" not in reply and reply.get("estopped"):
        return "ok: estop, latched by the control loop (`xvla-edge ctl status` shows the daemon's state)"
    s = reply.get("state", {})
    head = f"mode {s.get('mode')}, operator {s.get('operator')}, health {s.get('health')}"
    if action != "status":
        extra = reply.get("result") or {}
        return f"ok: {action}" + (f" {extra}" if extra else "") + f" → {head}"
    ep = s.get("episode") or {}
    p50 = s.get("chunk_latency_p50_s")
    lines = [head, f"bundle:      {s.get('bundle_id', '')[:12] if s.get('bundle_id') else None} "
                   f"({s.get('embodiment')}) from {s.get('source')}",
             f"instruction: {s.get('instruction')!r}", f"episode:     {ep.get('number')}",
             f"chunks:      {s.get('chunks')}" + (f", latency p50 {p50 * 1e3:.0f} ms" if p50 is not None else ""),
             f"chunking:    {(s.get('chunking') or {}).get('text')}",
             f"ticks:       {s.get('ticks')}, missed deadlines {s.get('missed_deadlines')}"]
    lines += [f"reason:      {r}" for r in s.get("reasons", [])]
    lines += [f"fault:       {f['reason']}" for f in s.get("faults", [])[-3:]]
    return "\n".join(lines)
