"""Cold start: ``xvla-edge run`` from process start to the arm under control and to the first chunk.

Not part of the test suite. Run::

    .venv/bin/python -m pytest benchmarks/test_cold_start.py -s \
        --benchmark-json=benchmarks/results/<machine>/cold-start.json

Each round starts the daemon in a fresh interpreter (``python -m xvla_edge.cli run``) on the demo's set-up —
the cached tiny bundle, a synthetic camera, the xvla-serial emulator on a pty, 200 Hz — and polls the
emulated controller (its count of accepted TARGETs) and the daemon's ``/metrics`` (``xvla_chunks_total``)
every 5 ms: **to control** is the first TARGET the controller accepts (the loop holds the measured pose),
**to first chunk** the first chunk the policy produced (the loop splices it in at its next tick), then the
daemon is stopped with SIGTERM. The goal is ≤ 2 s to the first chunk (issue 20); the floor is the same
interpreter starting and exiting with nothing imported (``python -c pass``), measured in the same run.
"""

from __future__ import annotations

import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from benchmarks.harness import bundle
from drivers.xvla_serial import emulator
from xvla_edge.daemon.robot_toml import robot_toml

REPO = Path(__file__).resolve().parents[1]
ROUNDS = 5
GOAL_S = 2.0
POLL_S = 0.005


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chunks(url: str) -> float:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as r:
            text = r.read().decode()
    except (urllib.error.URLError, OSError):
        return 0.0
    lines = [line for line in text.splitlines() if line.startswith("xvla_chunks_total")]
    return float(lines[0].split()[-1]) if lines else 0.0


def _one_start(config: Path, emu: emulator.EmulatorProcess, metrics: str) -> tuple[float, float]:
    accepted = emu.call("snapshot")["accepted"]
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "xvla_edge.cli", "run", "--config", str(config)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    to_control = to_chunk = None
    try:
        while to_chunk is None and time.perf_counter() - t0 < 60:
            if proc.poll() is not None:
                err = proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
                raise AssertionError(f"the daemon exited: {err}")
            now = time.perf_counter() - t0
            if to_control is None and emu.call("snapshot")["accepted"] > accepted:
                to_control = now
            if to_control is not None and _chunks(metrics) >= 1:
                to_chunk = now
            time.sleep(POLL_S)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert to_control is not None and to_chunk is not None, "no chunk within 60 s"
    return to_control, to_chunk


def test_cold_start(benchmark, tmp_path):
    emu = emulator.start(emulator.ControllerConfig(timeout_range_ms=(20, 10_000)), seed=3)
    try:
        port = _free_port()
        config = tmp_path / "robot.toml"
        config.write_text(robot_toml(bundle("tiny", "fp32"), emu.port, tmp_path / "recordings", health={"port": port},
                                     control={"realtime_priority": 0}))
        floor = min(_time([sys.executable, "-c", "pass"]) for _ in range(5))
        rounds: list[tuple[float, float]] = []
        benchmark.pedantic(lambda: rounds.append(_one_start(config, emu, f"http://127.0.0.1:{port}/metrics")),
                           rounds=ROUNDS, iterations=1)
    finally:
        emu.stop()
    control, chunk = statistics.median(r[0] for r in rounds), statistics.median(r[1] for r in rounds)
    benchmark.extra_info.update(to_control_median_s=round(control, 3), to_first_chunk_median_s=round(chunk, 3),
                                to_first_chunk_max_s=round(max(r[1] for r in rounds), 3), floor_s=round(floor, 4),
                                goal_s=GOAL_S, bundle="tiny fp32", rounds=ROUNDS)
    print(f"\ncold start ({ROUNDS} rounds, median): to control {control:.2f} s, to first chunk {chunk:.2f} s "
          f"(goal {GOAL_S} s; floor: interpreter start {floor * 1e3:.0f} ms)")
    assert chunk > control > floor


def _time(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - t0

