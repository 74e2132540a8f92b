"""The daemon end to end on CPU: a tiny bundle, a synthetic camera, the xvla-serial emulator on a pty.

Each fault ends in its specified safe state, checked on the control loop and on the controller itself:
camera stall → hold (no chunk acts on old images); inference stall → the chunk runs out and the loop
holds; link drop → nothing sent, reconnect afterwards; SIGTERM → the arm is told to hold and the process
exits 0. Health, metrics and the recorder report each.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from xvla_edge.daemon.config import load_config
from xvla_edge.daemon.robot_toml import robot_toml
from xvla_edge.daemon.service import Daemon

from tests.support.daemon_driving import accepted, drive
from tests.support.robot_configs import SLOW_LOOP, SMALL_CAMERA

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, bundle: Path, port: str, *, health_port: int = 0, max_latency: float = 1.0) -> Path:
    """The demo's set-up, smaller and slower: 96x64 images, 100 Hz without real-time priority, 300 ms deadman."""
    path.write_text(robot_toml(bundle, port, path.parent / "recordings", cameras=SMALL_CAMERA,
                               arm={"timeout_ms": 300}, control=SLOW_LOOP, inference={"max_latency_s": max_latency},
                               health={"port": health_port}, recorder={"seconds": 5}))
    return path


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def canonical_id(bundle: Path) -> str:
    """The bundle id computed here: sha256 of the manifest as canonical JSON."""
    raw = json.loads((Path(bundle) / "manifest.json").read_text())
    return hashlib.sha256(json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


@pytest.fixture
def daemon(tmp_path, bundle, emu):
    port = free_port()
    d = Daemon(load_config(write_config(tmp_path / "robot.toml", bundle, emu.port, health_port=port)))
    d.start()
    d.health_url = f"http://127.0.0.1:{port}"
    yield d
    d.close()


def test_drives_the_arm_within_the_envelope_and_reports(daemon, emu):
    assert drive(daemon, 20.0, until=lambda d: accepted(d) >= 4)
    status, body = get(daemon.health_url + "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok", body
    status, metrics = get(daemon.health_url + "/metrics")
    chunks = [line for line in metrics.splitlines() if line.startswith("xvla_chunks_total")]
    assert status == 200 and chunks and float(chunks[0].split()[-1]) >= 4
    info = [line for line in metrics.splitlines() if line.startswith("xvla_bundle_info{")]
    assert len(info) == 1 and f'bundle_id="{canonical_id(daemon.config.bundle.path)}"' in info[0], info
    assert float(info[0].rsplit(" ", 1)[1]) == 1 and 'precision="fp32"' in info[0]
    timing = daemon.stats.timing  # what the metrics page was rendered from: same figures, same definition
    assert f"xvla_control_missed_deadlines_total {float(timing['missed_deadlines'])!r}" in metrics
    assert f"xvla_control_interval_error_max_seconds {timing['interval_error_max_all']!r}" in metrics
    histogram = daemon.stats.interval_histogram  # every tick interval of the loop process since start
    assert f"xvla_control_tick_interval_seconds_count {float(histogram['count'])!r}" in metrics
    assert histogram["count"] == timing["ticks"] - 1 > 0 and 'backend="onnxruntime"' in info[0]
    trace, timing = daemon.loop.trace(), daemon.loop.timing()
    summary = daemon.summary(timing=timing["timing"])  # the demo's summary and plot: one window
    window = timing["interval_error"]
    assert len(window) == timing["timing"]["window"] > 0
    assert summary.interval_error_p99 == np.percentile(window, 99) and summary.interval_error_p50 == np.median(window)
    assert summary.missed_deadlines == timing["timing"]["missed_deadlines"]
    sent = ~np.isnan(trace["command"][:, 0])
    pos, t = trace["command"][sent, :3], trace["time"][sent]
    limits = daemon.config.loop_config().limits
    speed = np.linalg.norm(np.diff(pos, axis=0), axis=1) / (2 / daemon.config.control.rate_hz)
    assert speed.max() <= limits.max_linear_speed * (1 + 1e-9)  # per-step movement inside the envelope
    assert len(t) > 100
    snap = emu.call("snapshot")
    assert snap["nacks"] == [] and snap["seq_gaps"] == 0 and snap["faults"] == 0
    final = daemon.close()
    assert final.events["chunk_accepted"] >= 4
    assert emu.call("snapshot")["mode"] == "HOLDING"  # told to hold on the way out


def test_camera_stall_holds_and_no_chunk_acts_on_old_images(daemon, emu):
    assert drive(daemon, 20.0, until=lambda d: accepted(d) >= 2)
    camera = daemon.cameras[0]
    camera.stall()
    assert drive(daemon, 5.0, until=lambda d: d.stats.events.get("hold_requested", 0) >= 1)
    before = accepted(daemon)
    drive(daemon, 1.0)
    assert accepted(daemon) == before and daemon.stats.mode == "idle"
    status, body = get(daemon.health_url + "/healthz")
    assert status == 503 and any("camera" in r for r in json.loads(body)["reasons"]), body
    assert list((daemon.config.recorder.directory).glob("*camera*"))  # the fault dumped the recorder
    camera.resume()
    assert drive(daemon, 20.0, until=lambda d: accepted(d) > before)
    assert get(daemon.health_url + "/healthz")[0] == 200


def test_inference_stall_lets_the_chunk_run_out_and_hold(daemon):
    assert drive(daemon, 20.0, until=lambda d: accepted(d) >= 1)
    act, stalled = daemon.policy.act, threading.Event()

    def slow_act(obs, steps=None):
        stalled.wait(30.0)
        return act(obs, steps=steps)

    daemon.policy.act = slow_act
    try:
        assert drive(daemon, 10.0, until=lambda d: d.stats.mode == "holding")
        status, body = get(daemon.health_url + "/healthz")
        assert status == 503 and any("inference stalled" in r for r in json.loads(body)["reasons"]), body
    finally:
        stalled.set()
        daemon.policy.act = act
    assert drive(daemon, 20.0, until=lambda d: d.stats.mode == "tracking")


def test_serial_link_drop_stops_sending_then_reconnects(daemon, emu):
    assert drive(daemon, 20.0, until=lambda d: accepted(d) >= 1)
    emu.call("silence", on=True)
    assert drive(daemon, 10.0, until=lambda d: d.stats.mode == "link_lost")
    status, body = get(daemon.health_url + "/healthz")
    assert status == 503 and any("link_lost" in r for r in json.loads(body)["reasons"]), body
    emu.call("silence", on=False)
    assert drive(daemon, 20.0, until=lambda d: d.stats.mode in ("idle", "tracking") and accepted(d) >= 2)


def test_sigterm_holds_the_arm_and_exits_cleanly(tmp_path, bundle, emu):
    """The real command under a fake systemd: READY, watchdog pings from the loop, STOPPING, exit 0, arm held."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(60.0)
    config = write_config(tmp_path / "robot.toml", bundle, emu.port)
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="400000",
               PYTHONPATH=str(REPO), PYTHONPROFILEIMPORTTIME="1")  # the daemon and its loop process
    log = tmp_path / "out.log"  # a file, not a pipe: the import profile must not fill a pipe nobody reads yet
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "xvla_edge.cli", "run", "--config", str(config)], env=env,
                                stdout=sink, stderr=subprocess.STDOUT)
    try:
        messages = []
        while "READY=1" not in messages:
            messages.append(notify.recv(4096).decode())
        pings = 0
        while pings < 3:
            pings += notify.recv(4096).decode() == "WATCHDOG=1"
        time.sleep(1.0)  # let it run a chunk or two
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    notify.settimeout(1.0)
    rest = []
    try:
        while True:
            rest.append(notify.recv(4096).decode())
    except socket.timeout:
        pass
    out = log.read_bytes()
    assert proc.returncode == 0, out.decode()[-3000:]
    assert "STOPPING=1" in rest
    logs = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    assert any(entry.get("event") == "stopped" for entry in logs)
    assert [e["bundle_id"] for e in logs if e.get("event") == "ready"] == [canonical_id(bundle)]
    assert emu.call("snapshot")["mode"] == "HOLDING"
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in out.decode().splitlines()
                if line.startswith("import time:")}
    assert {"onnxruntime", "drivers"} <= imported  # the profile covers the run: ONNX Runtime and the loop
    assert imported.isdisjoint({"torch", "transformers", "onnx", "onnxscript", "safetensors"}), imported


@pytest.mark.subprocess
def test_invalid_config_is_refused_by_name(tmp_path, bundle):
    config = write_config(tmp_path / "robot.toml", bundle, "/dev/null")
    config.write_text(config.read_text().replace('driver = "xvla-serial"', 'driver = "xvla-seriall"'))
    proc = subprocess.run([sys.executable, "-m", "xvla_edge.cli", "run", "--config", str(config)],
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "[arm].driver" in proc.stderr and "xvla-seriall" in proc.stderr, proc.stderr
