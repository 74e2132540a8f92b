"""Soak: the daemon at 200 Hz over the xvla-serial emulator for ten minutes; every process's memory at start and end.

Not part of the test suite (``pytest tests`` does not collect ``benchmarks/``). Run::

    .venv/bin/python -m pytest benchmarks/test_soak.py -s                                  # 60 s warm-up + 10 min
    XVLA_SOAK_SECONDS=60 XVLA_SOAK_WARMUP_S=20 .venv/bin/python -m pytest benchmarks/test_soak.py -s   # short
    XVLA_SOAK_OUT=benchmarks/results/<machine-id> .venv/bin/python -m pytest benchmarks/test_soak.py -s

A tiny random-weight bundle (domain 3: one arm, end effector, 1 s chunks), a synthetic camera, the emulator on
a pty and the real ``xvla-edge run`` process, which starts the control-loop process (and multiprocessing's
resource tracker). Every ``XVLA_SOAK_SAMPLE_S`` (default 10) s the resident set size (``VmRSS``) of each of
them is read from ``/proc``. The start figure is taken after ``XVLA_SOAK_WARMUP_S`` (default 180) s of
warm-up, the end figure ``XVLA_SOAK_SECONDS`` (default 600) s later; each process must grow by less than
:data:`MAX_GROWTH` over that window. With ``XVLA_SOAK_OUT`` set the result goes there as ``soak.json`` and
``soak.md``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Dict, List

from benchmarks.machine import children, free_port, rss_kb
from drivers.xvla_serial import emulator
from xvla_edge.daemon.robot_toml import robot_toml

SECONDS = float(os.environ.get("XVLA_SOAK_SECONDS", "600"))
WARMUP_S = float(os.environ.get("XVLA_SOAK_WARMUP_S", "180"))  # a first run grew 1.1 % over 60-660 s, most of it before 210 s
SAMPLE_S = float(os.environ.get("XVLA_SOAK_SAMPLE_S", "10"))
RATE_HZ = 200
MAX_GROWTH = 0.01  # fraction of the RSS after warm-up
REPO = Path(__file__).resolve().parents[1]


def metric(text: str, name: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else float("nan")


def test_soak(tiny_bundle: Path, tmp_path: Path) -> None:
    emu = emulator.start(emulator.ControllerConfig(n_arms=1), seed=0)
    health = free_port()
    config = tmp_path / "robot.toml"
    config.write_text(robot_toml(tiny_bundle, emu.port, tmp_path / "recordings", control={"rate_hz": RATE_HZ},
                             health={"port": health}, logging={"level": "info"}, recorder={"on_fault": False}))
    log = tmp_path / "daemon.log"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with log.open("wb") as sink:
        daemon = subprocess.Popen([sys.executable, "-m", "xvla_edge.cli", "run", "--config", str(config)], env=env,
                                  stdout=sink, stderr=subprocess.STDOUT)
    samples: List[Dict[str, float]] = []
    try:
        t0 = time.monotonic()
        while not any(json.loads(line).get("event") == "ready" for line in log.read_text().splitlines()
                      if line.startswith("{")):
            assert daemon.poll() is None and time.monotonic() - t0 < 120, log.read_text()[-3000:]
            time.sleep(0.2)
        pids = {"daemon": daemon.pid, **children(daemon.pid), "emulator": emu.pid}
        start = time.monotonic()
        while True:
            elapsed = time.monotonic() - start
            assert daemon.poll() is None, log.read_text()[-3000:]
            samples.append({"t_s": round(elapsed, 1), **{role: rss_kb(pid) for role, pid in pids.items()}})
            if elapsed >= WARMUP_S + SECONDS:
                break
            time.sleep(min(SAMPLE_S, WARMUP_S + SECONDS - elapsed))
        with urllib.request.urlopen(f"http://127.0.0.1:{health}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=5) as r:
            healthz = json.load(r)
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=30)
        snapshot = emu.call("snapshot")
    finally:
        if daemon.poll() is None:
            daemon.kill()
        emu.stop()
    logs = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    first = next(s for s in samples if s["t_s"] >= WARMUP_S)
    last = samples[-1]
    window = last["t_s"] - first["t_s"]
    processes = {
        role: {"pid": pid, "rss_start_kb": first[role], "rss_end_kb": last[role],
               "growth_pct": round(100 * (last[role] - first[role]) / first[role], 3),
               "growth_kb_per_min": round((last[role] - first[role]) / window * 60, 2)}
        for role, pid in pids.items()
    }
    result = {
        "measured": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                 "kernel": platform.release(), "python": platform.python_version(), "loadavg": os.getloadavg()},
        "rate_hz": RATE_HZ, "warmup_s": WARMUP_S, "window_s": window, "sample_s": SAMPLE_S,
        "max_growth_pct": 100 * MAX_GROWTH, "processes": processes,
        "daemon": {"exit_code": code, "health": healthz, "chunks": metric(metrics, "xvla_chunks_total"),
                   "summary": [e["msg"] for e in logs if e.get("event") == "summary"]},
        "emulator": {k: snapshot[k] for k in ("accepted", "nacked", "seq_gaps", "corrupt_frames", "mode")},
        "samples": samples,
    }
    print("\n" + json.dumps({k: result[k] for k in ("window_s", "processes", "daemon", "emulator")}, indent=1))
    out = os.environ.get("XVLA_SOAK_OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
        (Path(out) / "soak.md").write_text(report(result))
    assert code == 0 and healthz["status"] == "ok" and snapshot["nacked"] == 0
    assert result["daemon"]["chunks"] >= window  # at least a chunk per second (1 s chunks, started at half)
    grown = {role: p["growth_pct"] for role, p in processes.items() if p["growth_pct"] >= 100 * MAX_GROWTH}
    assert not grown, f"RSS grew by {MAX_GROWTH:.0%} or more after warm-up: {grown}"


def report(result: dict) -> str:
    """The short Markdown summary written beside ``soak.json``."""
    host = result["host"]
    lines = [
        f"# Soak: the daemon at {result['rate_hz']} Hz over the xvla-serial emulator",
        "",
        f"Measured {result['measured']} with `benchmarks/test_soak.py` on {host['cpu']}, {host['cores']} cores "
        f"(kernel {host['kernel']}, Python {host['python']}; shared machine). Warm-up {result['warmup_s']:g} s, "
        f"then {result['window_s']:g} s measured; RSS (`VmRSS`) sampled every {result['sample_s']:g} s "
        f"(every sample in `soak.json`). Pass: every process grows < {result['max_growth_pct']:g} % after warm-up.",
        "",
        "| process | RSS after warm-up | RSS at end | growth | per minute |",
        "|---|---|---|---|---|",
    ]
    for role, p in result["processes"].items():
        lines.append(f"| {role} | {p['rss_start_kb'] / 1024:.1f} MiB | {p['rss_end_kb'] / 1024:.1f} MiB | "
                     f"{p['growth_pct']:+.2f} % | {p['growth_kb_per_min']:+.1f} kB |")
    d, e = result["daemon"], result["emulator"]
    over = [role for role, p in result["processes"].items() if p["growth_pct"] >= result["max_growth_pct"]]
    lines += [
        "",
        f"**{'FAIL' if over else 'PASS'}**" + (f": {', '.join(over)} grew {result['max_growth_pct']:g} % or more "
                                              "(see the samples in `soak.json` for when)." if over else "."),
        "",
        f"Daemon: {d['chunks']:.0f} chunks, health `{d['health']['status']}` at the end, exit code "
        f"{d['exit_code']} after SIGTERM. Emulator: {e['accepted']} targets accepted, {e['nacked']} refused, "
        f"{e['seq_gaps']} frames lost, {e['corrupt_frames']} corrupt, final mode {e['mode']}.",
        "",
        "Daemon summary:",
        "",
        *[f"- {line}" for line in d["summary"]],
        "",
    ]
    return "\n".join(lines)
