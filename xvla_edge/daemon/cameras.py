"""Camera frame sources for the daemon: each captures on its own thread, and the latest frame wins.

A :class:`Camera` keeps only its newest :class:`Frame` (no queue, so the policy never sees a backlog of
old images) and :meth:`Camera.latest` never blocks. A source that stops delivering is seen as its newest
frame getting old: :func:`frame_age` and :meth:`Camera.is_stale` (``max_age_s``); the daemon holds the arm
while any camera is stale. Failed reads are counted (``read_failures``, ``last_error``), never raised on
the capture thread.

Sources (``[[cameras]].source``): ``synthetic`` (a moving test pattern; :meth:`SyntheticCamera.stall`
injects a stall), ``folder`` (image files replayed in name order, with Pillow), and, through OpenCV
(optional: ``pip install "xvla-edge[cameras]"``, or JetPack's OpenCV, which has GStreamer), ``v4l2``,
``gstreamer`` and ``video``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Tuple, Union

import numpy as np

from xvla.errors import XVLAError
from xvla.extras import MissingDependency

if TYPE_CHECKING:
    from xvla_edge.daemon.config import CameraSection

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")
RETRY_S = 0.1  # wait after a failed read of a source that paces itself (no busy loop on a dead device)
REOPEN_AFTER = 10  # consecutive failed reads of a live OpenCV source before it is closed and opened again


class CameraError(XVLAError, RuntimeError):
    """A camera that cannot be opened: missing device, folder or file, no OpenCV, unreadable images."""


class OpenCVUnavailable(MissingDependency, CameraError):
    """A camera source needs OpenCV, which does not import here."""


@dataclass(frozen=True, eq=False)
class Frame:
    """One captured image: ``image`` HxWx3 uint8 RGB, ``timestamp`` ``time.monotonic()`` at capture,
    ``index`` the camera's frame count (0, 1, ...)."""

    image: np.ndarray
    timestamp: float
    index: int


def frame_age(frame: Optional[Frame], now: float) -> float:
    """Seconds since ``frame`` was captured (``now`` from ``time.monotonic()``); infinite without a frame."""
    return math.inf if frame is None else now - frame.timestamp


class Camera:
    """A frame source with its own daemon capture thread; use :meth:`start`/:meth:`stop` or ``with``.

    Subclasses implement :meth:`_grab` (the next image, ``None`` when there is none to give, raising on a
    failed read) and may implement :meth:`_open`/:meth:`_close`. With ``fps`` the thread paces the grabs;
    without, the source paces itself (a blocking read of a live device).
    """

    def __init__(self, name: str, *, fps: Optional[float] = None, max_age_s: float = math.inf) -> None:
        self.name = name
        self.max_age_s = max_age_s
        self.read_failures = 0
        self.last_error = ""
        self._period = None if fps is None else 1.0 / fps
        self._frame: Optional[Frame] = None
        self._count = 0
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> Camera:
        """Open the source (raising :class:`CameraError`) and start capturing; again after :meth:`stop`."""
        if self._thread is None:
            self._open()
            self._stopping = threading.Event()  # one per run: a stuck old thread stays told to stop
            self._thread = threading.Thread(target=self._run, args=(self._stopping,), name=f"camera-{self.name}",
                                            daemon=True)
            self._thread.start()
        return self

    def latest(self) -> Optional[Frame]:
        """The newest frame, or None before the first; never blocks."""
        return self._frame

    def is_stale(self, now: Optional[float] = None) -> bool:
        """True when the newest frame is older than ``max_age_s`` (or there is none yet)."""
        return frame_age(self._frame, time.monotonic() if now is None else now) > self.max_age_s

    def stop(self, timeout: float = 2.0) -> None:
        """Stop capturing, join the thread and close the source."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        thread.join(timeout)
        if thread.is_alive():  # stuck in a device read: closing under it is unsafe; the thread is a daemon
            log.warning("camera %s: capture thread did not stop within %g s", self.name, timeout)
            return
        self._close()

    def __enter__(self) -> Camera:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, stopping: threading.Event) -> None:
        due = time.monotonic()
        while not stopping.is_set():
            try:
                image = self._grab()
            except Exception as exc:  # noqa: BLE001 - any failed read is counted; the newest frame ages
                self.read_failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                image = None
            if image is not None:
                self._frame = Frame(image, time.monotonic(), self._count)
                self._count += 1
            if self._period is not None:
                due = max(due + self._period, time.monotonic())  # late: no burst to catch up
                stopping.wait(due - time.monotonic())
            elif image is None:
                stopping.wait(RETRY_S)

    def _open(self) -> None:
        """Open the device (on :meth:`start`); raise :class:`CameraError` when it cannot be."""

    def _grab(self) -> Optional[np.ndarray]:
        raise NotImplementedError

    def _close(self) -> None:
        """Release the device (after the thread stopped)."""


class SyntheticCamera(Camera):
    """A test pattern that moves with the frame index (deterministic: see :meth:`render`)."""

    def __init__(self, name: str = "synthetic", width: int = 640, height: int = 480, fps: float = 30.0, *,
                 max_age_s: float = math.inf) -> None:
        super().__init__(name, fps=fps, max_age_s=max_age_s)
        self.width, self.height = width, height
        self._stalled_until = 0.0

    def render(self, index: int) -> np.ndarray:
        """Frame ``index``: a horizontal red ramp scrolling right, a vertical green ramp, a blue bar."""
        x, y = np.arange(self.width), np.arange(self.height)
        image = np.empty((self.height, self.width, 3), np.uint8)
        image[..., 0] = ((x * 256 // self.width + 4 * index) % 256)[None, :]
        image[..., 1] = (y * 256 // self.height)[:, None]
        image[..., 2] = np.where((x - 2 * index) % self.width < max(self.width // 8, 1), 255, 0)[None, :]
        return image

    def stall(self, seconds: Optional[float] = None) -> None:
        """Deliver no frames for ``seconds`` (None: until :meth:`resume`), like a camera that hangs."""
        self._stalled_until = math.inf if seconds is None else time.monotonic() + seconds

    def resume(self) -> None:
        self._stalled_until = 0.0

    def _grab(self) -> Optional[np.ndarray]:
        if time.monotonic() < self._stalled_until:
            return None
        return self.render(self._count)


def _natural_key(path: Path) -> Tuple[Any, ...]:
    """Sort key putting ``f2.png`` before ``f10.png``."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name))


class FolderCamera(Camera):
    """The image files of ``folder`` (:data:`IMAGE_SUFFIXES`) in natural name order at ``fps``; from the
    start again at the end when ``loop``, else no more frames (the camera goes stale)."""

    def __init__(self, name: str, folder: Union[str, Path], fps: float = 30.0, loop: bool = True, *,
                 max_age_s: float = math.inf) -> None:
        from PIL import Image

        super().__init__(name, fps=fps, max_age_s=max_age_s)
        folder = Path(folder)
        if not folder.is_dir():
            raise CameraError(f"camera {name}: {folder} is not a directory")
        files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                       key=_natural_key)
        if not files:
            raise CameraError(f"camera {name}: no {'/'.join(IMAGE_SUFFIXES)} images in {folder}")
        for path in files:  # headers only: fails fast on files that are not images at all
            try:
                with Image.open(path):
                    pass
            except OSError as exc:
                raise CameraError(f"camera {name}: cannot read image {path}: {exc}") from exc
        self.files: Tuple[Path, ...] = tuple(files)
        self.loop = loop
        self._next = 0

    def _grab(self) -> Optional[np.ndarray]:
        from PIL import Image

        if self._next == len(self.files):
            if not self.loop:
                return None
            self._next = 0
        path = self.files[self._next]
        self._next += 1
        try:
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"))
        except OSError as exc:  # e.g. truncated after a valid header
            raise CameraError(f"cannot read image {path}: {exc}") from exc


def _import_cv2(name: str, source: str) -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise OpenCVUnavailable.of("cameras", exc, needed_by=f'camera {name}: source "{source}"') from exc
    return cv2


class OpenCVCamera(Camera):
    """A ``cv2.VideoCapture`` source (frames converted from BGR to RGB). A live one (``fps`` None: V4L2,
    GStreamer) is read as fast as it delivers, and closed and opened again after :data:`REOPEN_AFTER`
    failed reads in a row (an unplugged USB camera comes back)."""

    source = ""  # the config's name for it, in messages

    def __init__(self, name: str, *, fps: Optional[float] = None, max_age_s: float = math.inf) -> None:
        super().__init__(name, fps=fps, max_age_s=max_age_s)
        self.cv2 = _import_cv2(name, self.source)
        self._cap: Any = None
        self._failed_in_row = 0

    def _capture(self) -> Any:
        """A new ``cv2.VideoCapture`` for the source (set up, maybe not opened)."""
        raise NotImplementedError

    def _open(self) -> None:
        cap = self._capture()
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"camera {self.name}: OpenCV cannot open {self.source} source {self.describe()}")
        self._cap = cap

    def describe(self) -> str:
        raise NotImplementedError

    def _grab(self) -> Optional[np.ndarray]:
        if self._cap is None:
            self._open()
        ok, bgr = self._cap.read()
        if ok and bgr is not None:
            self._failed_in_row = 0
            return self.cv2.cvtColor(bgr, self.cv2.COLOR_BGR2RGB)
        self._failed_in_row += 1
        if self._failed_in_row >= REOPEN_AFTER:
            self._failed_in_row = 0
            self._close()
        raise CameraError(f"no frame from {self.source} source {self.describe()}")

    def _close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


class V4L2Camera(OpenCVCamera):
    """A V4L2 device, asked for ``width`` x ``height`` at ``fps`` with a one-frame driver buffer (so a
    read gives a fresh frame, not a queued one). ``device``: an index N, ``/dev/videoN``, or a link to one
    such as ``/dev/v4l/by-id/...`` (stable across replugging; resolved at each open)."""

    source = "v4l2"

    def __init__(self, name: str, device: Union[int, str], width: int = 640, height: int = 480,
                 fps: float = 30.0, *, max_age_s: float = math.inf) -> None:
        super().__init__(name, max_age_s=max_age_s)
        self.device = int(device) if isinstance(device, str) and device.isdigit() else device
        self.size, self.fps = (width, height), fps

    def describe(self) -> str:
        return repr(self.device)

    def _capture(self) -> Any:
        cv2 = self.cv2
        device = self.device
        if isinstance(device, str):  # OpenCV opens V4L2 devices by index reliably, not always by name
            match = re.fullmatch(r"/dev/video(\d+)", os.path.realpath(device))
            device = int(match.group(1)) if match else device
        cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, self.size[0]), (cv2.CAP_PROP_FRAME_HEIGHT, self.size[1]),
                            (cv2.CAP_PROP_FPS, self.fps), (cv2.CAP_PROP_BUFFERSIZE, 1)):
            cap.set(prop, value)
        return cap


class GStreamerCamera(OpenCVCamera):
    """A GStreamer pipeline ending in ``appsink`` (``drop=true max-buffers=1`` keeps only the newest)."""

    source = "gstreamer"

    def __init__(self, name: str, pipeline: str, *, max_age_s: float = math.inf) -> None:
        super().__init__(name, max_age_s=max_age_s)
        info = re.search(r"GStreamer:\s*(\w+)", self.cv2.getBuildInformation())
        if not (info and info.group(1).upper() == "YES"):
            raise CameraError(f"camera {name}: this OpenCV ({self.cv2.__version__}) was built without GStreamer "
                              "(pip's opencv wheels are); on Jetson use JetPack's OpenCV")
        self.pipeline = pipeline

    def describe(self) -> str:
        return repr(self.pipeline)

    def _capture(self) -> Any:
        return self.cv2.VideoCapture(self.pipeline, self.cv2.CAP_GSTREAMER)


class VideoCamera(OpenCVCamera):
    """A video file replayed at ``fps``; from the start again at the end when ``loop``."""

    source = "video"

    def __init__(self, name: str, path: Union[str, Path], fps: float = 30.0, loop: bool = True, *,
                 max_age_s: float = math.inf) -> None:
        super().__init__(name, fps=fps, max_age_s=max_age_s)
        self.path, self.loop = Path(path), loop
        if not self.path.is_file():
            raise CameraError(f"camera {name}: video file {self.path} does not exist")
        self._ended = False

    def describe(self) -> str:
        return str(self.path)

    def _capture(self) -> Any:
        return self.cv2.VideoCapture(str(self.path))

    def _open(self) -> None:
        super()._open()
        self._ended = False

    def _grab(self) -> Optional[np.ndarray]:
        if self._ended:
            return None
        ok, bgr = self._cap.read()
        if not ok and self.loop:
            self._cap.set(self.cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self._cap.read()
        if not ok:
            self._ended = not self.loop  # the end of the file (or an unreadable one when looping: counted)
            if self._ended:
                return None
            raise CameraError(f"no frame from video {self.path}, even from its start")
        return self.cv2.cvtColor(bgr, self.cv2.COLOR_BGR2RGB)


def open_camera(section: CameraSection) -> Camera:
    """The (not yet started) camera of a ``[[cameras]]`` entry; :class:`CameraError` when it cannot be."""
    s, name, max_age_s = section, section.name, section.max_age_s
    if s.source == "synthetic":
        return SyntheticCamera(name, s.width, s.height, s.fps, max_age_s=max_age_s)
    if s.source == "folder":
        return FolderCamera(name, s.path, s.fps, s.loop, max_age_s=max_age_s)  # type: ignore[arg-type]
    if s.source == "v4l2":
        return V4L2Camera(name, s.device, s.width, s.height, s.fps, max_age_s=max_age_s)  # type: ignore[arg-type]
    if s.source == "gstreamer":
        return GStreamerCamera(name, s.pipeline, max_age_s=max_age_s)  # type: ignore[arg-type]
    if s.source == "video":
        return VideoCamera(name, s.path, s.fps, s.loop, max_age_s=max_age_s)  # type: ignore[arg-type]
    raise CameraError(f"camera {s.name}: unknown source {s.source!r}")
