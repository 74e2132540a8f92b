"""``xvla-edge sim``: the simulated tabletop task — train the small X-VLA on it, evaluate any policy on it.

Examples::

    xvla-edge sim train --out ./sim-checkpoint --seed 0      # ≈ 20 min on a 2-core CPU
    xvla-edge sim eval --bundle ./sim-bundle --episodes 100 --out ./sim-eval
    xvla-edge sim eval --bundle ./sim-bundle --backend torch  # the PyTorch checkpoint behind the bundle
    xvla-edge sim eval --bundle ./sim-bundle --daemon         # the real daemon, emulated arm on a pty
    xvla-edge sim eval --bundle ./sim-bundle --expert         # the scripted expert through the same chain
    xvla-edge sim eval --bundle ./sim-bundle --chunking rtc blend replace --latency 0.1 0.25 0.4  # 9 cells
    xvla-edge sim calibration-set --out ./sim-set --count 256 # INT8 calibration observations of the task

The committed checkpoint (``xvla-edge sim checkpoint`` prints its directory) was trained by ``sim train``
with the seed and settings in its ``PROVENANCE.json``; export it like any checkpoint::

    xvla-edge export "$(xvla-edge sim checkpoint)" --domain-id 3 --views 2 --out sim-bundle
 ``eval`` prints one line per episode and the summary
(success rate with its 95 % interval, mean time to success, safety clamps per episode, the seams of the chunk
hand-overs) and writes
``NAME.json``, ``NAME.png`` (every episode: the scene, the gripper's path, the outcome) and ``NAME.gif``
(the first episodes as the camera saw them) into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from runtime.backends.names import ONNXRUNTIME, SIM_CHOICES
from xvla_edge.commands import add_out, out_path


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="sim_command", metavar="ACTION", required=True)
    tr = sub.add_parser("train", help="train the sim policy from scratch on this CPU")
    add_out(tr, "checkpoint directory to create")
    tr.add_argument("--seed", type=int, default=0, help="seed of data, initialisation and batches (0-999)")
    tr.add_argument("--layouts", type=int, default=None,
                    help="block layouts, each demonstrated once per block (default: see sim/train.py)")
    tr.add_argument("--steps", type=int, default=None, help="optimiser steps (default: see sim/train.py)")
    tr.add_argument("--approach-steps", type=int, default=None,
                    help="first steps drawn from each demonstration's first second only (default: see sim/train.py)")
    tr.add_argument("--refine-steps", type=int, default=None,
                    help="steps of the refinement after the schedule (fresh AdamW, constant low rate; default: see "
                         "sim/train.py; 0: none)")
    tr.add_argument("--refine-approach-steps", type=int, default=None,
                    help="first refinement steps on the approach only (default: see sim/train.py)")
    tr.add_argument("--force", action="store_true", help="replace an existing OUT (only once training finished)")

    ev = sub.add_parser("eval", help="run N episodes with a policy; success rate, time, safety clamps, pictures")
    ev.add_argument("--bundle", type=Path, default=None, help="bundle to run (required; see above)")
    ev.add_argument("--backend", default=ONNXRUNTIME, choices=SIM_CHOICES,
                    help="torch: the bundle's source PyTorch checkpoint (the reference)")
    mode = ev.add_mutually_exclusive_group()
    mode.add_argument("--daemon", action="store_true",
                      help="through the real daemon in real time (xvla-serial emulator on a pty)")
    mode.add_argument("--expert", action="store_true", help="the scripted expert through the same chain")
    ev.add_argument("--episodes", type=int, default=20, help="episodes (default 20)")
    ev.add_argument("--seed", type=int, default=0, help="first episode seed; episode i has seed SEED + i")
    ev.add_argument("--split", default="random", choices=["random", "not-nearest"],
                    help="not-nearest: the named block is never the one nearest the gripper")
    ev.add_argument("--latency", type=float, nargs="+", default=None, metavar="S",
                    help="inference latency, s, 0 ... 1: virtual (default 0.1), or with --daemon the latency its "
                         "inference is padded to (default: as this computer runs it); several: one run per latency")
    ev.add_argument("--chunking", nargs="+", default=["blend"], choices=["rtc", "blend", "replace"],  # no import
                    help="how the next chunk takes over (the daemon's [inference].chunking and its default; rtc: "  # here:
                         "real-time chunking, the bundle must support a prefix); several: one run per mode "  # --help
                         "(default blend)")  # stays light; tests/xvla_edge/test_cli.py checks these against the daemon's
    ev.add_argument("--out", type=Path, default=None, help="write NAME.json/.png/.gif here")
    ev.add_argument("--name", default=None, help="file name stem (default: the source)")
    ev.add_argument("--quiet", action="store_true", help="only the summary line")

    cs = sub.add_parser("calibration-set", help="observations of the task as an INT8 calibration set")
    add_out(cs, "set directory to create")
    cs.add_argument("--count", type=int, default=256, help="observations (default 256)")
    cs.add_argument("--seed", type=int, default=0, help="episode seeds start here (evaluation range)")
    cs.add_argument("--force", action="store_true", help="replace an existing set")

    sub.add_parser("checkpoint", help="print the committed sim checkpoint's directory")


def run(args: argparse.Namespace) -> int:
    return {"train": _train, "eval": _eval, "calibration-set": _calibration_set,
            "checkpoint": _checkpoint}[args.sim_command](args)


def _train(args: argparse.Namespace) -> int:
    from xvla.extras import needs

    with needs("torch"):
        from xvla_edge.sim.train import TrainOptions, train
    defaults = TrainOptions()
    chosen = {"layouts": args.layouts, "steps": args.steps, "approach_steps": args.approach_steps,
              "refine_steps": args.refine_steps, "refine_approach_steps": args.refine_approach_steps}
    options = dataclasses.replace(defaults, seed=args.seed, **{k: v for k, v in chosen.items() if v is not None})
    provenance = train(out_path(args), options, force=args.force)
    print(f"[train] wrote {out_path(args)}: final losses {provenance['final_losses']}, "
          f"{provenance['seconds']['total']:.0f} s")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from xvla_edge.sim import evaluate

    reports = evaluate.evaluate_cli(
        bundle=args.bundle, backend=args.backend, daemon=args.daemon, expert=args.expert, episodes=args.episodes,
        seed=args.seed, split=args.split, latency_s=args.latency, out=args.out, name=args.name,
        progress=None if args.quiet else print, chunking=args.chunking)
    for report in reports:
        print(report.line())
    return 0


def _calibration_set(args: argparse.Namespace) -> int:
    from xvla_edge.sim.calibration_sets import write_calibration_set

    path = write_calibration_set(out_path(args), count=args.count, seed=args.seed, force=args.force)
    print(f"[sim] calibration set of {args.count} task observations: {path}")
    return 0


def _checkpoint(args: argparse.Namespace) -> int:
    from xvla_edge.sim import CHECKPOINT_DIR

    print(CHECKPOINT_DIR)
    return 0
