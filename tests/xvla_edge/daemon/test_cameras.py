"""Camera sources: the newest frame wins, stalls make frames age, folder replay, clear errors, OpenCV paths.

OpenCV is optional: its code paths run against a scripted stand-in for ``cv2`` (what the cameras ask of
it and do with its frames), and against the real one on a video file when it is installed.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xvla_edge.daemon import cameras
from xvla_edge.daemon.cameras import (
    CameraError,
    FolderCamera,
    Frame,
    GStreamerCamera,
    SyntheticCamera,
    V4L2Camera,
    VideoCamera,
    frame_age,
    open_camera,
)
from xvla_edge.daemon.config import CameraSection


def until(predicate, timeout: float = 2.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.002)
    return predicate()


def capture_threads(name: str) -> list:
    return [t for t in threading.enumerate() if t.name == f"camera-{name}"]


def test_a_slow_consumer_gets_the_newest_frame_not_a_queue():
    with SyntheticCamera("fast", 32, 24, fps=200) as cam:
        assert until(lambda: cam.latest() is not None, timeout=10)
        seen, read_at = [cam.latest()], [time.monotonic()]
        for _ in range(3):  # a slow consumer: at least 3 frames are made between its reads
            assert until(lambda: cam.latest().index >= seen[-1].index + 3, timeout=10)
            seen.append(cam.latest())
            read_at.append(time.monotonic())
        # the newest, not the oldest queued: when frame k was read no later frame existed yet, so every frame
        # from k + 2 on (k + 1 may have been stamped just before that read) was captured after it
        assert all(frame.timestamp > t for frame, t in zip(seen[1:], read_at))
        assert all(b.index - a.index >= 3 for a, b in zip(seen, seen[1:]))  # frames in between were dropped
        frame = seen[-1]
        assert frame.image.shape == (24, 32, 3) and frame.image.dtype == np.uint8
        assert np.array_equal(frame.image, cam.render(frame.index))  # deterministic in the index
        assert not np.array_equal(cam.render(0), cam.render(1))  # and moving


def test_a_stall_makes_the_frame_age_until_it_is_stale():
    with SyntheticCamera("stally", 16, 8, fps=200, max_age_s=0.05) as cam:
        assert until(lambda: cam.latest() is not None and not cam.is_stale())
        cam.stall()
        time.sleep(0.01)  # a grab in flight may still land
        stalled = cam.latest()
        assert until(cam.is_stale)
        assert cam.latest() is stalled and frame_age(stalled, time.monotonic()) > 0.05
        cam.resume()
        assert until(lambda: not cam.is_stale() and cam.latest().index > stalled.index)
        cam.stall(0.1)  # a timed stall ends by itself
        assert until(cam.is_stale) and until(lambda: not cam.is_stale())
        assert cam.read_failures == 0  # a stall is no read failure: the source just delivers nothing


def test_frame_age():
    assert frame_age(None, 5.0) == math.inf
    assert frame_age(Frame(np.zeros((1, 1, 3), np.uint8), 4.0, 0), 5.5) == 1.5


def test_stop_joins_the_thread_and_a_camera_can_start_again():
    cam = SyntheticCamera("joins", 8, 8, fps=500).start()
    assert until(lambda: cam.latest() is not None) and len(capture_threads("joins")) == 1
    cam.stop()
    assert capture_threads("joins") == []
    last = cam.latest()
    time.sleep(0.01)
    assert cam.latest() is last  # nothing captures any more
    with cam:
        assert until(lambda: cam.latest().index > last.index)
    assert capture_threads("joins") == []
    cam.stop()  # stopping a stopped camera is harmless


def write_images(folder: Path, names_values: dict) -> None:
    folder.mkdir(exist_ok=True)
    for name, value in names_values.items():
        Image.fromarray(np.full((4, 6, 3), value, np.uint8)).save(folder / name)


def test_folder_replays_in_natural_name_order_and_loops(tmp_path):
    write_images(tmp_path, {"f10.png": 30, "f2.jpg": 20, "f1.png": 10})  # jpg: value approximately kept
    (tmp_path / "notes.txt").write_text("not an image")
    cam = FolderCamera("replay", tmp_path, fps=250, loop=True)
    assert [p.name for p in cam.files] == ["f1.png", "f2.jpg", "f10.png"]
    frames = []
    with cam:
        while until(lambda: cam.latest() is not None) and len(frames) < 200 and cam.latest().index < 7:
            frames.append(cam.latest())
            time.sleep(0.001)
    assert frames[-1].index >= 6  # went round twice
    for frame in frames:
        assert frame.image.shape == (4, 6, 3)
        assert abs(int(frame.image[0, 0, 0]) - (10, 20, 30)[frame.index % 3]) <= 2


def test_folder_without_loop_stops_at_the_end_and_goes_stale(tmp_path):
    write_images(tmp_path, {"a.png": 1, "b.png": 2, "c.png": 3})
    with FolderCamera("once", tmp_path, fps=500, loop=False, max_age_s=0.05) as cam:
        assert until(lambda: cam.latest() is not None and cam.latest().index == 2)
        assert cam.latest().image[0, 0, 0] == 3
        assert until(cam.is_stale) and cam.latest().index == 2 and cam.read_failures == 0


def test_folder_errors_are_clear(tmp_path):
    with pytest.raises(CameraError, match="camera c: .*missing is not a directory"):
        FolderCamera("c", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(CameraError, match=r"no \.png/\.jpg/.* images in .*empty"):
        FolderCamera("c", tmp_path / "empty")
    write_images(tmp_path / "bad", {"a.png": 1})
    (tmp_path / "bad" / "b.png").write_bytes(b"not a png at all")
    with pytest.raises(CameraError, match=r"cannot read image .*b\.png"):
        FolderCamera("c", tmp_path / "bad")


def test_a_truncated_image_is_a_counted_read_failure_and_replay_goes_on(tmp_path):
    write_images(tmp_path, {"a.png": 7})
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "b.png")
    data = (tmp_path / "b.png").read_bytes()
    (tmp_path / "b.png").write_bytes(data[: len(data) // 2])  # a valid header, half the pixels
    with FolderCamera("trunc", tmp_path, fps=500, loop=True) as cam:
        assert until(lambda: cam.read_failures >= 2 and cam.latest() is not None and cam.latest().index >= 2)
    assert "b.png" in cam.last_error and cam.latest().image[0, 0, 0] == 7


def test_open_camera_from_config_sections(tmp_path):
    write_images(tmp_path, {"a.png": 1})
    synthetic = open_camera(CameraSection(slot=1, source="synthetic", width=20, height=10, fps=100, max_age_s=0.2))
    folder = open_camera(CameraSection(slot=0, source="folder", path=tmp_path, fps=50, loop=False))
    assert isinstance(synthetic, SyntheticCamera) and isinstance(folder, FolderCamera)
    assert (synthetic.name, synthetic.max_age_s, folder.name, folder.loop) == ("cam1", 0.2, "cam0", False)
    assert synthetic.is_stale()  # no frame yet
    with synthetic:
        assert until(lambda: not synthetic.is_stale())
        assert synthetic.latest().image.shape == (10, 20, 3)


# -- OpenCV -----------------------------------------------------------------------------------------------


class FakeCapture:
    """A scripted ``cv2.VideoCapture``: ``script`` holds what each read returns (a BGR image, or None for a
    failed read), the last entry for ever; each read takes a millisecond, like a device delivering."""

    opened = True
    script: list = []
    made: list = []

    def __init__(self, source, api=0):
        self.source, self.api, self.props, self.released = source, api, {}, False
        FakeCapture.made.append(self)

    def isOpened(self):
        return FakeCapture.opened

    def set(self, prop, value):
        self.props[prop] = value
        return True

    def read(self):
        time.sleep(0.001)
        image = FakeCapture.script.pop(0) if len(FakeCapture.script) > 1 else FakeCapture.script[0]
        return image is not None, image

    def release(self):
        self.released = True


@pytest.fixture
def fake_cv2(monkeypatch):
    cv2 = types.SimpleNamespace(
        __version__="4.fake", CAP_V4L2=200, CAP_GSTREAMER=1800, CAP_PROP_FRAME_WIDTH=3, CAP_PROP_FRAME_HEIGHT=4,
        CAP_PROP_FPS=5, CAP_PROP_BUFFERSIZE=38, CAP_PROP_POS_FRAMES=1, COLOR_BGR2RGB=4, VideoCapture=FakeCapture,
        cvtColor=lambda image, code: image[..., ::-1].copy(),
        getBuildInformation=lambda: "  Video I/O:\n    GStreamer:                   YES (1.20.3)\n")
    monkeypatch.setitem(sys.modules, "cv2", cv2)
    monkeypatch.setattr(FakeCapture, "opened", True)
    monkeypatch.setattr(FakeCapture, "script", [])
    monkeypatch.setattr(FakeCapture, "made", [])
    monkeypatch.setattr(cameras, "RETRY_S", 0.001)
    return cv2


def bgr(b: int, g: int, r: int) -> np.ndarray:
    return np.broadcast_to(np.array([b, g, r], np.uint8), (2, 3, 3)).copy()


def test_v4l2_asks_for_size_rate_and_one_buffer_and_converts_bgr_to_rgb(fake_cv2):
    FakeCapture.script = [bgr(1, 2, 3)]
    with V4L2Camera("usb", "2", 320, 240, 15) as cam:
        assert until(lambda: cam.latest() is not None)
        assert cam.latest().image[0, 0].tolist() == [3, 2, 1]
    cap = FakeCapture.made[0]
    assert (cap.source, cap.api) == (2, fake_cv2.CAP_V4L2)  # an index given as text is an index
    assert cap.props == {3: 320, 4: 240, 5: 15, 38: 1} and cap.released


def test_v4l2_device_paths_and_links_open_by_index(fake_cv2, tmp_path):
    (tmp_path / "usb-cam-video-index0").symlink_to("/dev/video5")  # like /dev/v4l/by-id/...
    FakeCapture.script = [bgr(1, 2, 3)]
    for device in ("/dev/video4", str(tmp_path / "usb-cam-video-index0"), str(tmp_path / "not-a-video-link")):
        V4L2Camera("usb", device).start().stop()
    assert [cap.source for cap in FakeCapture.made] == [4, 5, str(tmp_path / "not-a-video-link")]


def test_failed_reads_are_counted_and_a_dead_device_is_opened_again(fake_cv2):
    FakeCapture.script = [bgr(0, 0, 9)] + [None] * cameras.REOPEN_AFTER + [bgr(0, 0, 7)]
    with V4L2Camera("flaky", "/dev/video0", max_age_s=1.0) as cam:
        assert until(lambda: cam.latest() is not None and cam.latest().image[0, 0, 0] == 7)
    assert cam.read_failures == cameras.REOPEN_AFTER and "no frame from v4l2 source '/dev/video0'" in cam.last_error
    assert len(FakeCapture.made) == 2 and FakeCapture.made[0].released  # closed, then opened again


def test_a_device_that_cannot_be_opened_fails_at_start(fake_cv2):
    FakeCapture.opened = False
    cam = V4L2Camera("gone", "/dev/video9")
    with pytest.raises(CameraError, match="camera gone: OpenCV cannot open v4l2 source '/dev/video9'"):
        cam.start()
    assert capture_threads("gone") == [] and FakeCapture.made[0].released


def test_gstreamer_needs_an_opencv_built_with_it(fake_cv2, monkeypatch):
    pipeline = "videotestsrc ! videoconvert ! appsink drop=true max-buffers=1"
    FakeCapture.script = [bgr(5, 6, 7)]
    with GStreamerCamera("csi", pipeline) as cam:
        assert until(lambda: cam.latest() is not None)
    assert (FakeCapture.made[0].source, FakeCapture.made[0].api) == (pipeline, fake_cv2.CAP_GSTREAMER)
    monkeypatch.setattr(fake_cv2, "getBuildInformation", lambda: "    GStreamer:                   NO\n")
    with pytest.raises(CameraError, match="built without GStreamer"):
        GStreamerCamera("csi", pipeline)


def test_without_opencv_the_error_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` fail
    with pytest.raises(CameraError, match=r"camera cam0: source \"v4l2\" needs the 'cameras' extra — OpenCV .*"
                                          r"xvla-edge\[cameras\]"):
        open_camera(CameraSection(slot=0, source="v4l2", device=0))


def test_video_file_replay_with_real_opencv(tmp_path):
    cv2 = pytest.importorskip("cv2", reason="OpenCV is optional (xvla-edge[cameras])")
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 16))
    for value in (40, 120, 200):
        writer.write(np.full((16, 32, 3), (0, 0, value), np.uint8))  # BGR: red rising
    writer.release()
    with VideoCamera("clip", path, fps=200, loop=False) as cam:
        assert until(lambda: cam.latest() is not None and cam.latest().index == 2)
        time.sleep(0.02)
    frame = cam.latest()
    assert frame.index == 2 and frame.image.shape == (16, 32, 3)
    assert abs(int(frame.image[8, 16, 0]) - 200) < 12 and frame.image[8, 16, 2] < 12  # RGB
    with VideoCamera("clip", path, fps=200, loop=True) as cam:
        assert until(lambda: cam.latest() is not None and cam.latest().index >= 5)
    assert cam.read_failures == 0
    with pytest.raises(CameraError, match="does not exist"):
        VideoCamera("clip", tmp_path / "none.avi")
