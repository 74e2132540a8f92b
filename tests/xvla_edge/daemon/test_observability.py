"""Metrics (every series from the start, parsed back), the health server over real HTTP, JSON logs, the recorder's files, cameras."""

from __future__ import annotations

import io
import json
import logging
import platform
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from xvla_edge.daemon.cameras import CameraError, FolderCamera, SyntheticCamera
from xvla_edge.daemon.health import HealthError, HealthServer
from xvla_edge.daemon.logs import JsonFormatter
from drivers.control.control_loop import LoopStats
from drivers.system.realtime import PeriodStats
from drivers.control.safety import CLIP_KINDS, REJECT_KINDS
from xvla_edge.daemon.metrics import MODES, DaemonMetrics
from xvla_edge.daemon.recorder import Recorder, RecorderError
from xvla_edge.web.metrics import CONTENT_TYPE

JSON = {"Content-Type": "application/json"}


def samples(metrics: DaemonMetrics) -> dict:
    """{(sample name, sorted labels): value} parsed back from the exposition text by the client's parser."""
    text = metrics.render().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def loop_stats(mode: str, timer: PeriodStats, interventions: dict, events: dict) -> LoopStats:
    return LoopStats(mode=mode, scheduler="SCHED_OTHER", rate_hz=200.0, timing=timer.summary(),
                     interventions={"commands": 99, **interventions}, events=events, last_latency=None,
                     last_state=None, last_command=None, last_error="",
                     interval_histogram=timer.interval_histogram())


def test_every_series_is_there_from_the_start_at_zero():
    got = samples(DaemonMetrics(cameras=["cam0", "cam1"]))
    for name in ("xvla_chunks_total", "xvla_inference_errors_total", "xvla_control_missed_deadlines_total",
                 "xvla_control_overruns_total", "xvla_watchdog_holds_total", "xvla_chunk_latency_seconds_count",
                 "xvla_control_tick_interval_seconds_count"):
        assert got[(name, ())] == 0.0, name
    assert got[("xvla_backend_graph_fallback", ())] == 0.0
    for camera in ("cam0", "cam1"):
        assert got[("xvla_camera_stale_total", (("camera", camera),))] == 0.0
    for kind in REJECT_KINDS + CLIP_KINDS:
        assert got[("xvla_safety_interventions_total", (("kind", kind),))] == 0.0
    assert {labels[0][1] for (name, labels), v in got.items() if name == "xvla_mode" and v == 0.0} == set(MODES)
    build = [labels for name, labels in got if name == "xvla_build_info"]
    assert len(build) == 1 and dict(build[0])["python"] == platform.python_version()
    assert not any(name.endswith("_created") for name, _ in got)


def test_metrics_follow_the_supervisor_and_the_loop():
    metrics = DaemonMetrics(cameras=["cam0"])
    for latency in (0.03, 0.2, 0.2):
        metrics.chunk(latency)
    assert samples(metrics)[("xvla_backend_graph_fallback", ())] == 0.0
    metrics.chunk(0.2, graph_fallback=True)  # the backend's CUDA-graph capture failed: it runs without graphs
    assert samples(metrics)[("xvla_backend_graph_fallback", ())] == 1.0
    metrics.chunk(0.2, graph_fallback=False)
    metrics.camera_stale("cam0")
    metrics.inference_error()
    metrics.set_bundle(bundle_id="abc", embodiment="sim", domain=3, precision="fp16", backend="onnxruntime")
    timer = PeriodStats(0.005, window=100)
    wakes = np.cumsum([0.005] * 50 + [0.011] + [0.005] * 9)  # one tick late by more than a period
    for wake in wakes:
        timer.record(float(wake), 0.001, 0)
    metrics.observe_loop(loop_stats("tracking", timer, {"linear_speed": 4, "gripper_rate": 1},
                                    {"mode_holding": 2, "arm_targets_skipped": 3}))
    got = samples(metrics)
    assert got[("xvla_chunks_total", ())] == 5 and got[("xvla_inference_errors_total", ())] == 1
    assert got[("xvla_chunk_latency_seconds_bucket", (("le", "0.05"),))] == 1
    assert got[("xvla_chunk_latency_seconds_bucket", (("le", "0.25"),))] == 5
    assert got[("xvla_chunk_latency_seconds_sum", ())] == pytest.approx(0.83)
    assert got[("xvla_camera_stale_total", (("camera", "cam0"),))] == 1
    assert got[("xvla_safety_interventions_total", (("kind", "linear_speed"),))] == 4
    assert ("xvla_safety_interventions_total", (("kind", "commands"),)) not in got  # checked, not intervened
    assert got[("xvla_arm_link_total", (("kind", "targets_skipped"),))] == 3
    assert got[("xvla_watchdog_holds_total", ())] == 2
    assert got[("xvla_mode", (("mode", "tracking"),))] == 1 and got[("xvla_mode", (("mode", "idle"),))] == 0
    intervals = np.diff(wakes)  # the histogram against the wake-up times themselves
    assert got[("xvla_control_tick_interval_seconds_count", ())] == len(intervals)
    assert got[("xvla_control_tick_interval_seconds_sum", ())] == pytest.approx(intervals.sum())
    for (name, labels), value in got.items():
        if name == "xvla_control_tick_interval_seconds_bucket" and labels[0][1] != "+Inf":
            assert value == (intervals <= float(labels[0][1])).sum(), labels
    assert got[("xvla_control_tick_interval_seconds_bucket", (("le", "0.0051"),))] == len(intervals) - 1
    assert got[("xvla_control_interval_error_max_seconds", ())] == pytest.approx(0.006)
    info = [dict(labels) for name, labels in got if name == "xvla_bundle_info"]
    assert info == [{"bundle_id": "abc", "embodiment": "sim", "domain": "3", "precision": "fp16",
                     "backend": "onnxruntime"}]


@pytest.mark.server
def test_health_server_endpoints():
    state = {"health": ("ok", [])}
    metrics = DaemonMetrics()
    metrics.chunk(0.1)
    server = HealthServer("127.0.0.1", 0, lambda: state["health"], metrics.render, on_record=lambda: "/tmp/rec")
    url = f"http://127.0.0.1:{server.port}"
    try:
        with urllib.request.urlopen(url + "/healthz") as r:
            assert r.status == 200 and json.load(r) == {"status": "ok"}
        state["health"] = ("degraded", ["camera cam0 stale (1.00 s)"])
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url + "/healthz")
        assert info.value.code == 503 and json.load(info.value)["reasons"] == ["camera cam0 stale (1.00 s)"]
        with urllib.request.urlopen(url + "/metrics") as r:
            assert r.headers["Content-Type"] == CONTENT_TYPE and "xvla_chunks_total 1.0" in r.read().decode()
        with urllib.request.urlopen(urllib.request.Request(url + "/record", method="POST", headers=JSON)) as r:
            assert json.load(r) == {"path": "/tmp/rec"}
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url + "/nothing")
        assert info.value.code == 404
    finally:
        server.close()


@pytest.mark.server
def test_posts_need_the_token_when_there_is_one_and_a_busy_port_is_named():
    recorded = []
    server = HealthServer("127.0.0.1", 0, lambda: ("ok", []), lambda: b"", on_record=lambda: recorded.append(1) or "/r",
                          token="s3cret-0123456789ab")
    url = f"http://127.0.0.1:{server.port}"
    try:
        for header in ({}, {"Authorization": "Bearer wrong-0123456789abc"}, {"Authorization": "s3cret-0123456789ab"}):
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(urllib.request.Request(url + "/record", method="POST", headers={**header, **JSON}))
            assert info.value.code == 401 and info.value.headers["WWW-Authenticate"] == "Bearer"
        assert recorded == []  # nothing changed without the token
        request = urllib.request.Request(url + "/record", method="POST",
                                         headers={"Authorization": "Bearer s3cret-0123456789ab", **JSON})
        with urllib.request.urlopen(request) as r:
            assert json.load(r) == {"path": "/r"} and recorded == [1]
        with urllib.request.urlopen(url + "/healthz") as r:  # reading stays open
            assert r.status == 200
        with pytest.raises(HealthError, match=rf"\[health\] cannot listen on 127.0.0.1:{server.port}: .*\[health\].port"):
            HealthServer("127.0.0.1", server.port, lambda: ("ok", []), lambda: b"")
    finally:
        server.close()


def test_json_log_lines():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("xvla.test-json")
    logger.addHandler(handler)
    logger.setLevel("INFO")
    logger.info("chunk %d", 3, extra={"event": "chunk", "latency_s": 0.12})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed")
    first, second = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert first["msg"] == "chunk 3" and first["event"] == "chunk" and first["latency_s"] == 0.12
    assert first["level"] == "info" and first["ts"].endswith("+00:00")
    assert second["level"] == "error" and "RuntimeError: boom" in second["exc"]


def test_recorder_ring_dump_and_retention(tmp_path):
    rec = Recorder(2.0, tmp_path, bundle="b", max_dumps=2)
    rng = np.random.default_rng(0)
    images = {}
    for i in range(5):
        img = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
        images[i] = img
        rec.add_observation(float(i), [img, None, None], np.full(20, i, np.float32), "wave", 3)
        rec.add_chunk(float(i), np.full((30, 20), i, np.float32), 0.1 * i)
    rec.add_commands({"time": np.array([3.5, 4.0]), "mode": ["tracking", "holding"],
                      "command": np.ones((2, 8)), "measured": np.zeros((2, 8))})
    rec.add_commands({"time": np.array([4.0, 4.5]), "mode": ["holding", "idle"],
                      "command": np.ones((2, 8)), "measured": np.zeros((2, 8))})
    path = rec.dump("camera-stale")
    obs = np.load(path / "observations.npz")
    assert obs["time"].tolist() == [3.0, 4.0]  # more than 2 s before the newest entry (4.5): dropped
    np.testing.assert_array_equal(obs["image_0"][1], images[4])
    assert obs["view_mask"].tolist() == [[True, False, False]] * 2 and "image_1" not in obs
    np.testing.assert_array_equal(obs["proprio"][:, 0], [3, 4])
    assert np.load(path / "chunks.npz")["actions"].shape == (2, 30, 20)
    cmds = np.load(path / "commands.npz")
    assert cmds["time"].tolist() == [3.5, 4.0, 4.5] and cmds["mode"].tolist() == ["tracking", "holding", "idle"]
    meta = json.loads((path / "meta.json").read_text())
    assert meta["instruction"] == "wave" and meta["domain_id"] == 3 and meta["reason"] == "camera-stale"
    assert rec.dump("fault", now=1e9, force=False) is not None and rec.dump("fault", now=1e9 + 5, force=False) is None
    time.sleep(0.01)
    rec.dump("third")
    assert len([p for p in tmp_path.iterdir()]) == 2  # retention
    with pytest.raises(RecorderError, match="view 0 changed size"):
        rec.add_observation(5.0, [np.zeros((8, 8, 3), np.uint8)], np.zeros(20), "wave", 3)


def test_recorder_dump_is_atomic(tmp_path, monkeypatch):
    rec = Recorder(5.0, tmp_path)
    rec.add_observation(0.0, [np.zeros((2, 2, 3), np.uint8)], np.zeros(20), "wave", 3)
    real = np.savez

    def fail_on_commands(file, **arrays):
        if str(file).endswith("commands.npz"):
            raise OSError("disk full")
        real(file, **arrays)

    monkeypatch.setattr(np, "savez", fail_on_commands)
    with pytest.raises(RecorderError, match=rf"cannot write a recording into {tmp_path} \(\[recorder\].directory\): disk full"):
        rec.dump("x")
    assert list(tmp_path.iterdir()) == []


def until(predicate, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.002)
    return True


def test_synthetic_camera_latest_frame_wins_and_stalls():
    with SyntheticCamera("cam0", 32, 24, fps=100, max_age_s=0.1) as cam:
        assert until(lambda: cam.latest() is not None and cam.latest().index >= 10)
        frame = cam.latest()
        assert frame.image.shape == (24, 32, 3) and frame.image.dtype == np.uint8 and not cam.is_stale()
        cam.stall()
        time.sleep(0.05)
        stalled = cam.latest()
        time.sleep(0.2)
        assert cam.latest().index <= stalled.index + 1  # no frames while stalled (one may have been in flight)
        assert cam.is_stale()  # its newest frame is older than max_age_s: the daemon holds the arm
        cam.resume()
        assert until(lambda: cam.latest().index > stalled.index + 1) and until(lambda: not cam.is_stale())


def test_folder_camera_replays_in_order(tmp_path):
    for i, value in enumerate((10, 20, 30)):
        Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(tmp_path / f"{i:03d}.png")
    cam = FolderCamera("cam1", tmp_path, fps=1000, loop=False)
    assert [p.name for p in cam.files] == ["000.png", "001.png", "002.png"]
    with cam:
        time.sleep(0.1)
    assert cam.latest().image[0, 0, 0] == 30 and cam.latest().index == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(CameraError, match="no .png"):
        FolderCamera("cam2", tmp_path / "empty", fps=1, loop=True)
    with pytest.raises(CameraError, match="is not a directory"):
        FolderCamera("cam3", tmp_path / "missing", fps=1, loop=True)
