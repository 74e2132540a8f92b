"""The trained sim policy doing its task through every policy source: success rates with 95 % intervals.

Not part of the test suite (``pytest tests`` does not collect ``benchmarks/``). Run::

    .venv/bin/python -m pytest benchmarks/test_sim_task.py -s                       # 100 episodes per source
    XVLA_SIM_EPISODES=20 .venv/bin/python -m pytest benchmarks/test_sim_task.py -s  # quicker
    XVLA_SIM_OUT=benchmarks/results/<machine-id> .venv/bin/python -m pytest benchmarks/test_sim_task.py -s

Sources, on the same episodes (seeds 0 … N−1, layouts never seen in training): the scripted expert through the
chain (the task's ceiling), the PyTorch checkpoint (``--backend torch``), fp32 / fp16 / INT8 bundles on ONNX
Runtime (INT8: ``xvla-edge quantize`` calibrated on task observations), all in virtual time with the
in-process control loop; then the real daemon with the fp32 bundle in real time (emulated arm on a pty).
The language split (``not-nearest``: the named block is never the one nearest the gripper) runs for the
PyTorch checkpoint and the fp32 bundle. Targets (issue 15): PyTorch ≥ 90 %; every bundle and the daemon
within 5 points of PyTorch. With ``XVLA_SIM_OUT`` the results go there as ``sim-task.json``, ``sim-task.md``
and one picture per source.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path

import pytest

from benchmarks.conftest import cpu_model
from xvla_edge.sim import CHECKPOINT_DIR
from xvla_edge.sim.evaluate import run_episodes
from xvla_edge.sim.report import Report, write

EPISODES = int(os.environ.get("XVLA_SIM_EPISODES", "100"))
OUT = os.environ.get("XVLA_SIM_OUT")
PYTORCH_TARGET = 0.90
BUNDLE_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    from export.bundle import ExportOptions, export_bundle
    from xvla_edge.sim.calibration_sets import write_calibration_set

    root = tmp_path_factory.mktemp("sim-bundles")
    out = {}
    for precision in ("fp32", "fp16"):
        out[precision] = root / precision
        export_bundle(CHECKPOINT_DIR, out[precision], ExportOptions(domain_id=3, views=2, precision=precision),
                      progress=lambda s: None)
    calib = write_calibration_set(root / "calibration", count=256, seed=5000)
    out["int8"] = _quantize(out["fp32"], calib, root / "int8")
    return out


def _quantize(fp32: Path, calib: Path, dest: Path) -> Path:
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "xvla_edge", "quantize", str(fp32), "--set", str(calib), "--out", str(dest)],
                   check=True)
    return dest


def test_sim_task_success_rates(bundles):
    seeds = range(EPISODES)
    reports: list[Report] = [
        run_episodes(bundles["fp32"], seeds, expert=True),
        run_episodes(bundles["fp32"], seeds, backend="torch"),
        run_episodes(bundles["fp32"], seeds, split="not-nearest", backend="torch"),
        run_episodes(bundles["fp32"], seeds),
        run_episodes(bundles["fp32"], seeds, split="not-nearest"),
        run_episodes(bundles["fp16"], seeds),
        run_episodes(bundles["int8"], seeds),
        run_episodes(bundles["fp32"], seeds, daemon=True),
    ]
    for r in reports:
        print(r.line())
    by = {(r.source, r.split): r for r in reports}
    torch_rate = by[("torch:fp32", "random")].rate
    if OUT:
        _write(Path(OUT), reports)
    assert torch_rate >= PYTORCH_TARGET, by[("torch:fp32", "random")].line()
    for key in (("onnxruntime:fp32", "random"), ("onnxruntime:fp16", "random"), ("onnxruntime:int8", "random"),
                ("daemon:fp32", "random")):
        assert by[key].rate >= torch_rate - BUNDLE_TOLERANCE, by[key].line()


def _write(out: Path, reports: list[Report]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    provenance = json.loads((CHECKPOINT_DIR / "PROVENANCE.json").read_text())
    rows = [r.summary() | {"settings": r.settings} for r in reports]
    doc = {"benchmark": "sim-task", "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "machine": {"cpu_model": cpu_model(), "cores": os.cpu_count(), "arch": platform.machine(),
                       "python": platform.python_version()},
           "checkpoint": {"provenance": provenance}, "episodes_per_source": EPISODES,
           "targets": {"pytorch_min": PYTORCH_TARGET, "bundles_within": BUNDLE_TOLERANCE}, "results": rows}
    (out / "sim-task.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = ["# Sim task: success of the trained policy per source", "",
             f"{EPISODES} episodes per source (seeds 0 … {EPISODES - 1}); 95 % Wilson intervals. "
             f"Targets: PyTorch ≥ {PYTORCH_TARGET:.0%}, every bundle and the daemon within "
             f"{BUNDLE_TOLERANCE * 100:.0f} points of PyTorch.", "",
             "Ticks clamped: control ticks whose command the safety envelope changed or refused (virtual time; the "
             "daemon's loop counts clamps by kind only).", "",
             "| source | split | success | 95 % CI | mean time to success | clamps / episode | ticks clamped | outcomes |",
             "|---|---|---|---|---|---|---|---|"]
    for r in reports:
        s = r.summary()
        t = "n/a" if s["mean_time_to_success_s"] is None else f"{s['mean_time_to_success_s']:.2f} s"
        share = "n/a" if s["clamped_tick_share"] is None else f"{100 * s['clamped_tick_share']:.0f} %"
        lines.append(f"| {r.source} | {r.split} | {s['successes']}/{s['episodes']} = {100 * s['success_rate']:.1f} % | "
                     f"{100 * s['ci95'][0]:.1f}–{100 * s['ci95'][1]:.1f} % | {t} | {s['clamps_per_episode']} | {share} | "
                     f"{s['outcomes']} |")
        write(r, out, f"sim-task-{r.source.replace(':', '-')}-{r.split}")
    (out / "sim-task.md").write_text("\n".join(lines) + "\n")
