"""The ``xvla-edge`` command line: a thin dispatcher over library calls.

Each command's module is imported only when that command runs, so ``xvla-edge run`` on a robot computer
never imports torch, and a command whose optional dependency is missing still shows in ``--help`` and
says what to install when it is used.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable

# name → (module, help). Each module defines ``add_arguments(parser)`` and ``run(args) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("xvla.demo", "run the whole pipeline on CPU with random weights"),
    "checkpoint": ("xvla.checkpoint_cli", "write a random-weight checkpoint in the official layout"),
    "export": ("export.cli", "export a checkpoint to a verified per-robot bundle (ONNX + manifest)"),
    "bench": ("xvla.bench_cli", "latency benchmarks against physical floors (and the official implementation)"),
    "build": ("runtime.build_cli", "build a bundle's TensorRT engines on this machine (the target)"),
    "run": ("runtime.daemon.run_cli", "the on-robot daemon: cameras, policy and arm, with health and metrics"),
    "config": ("runtime.daemon.config_cli", "validate a robot.toml without running (config check FILE)"),
    "flash": ("runtime.flash_cli", "install a verified bundle on a robot (atomic switch, previous kept)"),
    "rollback": ("runtime.rollback_cli", "make a robot's previous bundle active again"),
    "calibrate": ("calibration.cli", "calibration sets, and the accuracy gate of a bundle against its fp32 reference"),
    "quantize": ("calibration.quantize_cli", "an INT8 (Q/DQ) bundle from an fp32 bundle, calibrated and gated on a set"),
}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable[[argparse.Namespace], int]]]:
    parser = argparse.ArgumentParser(prog="xvla-edge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    runners: dict[str, Callable[[argparse.Namespace], int]] = {}
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            missing = str(e)
            runners[name] = lambda _args, _m=missing, _n=name: _missing(_n, _m)
            continue
        module.add_arguments(p)
        runners[name] = module.run
    return parser, runners


def _missing(name: str, why: str) -> int:
    print(f"xvla-edge {name}: unavailable on this install ({why}). "
          "Install the extra it needs, e.g. `pip install 'xvla-edge[export]'`.", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser, runners = build_parser()
    args = parser.parse_args(argv)
    return runners[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
