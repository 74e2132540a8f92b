"""Camera frame sources for the daemon; the latest frame wins.

Each camera captures on its own daemon thread and keeps only its newest :class:`Frame` (no queue that
could feed the policy old images); :meth:`Camera.latest` never blocks. Staleness is the caller's check:
``now - frame.timestamp`` against the camera's ``max_age_s``.

Sources: ``synthetic`` (a moving test pattern; :meth:`SyntheticCamera.stall` injects a stall), ``folder``
(image files replayed in name order, Pillow), and through OpenCV (optional: ``pip install
opencv-python-headless``, or the JetPack build with GStreamer) ``v4l2`` (a /dev/videoN device or index),
``gstreamer`` (a pipeline ending in ``appsink``) and ``video`` (a file replayed).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

import numpy as np

from runtime.daemon.config import CameraSection

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


class CameraError(RuntimeError):
    """A camera cannot be opened or read."""


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # HxWx3 uint8 RGB
    timestamp: float  # time.monotonic() at capture
    index: int


class Camera:
    """Base: a capture thread calling :meth:`_grab` at ``fps``; subclasses open and read their device."""

    def __init__(self, name: str, fps: float) -> None:
        self.name, self.period = name, 1.0 / fps
        self.read_failures = 0
        self._frame: Optional[Frame] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._count = 0

    def start(self) -> None:
        if self._thread is None:
            self._open()
            self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
            self._thread.start()

    def latest(self) -> Optional[Frame]:
        return self._frame

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self._close()

    def __enter__(self) -> "Camera":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        deadline = time.monotonic()
        while not self._stop.is_set():
            image = self._grab()
            if image is None:
                self.read_failures += 1
            else:
                self._frame = Frame(image, time.monotonic(), self._count)
                self._count += 1
            deadline = max(deadline + self.period, time.monotonic())
            self._stop.wait(deadline - time.monotonic())

    def _open(self) -> None:
        pass

    def _grab(self) -> Optional[np.ndarray]:
        raise NotImplementedError

    def _close(self) -> None:
        pass


class SyntheticCamera(Camera):
    """A moving gradient pattern; deterministic in the frame index."""

    def __init__(self, name: str, width: int, height: int, fps: float) -> None:
        super().__init__(name, fps)
        y, x = np.mgrid[0:height, 0:width]
        self._base = ((x * 255 // max(width - 1, 1)) ^ (y * 255 // max(height - 1, 1))).astype(np.uint8)
        self._stalled = threading.Event()

    def stall(self) -> None:
        """Stop delivering frames (the newest one ages) until :meth:`resume`."""
        self._stalled.set()

    def resume(self) -> None:
        self._stalled.clear()

    def _grab(self) -> Optional[np.ndarray]:
        if self._stalled.is_set():
            return None
        shift = (self._count * 4) % 256
        return np.stack([self._base + shift, np.roll(self._base, self._count, axis=1), 255 - self._base], -1)


class FolderCamera(Camera):
    """Image files of ``folder`` in name order at ``fps``; from the start again when ``loop``."""

    def __init__(self, name: str, folder: Path, fps: float, loop: bool) -> None:
        super().__init__(name, fps)
        if not folder.is_dir():
            raise CameraError(f"camera {name}: {folder} is not a directory")
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise CameraError(f"camera {name}: no {'/'.join(IMAGE_SUFFIXES)} images in {folder}")
        self.loop = loop
        self._next = 0

    def _grab(self) -> Optional[np.ndarray]:
        from PIL import Image

        if self._next >= len(self.files):
            if not self.loop:
                return None
            self._next = 0
        path = self.files[self._next]
        self._next += 1
        try:
            with Image.open(path) as img:
                return np.asarray(img.convert("RGB"))
        except OSError:
            return None  # counted as a read failure; the frame ages


class OpenCVCamera(Camera):
    """V4L2 device, GStreamer pipeline or video file through ``cv2.VideoCapture`` (BGR converted to RGB)."""

    def __init__(self, name: str, source: Any, api: str, fps: float, width: int = 0, height: int = 0,
                 loop: bool = False) -> None:
        super().__init__(name, fps)
        self.source, self.api, self.size, self.loop = source, api, (width, height), loop
        self._cap: Any = None

    def _open(self) -> None:
        try:
            import cv2
        except ImportError as exc:
            raise CameraError(f"camera {self.name}: source needs OpenCV; pip install opencv-python-headless "
                              "(or the JetPack OpenCV with GStreamer)") from exc
        self._cv2 = cv2
        api = {"v4l2": cv2.CAP_V4L2, "gstreamer": cv2.CAP_GSTREAMER, "video": cv2.CAP_ANY}[self.api]
        source = int(self.source) if self.api == "v4l2" and str(self.source).isdigit() else self.source
        self._cap = cv2.VideoCapture(source, api)
        if not self._cap.isOpened():
            raise CameraError(f"camera {self.name}: OpenCV cannot open {self.api} source {self.source!r}")
        if self.api == "v4l2" and all(self.size):
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])

    def _grab(self) -> Optional[np.ndarray]:
        ok, bgr = self._cap.read()
        if not ok and self.loop and self.api == "video":
            self._cap.set(self._cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self._cap.read()
        return self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB) if ok else None

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()


def open_camera(section: CameraSection) -> Camera:
    """The camera a ``[[cameras]]`` entry describes (not started)."""
    s = section
    if s.source == "synthetic":
        return SyntheticCamera(s.name, s.width, s.height, s.fps)
    if s.source == "folder":
        return FolderCamera(s.name, s.path, s.fps, s.loop)  # type: ignore[arg-type]
    source: List[Any] = [{"v4l2": s.device, "gstreamer": s.pipeline, "video": str(s.path)}[s.source]]
    return OpenCVCamera(s.name, source[0], s.source, s.fps, s.width, s.height, s.loop)
