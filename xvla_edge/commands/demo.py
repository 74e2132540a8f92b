"""``xvla-edge demo``: a trained X-VLA doing a simulated tabletop task through the whole on-robot chain.

Example: ``xvla-edge demo`` (under a minute on a 2-core machine; ``--episodes`` sets how many)

1. exports the committed sim checkpoint (:data:`xvla_edge.sim.CHECKPOINT_DIR`, a small X-VLA trained here by
   ``xvla-edge sim train``; official file layout, loaded like a released one) to a verified bundle
   (ONNX + manifest, ONNX Runtime parity checked);
2. starts the xvla-serial arm-controller emulator as its own process on a pseudo-terminal;
3. per episode (a new layout of coloured blocks and an instruction naming one of them): puts the arm at its
   start pose, configures and runs the daemon (:mod:`xvla_edge.daemon.service`) with the
   simulated scene and wrist cameras — inference beside a control loop in its own process at 200 Hz, through the safety
   envelope, over the wire — until the task is done or 8 s pass;
4. prints each episode's outcome, the summary and the daemon's own figures for the last episode, and writes
   ``demo.png`` (every episode: scene, the gripper's path, outcome) and ``demo.gif`` (the camera's view).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

DOMAIN_ID = 3  # the sim checkpoint's domain (libero-franka's row: one arm, ee6d, 1 s chunks)
DEMO_SEEDS = (3, 0, 7, 12, 5, 9)  # six episodes: pick and touch, every colour named, varied layouts


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--episodes", type=int, default=len(DEMO_SEEDS),
                   help=f"episodes to run (default {len(DEMO_SEEDS)}; more continue at seed 100)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep bundle, configs, pictures here (default: a new temp dir); reused if present")


def run(args: argparse.Namespace) -> int:
    from xvla.extras import needs

    with needs("export"):
        from export.bundle import ExportOptions, export_bundle
    from runtime.manifest import MANIFEST_FILE
    from xvla_edge.daemon.logs import configure_logging
    from xvla_edge.daemon.robot_toml import RATE_HZ
    from xvla_edge.sim import CHECKPOINT_DIR
    from xvla_edge.sim.evaluate import EvaluationError, check_count, run_episodes
    from xvla_edge.sim.report import write

    episodes = check_count("--episodes", args.episodes, 1, 1000)
    if not (CHECKPOINT_DIR / "model.safetensors").is_file():
        raise EvaluationError(f"the sim checkpoint is missing from {CHECKPOINT_DIR} (an incomplete install?)")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="xvla-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    configure_logging("warning")
    bundle = work / "bundle"
    t0 = time.perf_counter()
    if not (bundle / MANIFEST_FILE).exists():
        export_bundle(CHECKPOINT_DIR, bundle, ExportOptions(domain_id=DOMAIN_ID, views=2), progress=lambda s: None)
    print(f"[demo] trained sim checkpoint exported and verified in {time.perf_counter() - t0:.1f} s: {bundle}")
    seeds = list(DEMO_SEEDS[:episodes]) + list(range(100, 100 + max(0, episodes - len(DEMO_SEEDS))))
    print(f"[demo] {len(seeds)} episodes through the daemon: scene camera → policy → {RATE_HZ} Hz control loop → "
          "xvla-serial emulator on a pty")
    report = run_episodes(bundle, seeds, daemon=True, workdir=work, frames_for=len(seeds),
                          progress=lambda line: print(f"[demo]{line}"))
    for line in report.episodes[-1].daemon_lines:
        print(f"[demo] last episode's daemon: {line}")
    print(f"[demo] {report.line()}")
    for path in write(report, work, "demo"):
        print(f"[demo] wrote {path}")
    return 0
