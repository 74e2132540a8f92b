"""Metrics text format, the health server over real HTTP, JSON logs, the recorder's files, cameras."""

from __future__ import annotations

import io
import json
import logging
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from xvla_edge.daemon.cameras import CameraError, FolderCamera, SyntheticCamera
from xvla_edge.daemon.health import HealthError, HealthServer
from xvla_edge.daemon.logs import JsonFormatter
from xvla_edge.daemon.metrics import Counter, Gauge, Histogram, Registry
from xvla_edge.daemon.recorder import Recorder, RecorderError


def test_prometheus_text_format():
    reg = Registry()
    c = reg.add(Counter("x_total", 'Things "counted".\nTwice.'))
    g = reg.add(Gauge("x_age_seconds", "Age."))
    h = reg.add(Histogram("x_latency_seconds", "Latency.", (0.1, 1.0)))
    c.inc(kind='a"b')
    c.inc(2, kind='a"b')
    g.set(0.25, camera="cam\\0")
    for v in (0.05, 0.5, 5.0):
        h.observe(v)
    with pytest.raises(ValueError):
        c.inc(-1)
    assert reg.render().splitlines() == [
        '# HELP x_total Things "counted".\\nTwice.', "# TYPE x_total counter", 'x_total{kind="a\\"b"} 3.0',
        "# HELP x_age_seconds Age.", "# TYPE x_age_seconds gauge", 'x_age_seconds{camera="cam\\\\0"} 0.25',
        "# HELP x_latency_seconds Latency.", "# TYPE x_latency_seconds histogram",
        'x_latency_seconds_bucket{le="0.1"} 1', 'x_latency_seconds_bucket{le="1.0"} 2',
        'x_latency_seconds_bucket{le="+Inf"} 3', "x_latency_seconds_sum 5.55", "x_latency_seconds_count 3",
    ]


def test_health_server_endpoints():
    state = {"health": ("ok", [])}
    reg = Registry()
    reg.add(Counter("y_total", "Y.")).inc()
    server = HealthServer("127.0.0.1", 0, lambda: state["health"], reg, on_record=lambda: "/tmp/rec")
    url = f"http://127.0.0.1:{server.port}"
    try:
        with urllib.request.urlopen(url + "/healthz") as r:
            assert r.status == 200 and json.load(r) == {"status": "ok"}
        state["health"] = ("degraded", ["camera cam0 stale (1.00 s)"])
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url + "/healthz")
        assert info.value.code == 503 and json.load(info.value)["reasons"] == ["camera cam0 stale (1.00 s)"]
        with urllib.request.urlopen(url + "/metrics") as r:
            assert "version=0.0.4" in r.headers["Content-Type"] and "y_total 1.0" in r.read().decode()
        with urllib.request.urlopen(urllib.request.Request(url + "/record", method="POST")) as r:
            assert json.load(r) == {"path": "/tmp/rec"}
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url + "/nothing")
        assert info.value.code == 404
    finally:
        server.close()


def test_posts_need_the_token_when_there_is_one_and_a_busy_port_is_named():
    recorded = []
    server = HealthServer("127.0.0.1", 0, lambda: ("ok", []), Registry(), on_record=lambda: recorded.append(1) or "/r",
                          token="s3cret-0123456789ab")
    url = f"http://127.0.0.1:{server.port}"
    try:
        for header in ({}, {"Authorization": "Bearer wrong-0123456789abc"}, {"Authorization": "s3cret-0123456789ab"}):
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(urllib.request.Request(url + "/record", method="POST", headers=header))
            assert info.value.code == 401 and info.value.headers["WWW-Authenticate"] == "Bearer"
        assert recorded == []  # nothing changed without the token
        request = urllib.request.Request(url + "/record", method="POST",
                                         headers={"Authorization": "Bearer s3cret-0123456789ab"})
        with urllib.request.urlopen(request) as r:
            assert json.load(r) == {"path": "/r"} and recorded == [1]
        with urllib.request.urlopen(url + "/healthz") as r:  # reading stays open
            assert r.status == 200
        with pytest.raises(HealthError, match=rf"\[health\] cannot listen on 127.0.0.1:{server.port}: .*\[health\].port"):
            HealthServer("127.0.0.1", server.port, lambda: ("ok", []), Registry())
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
    with pytest.raises(OSError):
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
