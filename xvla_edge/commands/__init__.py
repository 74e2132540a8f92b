"""One module per ``xvla-edge`` command, named for the command.

Each module defines ``add_arguments(parser)`` and ``run(args) -> int`` (the exit status) and imports only
the standard library at module level: the libraries a command needs are imported inside ``run``, the
optional ones under :func:`xvla.extras.needs`, so ``--help`` and the robot-side commands never load
torch, transformers or onnx.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_out(p: argparse.ArgumentParser, help_text: str) -> None:
    """``--out DIR``, as every command that writes a directory takes it; the older positional ``OUT`` is still
    accepted (scripts and committed provenance use it), one or the other."""
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("out_positional", nargs="?", type=Path, metavar="OUT", help=f"{help_text} (same as --out)")
    group.add_argument("--out", type=Path, help=help_text)


def out_path(args: argparse.Namespace) -> Path:
    """The directory given by :func:`add_out`."""
    return args.out if args.out is not None else args.out_positional
