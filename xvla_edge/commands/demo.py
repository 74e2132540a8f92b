"""``xvla-edge demo``: the whole pipeline on this CPU, with a simulated arm controller.

Example: ``xvla-edge demo`` (about a minute on a 2-core machine; ``--seconds`` sets the run time)

1. writes a tiny random-weight checkpoint in the official layout (loaded like a released one);
2. exports it to a verified bundle (ONNX + manifest, ONNX Runtime parity checked);
3. starts the xvla-serial arm-controller emulator as its own process on a pseudo-terminal;
4. writes a ``robot.toml`` for them and runs the daemon (:mod:`xvla_edge.daemon.service`) with a synthetic
   camera: inference beside a control loop in its own process, through the safety envelope, over the wire;
5. prints a summary and writes PNG plots (commanded vs measured trajectory; chunk latency and control
   tick-interval error histograms) into the work directory. The printed interval figures and the histogram
   come from one window of the loop's own statistics, missed deadlines included.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

DOMAIN_ID = 3  # libero-franka: one arm, ee6d, 1 s chunks
RATE_HZ = 200


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=10.0, help="how long the daemon drives the arm (default 10)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep checkpoint, bundle, config, plots here (default: a new temp dir); reused if present")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from drivers.xvla_serial import emulator
    from runtime.manifest import MANIFEST_FILE
    from xvla.constants import WEIGHTS_FILE
    from xvla_edge.daemon.config import load_config
    from xvla_edge.daemon.logs import configure_logging
    from xvla_edge.daemon.service import Daemon
    from xvla_edge.extras import needs

    with needs("export"):
        from export.bundle import ExportOptions, export_bundle
        from xvla.random_checkpoint import write_random_checkpoint

    work = args.workdir or Path(tempfile.mkdtemp(prefix="xvla-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    configure_logging("warning")
    ckpt, bundle = work / "checkpoint-tiny", work / "bundle"
    t0 = time.perf_counter()
    if not (ckpt / WEIGHTS_FILE).exists():
        write_random_checkpoint(ckpt, "tiny", seed=0)
    if not (bundle / MANIFEST_FILE).exists():
        export_bundle(ckpt, bundle, ExportOptions(domain_id=DOMAIN_ID, views=1), progress=lambda s: None)
    print(f"[demo] checkpoint and bundle ready in {time.perf_counter() - t0:.1f} s: {bundle}")
    emu = emulator.start(emulator.ControllerConfig(n_arms=1), seed=0)
    try:
        config_path = work / "robot.toml"
        config_path.write_text(robot_toml(bundle, emu.port, work / "recordings"))
        daemon = Daemon(load_config(config_path))
        daemon.start()
        print(f"[demo] daemon running for {args.seconds:g} s: arm emulator on {emu.port}, control loop {RATE_HZ} Hz")
        try:
            daemon.run(threading.Event(), args.seconds)
            trace = daemon.loop.trace()  # type: ignore[union-attr]
            summary = daemon.summary(timing=trace["timing"])
            latencies = np.array(daemon.latencies)
        finally:
            daemon.close()
        snapshot = emu.call("snapshot")
    finally:
        emu.stop()
    for line in summary.lines():
        print(f"[demo] {line}")
    print(f"[demo] controller: {snapshot['accepted']} targets accepted, {snapshot['nacked']} refused, "
          f"{snapshot['seq_gaps']} frames lost")
    plot = work / "demo.png"
    _plot(trace, latencies, plot)
    print(f"[demo] plots: {plot}")
    return 0 if summary.chunks > 0 and not snapshot["nacks"] else 1


def robot_toml(bundle: Path, port: str, recordings: Path, **sections: dict[str, object]) -> str:
    """The demo's robot.toml: a synthetic camera, an emulated xvla-serial arm on ``port``, health off.

    ``sections`` add or override keys per table, e.g. ``control={"rate_hz": 100}`` (the daemon tests and the
    soak benchmark run the same set-up with other rates and sizes).
    """
    tables: dict[str, dict[str, object]] = {
        "bundle": {"path": str(bundle), "backend": "onnxruntime"},
        "cameras": {"slot": 0, "source": "synthetic", "width": 320, "height": 240, "fps": 30, "max_age_s": 0.5},
        "arm": {"driver": "xvla-serial", "port": port, "space": "ee", "timeout_ms": 500},
        "control": {"rate_hz": RATE_HZ},
        "inference": {"start_fraction": 0.5},
        "health": {"port": 0},
        "recorder": {"directory": str(recordings)},
    }
    for name, values in sections.items():
        tables.setdefault(name, {}).update(values)
    lines = ["# written by xvla-edge demo", 'instruction = "pick up the red block and place it in the bowl"']
    for name, values in tables.items():  # JSON scalars are TOML scalars (strings, numbers, true/false)
        lines += ["", f"[[{name}]]" if name == "cameras" else f"[{name}]"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def _plot(trace: dict, latencies: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = trace["time"] - trace["time"][0]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for axis, colour in zip(range(3), "rgb"):
        axes[0].plot(t, trace["command"][:, axis], colour, lw=1, label=f"{'xyz'[axis]} commanded")
        axes[0].plot(t, trace["measured"][:, axis], colour + "--", lw=1, label=f"{'xyz'[axis]} measured")
    axes[0].set(xlabel="time (s)", ylabel="position (m)", title="end effector: commanded vs measured")
    axes[0].legend(fontsize=7, ncol=2)
    axes[1].hist(latencies * 1e3, bins=30)
    axes[1].set(xlabel="observation to chunk (ms)", ylabel="chunks", title="chunk latency")
    timing, ms = trace["timing"], 1e3
    axes[2].hist(trace["interval_error"] * ms, bins=50)
    axes[2].set_yscale("log")
    axes[2].set(xlabel="tick interval - period (ms)", ylabel="ticks",
                title=f"control tick interval error ({RATE_HZ} Hz)\np99 {timing['interval_error_p99'] * ms:.2f} ms, "
                      f"missed deadlines {timing['missed_deadlines']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
