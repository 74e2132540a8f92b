"""``xvla-edge bench``: run the latency suites and write the results of this machine.

Example: ``xvla-edge bench --size tiny small`` (add ``full`` for the 0.9B configuration: minutes per backend);
``xvla-edge bench --bundle /var/lib/xvla-edge/current --backend tensorrt --device cuda`` (an installed or flashed
bundle on its real backend, :mod:`benchmarks.test_bundle_latency`; needs no torch).

Runs the latency suite of the installed :mod:`benchmarks` package (:mod:`benchmarks.suites`) under
pytest-benchmark, in the current directory (its checkpoints and bundles are cached in ``./benchmarks/.cache``),
and writes (:mod:`benchmarks.report`), under ``--out`` (default ``./benchmarks/results`` of the current
directory) ``/<machine-id>/`` (machine-id: architecture, CPU model and core count), named after the sizes run:
``<sizes>.json`` (pytest-benchmark's JSON with machine_info), ``<sizes>.md`` (machine details and a table of
median, floor, ratio and official/ours per stage, size and backend; the ratios between backends from side-by-side
rounds, A B A B ..., each the median of the per-round ratios with its min–max) and ``<sizes>.png``. The official
implementation runs beside ours when ``--official-src`` and ``--official-python`` (or ``XVLA_OFFICIAL_SRC`` /
``XVLA_OFFICIAL_PYTHON``) are given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from benchmarks.names import BACKENDS, DEFAULT_SIZES, SIZES
from runtime.backends.names import AUTO, BUNDLE_CHOICES, DEVICES
from xvla.constants import MAX_STEPS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", nargs="+", default=list(DEFAULT_SIZES), choices=SIZES)
    p.add_argument("--bundle", type=Path, default=None, metavar="DIR",
                   help="measure this bundle instead of the sizes' random-weight bundles (e.g. a robot's `current`)")
    p.add_argument("--backend", nargs="+", default=None, metavar="BACKEND",
                   help=f"sizes: {', '.join(BACKENDS)}, or a family (onnxruntime, torch, official); default: all. "
                        f"--bundle: one of {', '.join(BUNDLE_CHOICES)} (default {AUTO})")
    p.add_argument("--device", default="cpu", choices=DEVICES, help="--bundle: the device to run it on")
    p.add_argument("--steps", type=step_count, default=10, help=f"denoising steps of a chunk (1 ... {MAX_STEPS})")
    p.add_argument("--rounds", type=int, default=None, help="rounds of every benchmark (default: per size and stage)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads of each backend (default: one per core)")
    p.add_argument("--official-src", default=os.environ.get("XVLA_OFFICIAL_SRC"),
                   help="directory holding the official models/ package (commit 6bc2513)")
    p.add_argument("--official-python", default=os.environ.get("XVLA_OFFICIAL_PYTHON"),
                   help="python that imports the official code (transformers 4.51.3, timm 1.0.12)")
    p.add_argument("--out", type=Path, default=Path("benchmarks", "results"),
                   help="results root (default: benchmarks/results in the current directory)")
    p.add_argument("--machine-id", default=None, help="results sub-directory (default: from the CPU)")
    p.add_argument("--render", type=Path, default=None, metavar="JSON",
                   help="only (re)write the results files from an earlier run's JSON")


def step_count(text: str) -> int:
    """``--steps``: an integer 1 ... MAX_STEPS (what the runtime accepts)."""
    try:
        steps = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer 1 ... {MAX_STEPS}, got {text!r}") from None
    if not 1 <= steps <= MAX_STEPS:
        raise argparse.ArgumentTypeError(f"expected an integer 1 ... {MAX_STEPS}, got {steps}")
    return steps


def backend_names(name: str) -> list[str]:
    """A backend name, or every backend of a family (``onnxruntime`` → its fp32 and fp16 bundles)."""
    names = [b for b in BACKENDS if name in (b, b.rsplit("-", 1)[0])]
    if not names:
        raise argparse.ArgumentTypeError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)} or a family")
    return names


def selected(args: argparse.Namespace) -> list[str] | str | None:
    """The backends asked for: the size suites' names (families expanded), or the one --bundle backend."""
    if args.bundle is not None:
        if args.backend is not None and (len(args.backend) != 1 or args.backend[0] not in BUNDLE_CHOICES):
            raise argparse.ArgumentTypeError(f"--bundle takes one --backend of {', '.join(BUNDLE_CHOICES)}, "
                                             f"got {' '.join(args.backend)}")
        return args.backend[0] if args.backend else AUTO
    if args.device != "cpu":
        raise argparse.ArgumentTypeError("--device is for --bundle; the size suites choose theirs per backend")
    return [b for name in args.backend for b in backend_names(name)] if args.backend else None


def run(args: argparse.Namespace) -> int:
    from benchmarks.report import write_results
    from benchmarks.suites import BUNDLE_SUITE, bundle_environment, run_latency_suite, suite_environment
    from xvla.extras import needs

    with needs("test"):  # the suites run under pytest-benchmark; the results are plotted with matplotlib
        import matplotlib  # noqa: F401
        import pytest_benchmark  # noqa: F401

    try:
        backends = selected(args)
    except argparse.ArgumentTypeError as exc:
        print(f"xvla-edge bench: {exc}", file=sys.stderr)
        return 2
    if args.render:
        data, rc = json.loads(args.render.read_text()), 0
    elif args.bundle is not None:
        if not (args.bundle / "manifest.json").is_file():
            print(f"xvla-edge bench: --bundle {args.bundle}: no manifest.json there (expected a bundle made by "
                  "`xvla-edge export`, or a robot's `current`)", file=sys.stderr)
            return 2
        data, rc = run_latency_suite(bundle_environment(args.bundle, backends, args.device, args.steps, args.rounds,
                                                        args.threads), BUNDLE_SUITE)
    else:
        official = (args.official_src, args.official_python) if args.official_src and args.official_python else None
        data, rc = run_latency_suite(suite_environment(args.size, backends, args.steps, args.rounds, args.threads,
                                                       official))
        if data is None:
            print(f"xvla-edge bench: pytest exited with {rc} and wrote no results", file=sys.stderr)
            return rc or 1
    if "xvla" not in data["machine_info"]:
        print("xvla-edge bench: no X-VLA benchmark ran (all skipped?)", file=sys.stderr)
        return rc or 1
    out, label = write_results(data, args.out, args.machine_id)
    print(f"results: {out}/{label}.{{json,md,png}}")
    return rc
