"""The ``xvla-edge`` command line: a thin dispatcher over the command modules of :mod:`xvla_edge.commands`.

Command modules import only the standard library at module level, so building the parser is cheap
(``--help``, ``config check`` and ``run`` never load torch) and every command always parses its own
arguments. What a command needs is imported when it runs; a missing optional dependency is one line naming
the extra to install (exit 2), and any error the project raises on purpose (:class:`xvla.errors.XVLAError`)
that a command does not handle itself is one line too (exit 1), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Callable, Optional

Runner = Callable[[argparse.Namespace], int]

# name → help. The command ``NAME`` lives in ``xvla_edge.commands.NAME``.
COMMANDS: dict[str, str] = {
    "demo": "a trained X-VLA doing a simulated tabletop task through the whole chain (bundle, daemon, emulated arm)",
    "checkpoint": "write a random-weight checkpoint in the official layout",
    "export": "export a checkpoint to a verified per-robot bundle (ONNX + manifest)",
    "bench": "latency benchmarks against physical floors (and the official implementation)",
    "info": "a bundle's id and what it holds, after validating its manifest (--verify: every file too)",
    "build": "build a bundle's TensorRT engines on this machine (the target)",
    "run": "the on-robot daemon: cameras, policy and arm, with health and metrics",
    "ctl": "operate a running daemon: status, instruction, start/stop, hold/resume, estop/clear-estop, record",
    "config": "validate a robot.toml without running (config check FILE)",
    "arm": "look at a robot.toml's arm before enabling torque (arm check --config FILE): IDs, positions, errors",
    "flash": "install a verified bundle on a robot (atomic switch, previous kept)",
    "rollback": "make a robot's previous bundle active again",
    "fleet": "robots seen from a workstation: fleet status (bundle per robot); fleet agent (a flash's robot side)",
    "calibrate": "calibration sets, and the accuracy gate of a bundle against its fp32 reference",
    "quantize": "an INT8 (Q/DQ) bundle from an fp32 bundle, calibrated and gated on a set",
    "serve": "serve bundles over HTTP (the official X-VLA /act API) and a msgpack websocket",
    "sim": "the simulated tabletop task: train the small X-VLA on it, evaluate any policy on it",
}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Runner]]:
    parser = argparse.ArgumentParser(prog="xvla-edge", description="X-VLA on robot computers: export, run, "
                                     "flash, calibrate and benchmark vision-language-action bundles.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    runners: dict[str, Runner] = {}
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(f"xvla_edge.commands.{name}")
        module.add_arguments(p)
        runners[name] = module.run
    return parser, runners


def main(argv: Optional[list[str]] = None) -> int:
    from xvla.errors import XVLAError
    from xvla.extras import MissingDependency

    parser, runners = build_parser()
    args = parser.parse_args(argv)
    try:
        return runners[args.command](args)
    except MissingDependency as exc:
        print(f"xvla-edge {args.command}: {exc}", file=sys.stderr)
        return 2
    except XVLAError as exc:
        print(f"xvla-edge {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"xvla-edge {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`xvla-edge info B | head -1`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again
        return 141


if __name__ == "__main__":
    sys.exit(main())
