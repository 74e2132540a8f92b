"""``robot.toml``: the daemon's configuration, read and validated once at start.

Every problem is reported (with the project's validation kit, :mod:`xvla.validation`), all together, one per
line, naming the file, the key path, the value and what is allowed, e.g. ``robot.toml: [arm].driver =
"dynamixl": expected one of "sim", "xvla-serial", "dynamixel", "feetech", "piper"``. Unknown keys are errors too (with a "did you mean" when one is close). ``[arm]`` is read
from the driver's entry in :mod:`drivers.registry` (its keys, spaces and checks). Values that the drivers
check themselves (:class:`~drivers.control.control_loop.LoopConfig`, :class:`~drivers.control.safety.SafetyLimits`,
:class:`~drivers.control.splice.SplicePolicy`, :class:`~drivers.control.interpolation.GripperPolicy`, the arm driver's
constructor) are checked by building those objects here, and their refusals are reported by key the same
way. Every number has a finite range, so that nothing the loop, the drivers and the cameras derive from
it (blend samples, delays, buffer sizes) can exhaust the robot. Relative paths are relative to the config
file. The same validation makes a configuration from a mapping built in code (:meth:`RobotConfig.from_dict`:
the TOML file's data, without the file). Before parsing, a file larger than :data:`MAX_CONFIG_BYTES` is refused, and so is one with a line of
more than :data:`MAX_DOTS_PER_LINE` dots (the TOML parser's time and memory grow with the square of a
dotted key's depth). Every key, its default, unit and allowed values: ``xvla_edge/daemon/robot.example.toml``;
``xvla-edge config check FILE`` validates without running.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (JetPack 6)
    import tomli as tomllib  # type: ignore[no-redef]

from drivers import registry
from drivers.arm import ArmConfigError, ArmFactory, Box, JointLimit
from drivers.control.control_loop import LoopConfig
from drivers.control.interpolation import GripperPolicy
from drivers.control.safety import SafetyLimits
from drivers.control.splice import SplicePolicy
from drivers.physical_ranges import MAX_ARMS, MAX_JOINTS
from runtime.backends import names
from xvla.constants import MAX_IMAGE_SIDE, MAX_STEPS
from xvla.errors import ConfigError, InputError
from xvla.instruction import check_instruction
from xvla.validation import Problems, Table, show
from xvla_edge.daemon.chunking import CHUNKING, DEFAULT_CHUNKING, splice_mode
from xvla_edge.web.auth import MIN_TOKEN_CHARS, TokenError, is_loopback, read_token_file, token_required

LEVELS = ("debug", "info", "warning", "error")
MAX_CAMERAS = 3
MAX_FRAME_AGE_S = 5.0  # [[cameras]].max_age_s: a frame older than this says nothing about the arm's present
MAX_VIDEO_INDEX = 255  # [[cameras]].device as an index: /dev/video0 ... /dev/video255
MAX_CONFIG_BYTES = 256 * 1024  # the example, every key shown and explained, is about 10 KiB
MAX_DOTS_PER_LINE = 128  # a dotted key's depth bound (joint_limits for 32 joints on one line have 96 dots)
MAX_PATH_BYTES = 4096  # PATH_MAX
# Per camera source: the keys it takes besides ``slot``, ``source`` and ``max_age_s``; the first is required
# for every source but ``synthetic``.
CAMERA_KEYS: Dict[str, Tuple[str, ...]] = {
    "synthetic": ("width", "height", "fps"),
    "v4l2": ("device", "width", "height", "fps"),
    "gstreamer": ("pipeline",),
    "folder": ("path", "fps", "loop"),
    "video": ("path", "fps", "loop"),
}
_CONTROL_KEYS = ("rate_hz", "realtime_priority", "cpu", "max_trajectory_lag")  # LoopConfig fields set here


class ConfigFileError(ConfigError):
    """The config file cannot be read at all (missing, a directory, not permitted, larger than
    :data:`MAX_CONFIG_BYTES`, not UTF-8 text)."""


@dataclass(frozen=True)
class BundleSection:
    """``[bundle]``: which exported bundle to run, and how. ``steps``: denoising steps (None: the manifest's)."""

    path: Path
    backend: str = "auto"
    device: str = "cpu"
    steps: Optional[int] = None


@dataclass(frozen=True)
class RemoteSection:
    """``[policy]``: a policy served by another machine (``xvla-edge serve``), instead of a local ``[bundle]``.
    ``timeout_s``: longest wait for a chunk before the daemon holds and reconnects."""

    url: str
    domain_id: Optional[int] = None
    token: Optional[str] = None
    timeout_s: float = 1.0
    connect_timeout_s: float = 2.0
    steps: Optional[int] = None


@dataclass(frozen=True)
class CameraSection:
    """One ``[[cameras]]`` entry. ``slot``: the policy's view (0 is the main view). Only the keys of its
    ``source`` (see :data:`CAMERA_KEYS`) are set; the others keep their defaults. ``device``: a
    /dev/videoN path or an index. A newest frame older than ``max_age_s`` seconds is stale."""

    slot: int
    source: str
    device: Union[int, str, None] = None
    pipeline: Optional[str] = None
    path: Optional[Path] = None
    width: int = 640
    height: int = 480
    fps: float = 30.0
    max_age_s: float = 0.5
    loop: bool = True

    @property
    def name(self) -> str:
        """The camera's name in logs, metrics and health reasons."""
        return f"cam{self.slot}"


@dataclass(frozen=True)
class ArmSection:
    """``[arm]``: the driver (an entry of :mod:`drivers.registry`), its target space and the values of its
    other keys (``options``: key → value, None when not given and without default, e.g. ``timeout_ms`` for
    the driver's default deadman; a sub-table such as ``[arm.sim]`` as a mapping of its own)."""

    driver: str
    space: str = "ee"
    options: Mapping[str, Any] = field(default_factory=dict)


_LOOP = LoopConfig()


@dataclass(frozen=True)
class ControlSection:
    """``[control]``: the control loop's process (see :class:`~drivers.control.control_loop.LoopConfig`)."""

    rate_hz: float = _LOOP.rate_hz
    realtime_priority: int = _LOOP.realtime_priority
    cpu: Optional[int] = _LOOP.cpu
    max_trajectory_lag: float = _LOOP.max_trajectory_lag


@dataclass(frozen=True)
class InferenceSection:
    """``[inference]``: the next chunk starts when the executing one has ``start_fraction`` of its span
    left; a chunk taking longer than ``max_latency_s`` seconds marks health degraded; ``chunking``: how the next
    chunk takes over (:mod:`xvla_edge.daemon.chunking`: ``"rtc"``, ``"blend"`` or ``"replace"``; it sets the
    splice's mode)."""

    start_fraction: float = 0.5
    max_latency_s: float = 1.0
    chunking: str = DEFAULT_CHUNKING


@dataclass(frozen=True)
class HealthSection:
    """``[health]``: the HTTP endpoint (/healthz, /metrics, POST /record); ``port`` 0 turns it off. ``token``
    (read from ``token_file``): the bearer token POST requests must carry; required beyond loopback."""

    host: str = "127.0.0.1"
    port: int = 8765
    token: Optional[str] = None


@dataclass(frozen=True)
class OperatorSection:
    """``[operator]``: the control socket of ``xvla-edge ctl`` (None: off), the group allowed to use it, and
    whether an episode starts with the daemon (else it waits for ``ctl start``)."""

    socket: Optional[Path] = None
    socket_group: Optional[str] = None
    autostart: bool = True


@dataclass(frozen=True)
class LoggingSection:
    level: str = "info"


@dataclass(frozen=True)
class RecorderSection:
    """``[recorder]``: keep the last ``seconds``; dump to ``directory`` on request, and on faults if ``on_fault``."""

    seconds: float = 30.0
    directory: Path = Path("recordings")
    on_fault: bool = True


@dataclass(frozen=True)
class RobotConfig:
    """A validated ``robot.toml`` (``file``: where it was read from, or the file it stands for)."""

    file: Path
    instruction: str
    bundle: Optional[BundleSection]  # exactly one of bundle and remote
    cameras: Tuple[CameraSection, ...]
    arm: ArmSection
    control: ControlSection = ControlSection()
    safety: SafetyLimits = SafetyLimits()
    splice: SplicePolicy = SplicePolicy()
    gripper: GripperPolicy = GripperPolicy()
    inference: InferenceSection = InferenceSection()
    health: HealthSection = HealthSection()
    logging: LoggingSection = LoggingSection()
    recorder: RecorderSection = RecorderSection()
    remote: Optional[RemoteSection] = None
    operator: OperatorSection = OperatorSection()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], file: Union[str, Path]) -> RobotConfig:
        """Validate ``data`` (a ``robot.toml``'s tables and keys as a mapping; TOML's types: strings for paths,
        a list of tables for ``cameras``). ``file`` names the configuration in messages, and relative paths are
        taken relative to its folder. Raises :class:`ConfigError` listing every problem."""
        return _validated(data, Path(file))

    @property
    def source(self) -> str:
        """Where the policy comes from: the bundle's path or the server's URL."""
        return str(self.bundle.path) if self.bundle is not None else self.remote.url  # type: ignore[union-attr]

    @property
    def steps(self) -> Optional[int]:
        return (self.bundle or self.remote).steps  # type: ignore[union-attr]

    def loop_config(self) -> LoopConfig:
        """The control loop's settings: ``[control]``, ``[safety]``, ``[splice]`` (its mode that of
        ``[inference].chunking``) and ``[gripper]``."""
        c = self.control
        return LoopConfig(rate_hz=c.rate_hz, limits=self.safety, splice=self.splice, gripper=self.gripper,
                          realtime_priority=c.realtime_priority, cpu=c.cpu, max_trajectory_lag=c.max_trajectory_lag)

    def arm_factory(self) -> ArmFactory:
        """A picklable callable making the configured arm driver (called in the control-loop process)."""
        a = self.arm
        return registry.lookup(a.driver).factory(a.space, a.options, self.safety)


def load_config(path: Union[str, Path]) -> RobotConfig:
    """Read and validate ``path``. Raises :class:`ConfigFileError` if it cannot be read, else
    :class:`ConfigError` listing every problem."""
    file = Path(path)
    try:
        with file.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)  # never more: /dev/zero is a file too
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise ConfigFileError(f"{file}: cannot read: {exc.strerror or exc}") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        shown = f"{size} bytes" if size > MAX_CONFIG_BYTES else f"more than {MAX_CONFIG_BYTES} bytes"  # else a device
        raise ConfigFileError(f"{file}: cannot read: {shown}: expected at most {MAX_CONFIG_BYTES} bytes "
                              f"({MAX_CONFIG_BYTES // 1024} KiB) for a robot.toml")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"{file}: cannot read: not UTF-8 text (byte {exc.start})") from exc
    for number, line in enumerate(text.split("\n"), 1):
        if line.count(".") > MAX_DOTS_PER_LINE:
            raise ConfigError(f"{file}: line {number} has {line.count('.')} dots: expected at most "
                              f"{MAX_DOTS_PER_LINE} (the TOML parser's work grows with the square of a dotted key's "
                              "depth)")
    try:
        data = tomllib.loads(text)
    except RecursionError as exc:
        raise ConfigError(f"{file}: not valid TOML: arrays or inline tables nested too deeply") from exc
    except ValueError as exc:  # tomllib.TOMLDecodeError, or an integer of more digits than Python converts
        raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    return RobotConfig.from_dict(data, file)


def _validated(data: Mapping[str, Any], file: Path) -> RobotConfig:
    """The validation of :meth:`RobotConfig.from_dict`: every problem collected, then raised together."""
    problems = Problems(str(file), toml=True)
    root = _Table(problems, "", data)
    instruction = root.take("instruction", str, "", required=True)
    try:
        check_instruction(instruction)
    except InputError as exc:
        if isinstance(data.get("instruction"), str):  # else already reported as missing or not a string
            problems.value("instruction", instruction, str(exc).split(": ", 1)[1])
    remote = _remote(root.table("policy")) if "policy" in data else None
    bundle = _bundle(root.table("bundle")) if "bundle" in data else None
    root.read += ["bundle", "policy"]  # for "did you mean" when neither is there
    if bundle is None and remote is None:
        problems.other("[bundle]", "missing: expected a [bundle] table (a bundle on this computer) or a [policy] "
                       "table (a policy server)")
    if bundle is not None and remote is not None:
        problems.other("[policy]", "expected either [bundle] (a bundle on this computer) or [policy] (a policy "
                       "server), not both")
    cameras = _cameras(root)
    safety = _safety(root.table("safety"))
    arm = _arm(root.table("arm", required=True), safety)
    control = _control(root.table("control"))
    t = root.table("inference")
    inference = InferenceSection(
        start_fraction=t.take("start_fraction", float, 0.5, check=lambda x: 0 < x < 1,
                              expected="a fraction 0 < f < 1 of the chunk's span"),
        max_latency_s=t.take("max_latency_s", float, 1.0, check=lambda x: 0.01 <= x <= 60,
                             expected="seconds 0.01 ... 60"),
        chunking=t.take("chunking", str, DEFAULT_CHUNKING, choices=CHUNKING))
    t.finish()
    splice = _splice(root.table("splice"), inference.chunking)
    gripper = _policy(root.table("gripper"), GripperPolicy)
    health = _health(root.table("health"))
    operator = _operator(root.table("operator"))
    t = root.table("logging")
    logging_ = LoggingSection(level=t.take("level", str, "info", choices=LEVELS))
    t.finish()
    t = root.table("recorder")
    recorder = RecorderSection(
        seconds=t.take("seconds", float, 30.0, check=lambda x: 0 < x <= 600,
                       expected="seconds in (0, 600] (the ring buffer lives in memory)"),
        directory=t.path("directory") or file.parent / "recordings",
        on_fault=t.take("on_fault", bool, True))
    why = _unwritable(recorder.directory)
    if why:
        t.report("directory" if "directory" in t.data else f"[recorder].directory (default {recorder.directory})",
                 f"expected a folder this daemon can write recordings into: {why}")
    t.finish()
    root.finish()
    if problems:
        raise ConfigError("\n".join(problems.lines()))
    return RobotConfig(file, instruction, bundle, cameras, arm, control, safety, splice, gripper, inference,
                       health, logging_, recorder, remote, operator)


# -- reading tables ------------------------------------------------------------------------------------


class _Table(Table):
    """A TOML table of ``robot.toml``: the kit's :class:`~xvla.validation.Table`, naming sub-tables as TOML does
    (``[name]`` at the root, ``[arm.sim]`` for ``sim`` in ``[arm]``) and reading paths."""

    def child(self, name: str) -> str:
        return f"[{self.where[1:-2]}.{name}]." if self.where else f"[{name}]."

    def path(self, name: str, *, required: bool = False, kind: str = "") -> Optional[Path]:
        """A path (``~`` expanded, relative to the config file); ``kind`` "dir"/"file" must exist as that.
        None (with the problem recorded) for a path no file system call can take."""
        text = self.take(name, str, None, required=required, check=_is_path_text,
                         expected=f"a path: printable, 1 ... {MAX_PATH_BYTES} bytes")
        if text is None:
            return None
        try:
            path = Path(text).expanduser()
            path = path if path.is_absolute() else Path(self.problems.source).parent / path
            found = {"dir": path.is_dir, "file": path.is_file}[kind]() if kind else True
        except RuntimeError as exc:  # "~name" of no user
            self.problems.value(self.key(name), text, f"expected a usable path: {exc}")
            return None
        except OSError as exc:  # e.g. a part longer than the file system's names
            self.problems.value(self.key(name), text, f"expected a usable path: {exc.strerror or exc}")
            return None
        if not found:
            what = "folder" if kind == "dir" else "file"
            self.problems.value(self.key(name), text, f"expected an existing {what} ({path} is not one)")
        return path


def _is_path_text(text: str) -> bool:
    return text.isprintable() and 0 < len(text.encode()) <= MAX_PATH_BYTES


def _build(t: _Table, cls: Callable[..., Any], values: Dict[str, Any]) -> Any:
    """``cls(**values)`` (keys: the table's), checked by the drivers class itself. On refusal each value is
    tried alone, so every refused key is reported by name; a refusal of the combination only (e.g. ``lower
    < upper``) is reported for the table. Returns the defaults then."""
    try:
        return cls(**values)
    except ArmConfigError as exc:
        refused = False
        for name, value in values.items():
            try:
                cls(**{name: value})
            except ArmConfigError as alone:
                t.problems.value(t.key(name), t.data[name], str(alone))
                refused = True
        if not refused:
            t.problems.other(t.where.rstrip("."), str(exc))
    return cls()


# -- sections -------------------------------------------------------------------------------------------


def _bundle(t: _Table) -> BundleSection:
    section = BundleSection(
        path=t.path("path", required=True) or Path(),
        backend=t.take("backend", str, names.AUTO, choices=names.CHOICES),
        device=t.take("device", str, "cpu", choices=names.DEVICES),
        steps=t.take("steps", int, None, check=lambda n: 1 <= n <= MAX_STEPS, expected=f"an integer 1 ... {MAX_STEPS}"))
    if section.backend in names.CUDA_ONLY and section.device != "cuda":
        t.problems.value(t.key("device"), section.device,
                         f'expected "cuda": backend {show(section.backend)} runs on the GPU')
    t.finish()
    return section


def _remote(t: _Table) -> RemoteSection:
    url = t.take("url", str, "", required=True, check=_ws_url,
                 expected='a websocket URL of xvla-edge serve, "ws://HOST:PORT" or "wss://HOST:PORT"')
    token_file = t.path("token_file", kind="file")
    token = _token(t, token_file) if token_file is not None and token_file.is_file() else None
    host = urlsplit(url).hostname or ""
    if url and token is None and token_file is None and not is_loopback(host):
        t.problems.value(t.key("url"), url, "a policy server on another machine needs a token: set "
                         "[policy].token_file (the server's --token-file)")
    section = RemoteSection(
        url=url, domain_id=t.take("domain_id", int, None, check=lambda d: 0 <= d <= 1 << 20,
                                  expected="the domain id the server serves the robot's bundle for"),
        token=token,
        timeout_s=t.take("timeout_s", float, 1.0, check=lambda x: 0.01 <= x <= 60, expected="seconds 0.01 ... 60"),
        connect_timeout_s=t.take("connect_timeout_s", float, 2.0, check=lambda x: 0.01 <= x <= 60,
                                 expected="seconds 0.01 ... 60"),
        steps=t.take("steps", int, None, check=lambda n: 1 <= n <= MAX_STEPS, expected=f"an integer 1 ... {MAX_STEPS}"))
    t.finish()
    return section


def _operator(t: _Table) -> OperatorSection:
    sock = t.path("socket")
    group = t.take("socket_group", str, None, check=_group_exists, expected="an existing group (getent group NAME)")
    if sock is not None and len(str(sock).encode()) > 100:  # sockaddr_un holds 108 bytes
        t.problems.value(t.key("socket"), str(sock), "expected a path of at most 100 bytes (a Unix socket's limit)")
    section = OperatorSection(socket=sock, socket_group=group, autostart=t.take("autostart", bool, True))
    t.finish()
    return section


def _group_exists(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _ws_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return url.isprintable() and parts.scheme in ("ws", "wss") and bool(parts.hostname) and (parts.port or 1) > 0
    except ValueError:  # a malformed port or IPv6 address
        return False


def _cameras(root: _Table) -> Tuple[CameraSection, ...]:
    entries = root.take("cameras", list, [], required=True, check=lambda c: 1 <= len(c) <= MAX_CAMERAS,
                        expected=f"1 to {MAX_CAMERAS} [[cameras]] tables")
    cameras: List[CameraSection] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            root.problems.value(f"cameras[{i}]", entry, "expected a table: write each camera as [[cameras]]")
            continue
        t = _Table(root.problems, f"[[cameras]] #{i + 1}.", entry)
        slot = t.take("slot", int, None, required=True, check=lambda s: 0 <= s < MAX_CAMERAS,
                      expected=f"a view slot 0 ... {MAX_CAMERAS - 1} (0: the main view)")
        if slot is not None and slot in [c.slot for c in cameras]:
            t.problems.value(t.key("slot"), slot, "expected a slot no other camera uses")
        source = t.take("source", str, None, required=True, choices=tuple(CAMERA_KEYS))
        max_age_s = t.take("max_age_s", float, 0.5, check=lambda x: 0 < x <= MAX_FRAME_AGE_S,
                           expected=f"seconds in (0, {MAX_FRAME_AGE_S:g}] (older frames are no view of the present)")
        if source is None:
            t.read += [k for keys in CAMERA_KEYS.values() for k in keys]  # no noise about keys of a bad source
            t.finish()
            continue
        keys = CAMERA_KEYS[source]
        values: Dict[str, Any] = {"max_age_s": max_age_s}
        if "device" in keys:
            values["device"] = t.take("device", (int, str), None, required=True,  # type: ignore[arg-type]
                                      check=_is_video_device,
                                      expected=f'a device path such as "/dev/video0", or an index 0 ... '
                                               f'{MAX_VIDEO_INDEX}')
        if "pipeline" in keys:
            values["pipeline"] = t.take("pipeline", str, None, required=True,
                                        check=lambda p: p.isprintable() and _ends_in_appsink(p),
                                        expected="a GStreamer pipeline ending in appsink (printable text)")
        if "path" in keys:
            values["path"] = t.path("path", required=True, kind="dir" if source == "folder" else "file")
        for name, kind, check, expected in (("width", int, lambda n: 0 < n <= MAX_IMAGE_SIDE, f"pixels 1 ... {MAX_IMAGE_SIDE}"),
                                            ("height", int, lambda n: 0 < n <= MAX_IMAGE_SIDE, f"pixels 1 ... {MAX_IMAGE_SIDE}"),
                                            ("fps", float, lambda x: 0 < x <= 240, "frames per second in (0, 240]"),
                                            ("loop", bool, None, "")):
            if name in keys:
                value = t.take(name, kind, None, check=check, expected=expected)
                if value is not None:
                    values[name] = value
        camera = CameraSection(slot=-1 if slot is None else slot, source=source, **values)
        if "fps" in keys and camera.max_age_s < 1.0 / camera.fps:
            t.problems.value(t.key("max_age_s"), camera.max_age_s,
                             f"expected at least one frame period (1/fps = {1.0 / camera.fps:.3g} s), "
                             "else the camera is always stale")
        t.finish({k: "only for source " + " or ".join(show(s) for s, ks in CAMERA_KEYS.items() if k in ks)
                  for keys in CAMERA_KEYS.values() for k in keys})
        cameras.append(camera)
    if cameras and 0 not in [c.slot for c in cameras]:
        root.problems.other("[[cameras]]", "no camera has slot 0 (the main view)")
    return tuple(cameras)


def _cpus() -> List[int]:
    """The CPUs this process may run on (the control loop's ``cpu`` must be one of them)."""
    return sorted(os.sched_getaffinity(0))


def _health(t: _Table) -> HealthSection:
    host = t.take("host", str, "127.0.0.1", check=lambda h: re.fullmatch(r"[A-Za-z0-9.:%_-]{1,253}", h) is not None,
                  expected="a host name or address: ASCII letters, digits and . : % _ -, at most 253 characters")
    port = t.take("port", int, 8765, check=lambda p: 0 <= p <= 65535, expected="a TCP port 1 ... 65535, or 0 (off)")
    token_file = t.path("token_file", kind="file")
    token = _token(t, token_file) if token_file is not None and token_file.is_file() else None
    if port and token is None and token_file is None and token_required(host):  # never lab mode: see web/auth.py
        t.problems.value(t.key("host"), host, "binding beyond loopback exposes POST /record to the network: set "
                         f"[health].token_file (a file only its owner reads, holding a secret of at least "
                         f"{MIN_TOKEN_CHARS} characters), or listen on 127.0.0.1")
    t.finish()
    return HealthSection(host=host, port=port, token=token)


def _token(t: _Table, path: Path) -> Optional[str]:
    """The secret in ``path`` (the rule of :mod:`xvla_edge.web.auth`), or None (with the problem recorded)."""
    try:
        return read_token_file(path)
    except TokenError as exc:
        t.problems.value(t.key("token_file"), str(t.data["token_file"]), str(exc))
        return None


def _unwritable(folder: Path) -> Optional[str]:
    """Why recordings could not be written into ``folder`` (created on the first one if missing), or None."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable by this user"
    return None


def _is_video_device(device: Union[int, str]) -> bool:
    """An index 0 ... MAX_VIDEO_INDEX (also written as a string, as the cameras read it), or a printable path."""
    if isinstance(device, str) and device.isdigit():
        return device.isdecimal() and len(device) <= 3 and int(device) <= MAX_VIDEO_INDEX
    if isinstance(device, int):
        return 0 <= device <= MAX_VIDEO_INDEX
    return _is_path_text(device)


def _ends_in_appsink(pipeline: str) -> bool:
    last = pipeline.rsplit("!", 1)[-1].split()
    return bool(last) and last[0] == "appsink"


def _arm(t: _Table, safety: SafetyLimits) -> ArmSection:
    before = len(t.problems)
    drivers = registry.DRIVERS.values()
    name = t.take("driver", str, None, required=True, choices=registry.names())
    if name is None:
        t.read += [k for d in drivers for k in d.keys]  # no noise about keys of a bad driver
        t.finish()
        return ArmSection(driver="sim")
    driver = registry.lookup(name)
    space = t.take("space", str, driver.spaces[0], choices=driver.spaces)
    options = _options(t, driver.options)
    for where, why in driver.check(space, options, safety):
        t.report(where, why)
    t.finish({k: "only for driver " + " or ".join(show(d.name) for d in drivers if k in d.keys)
              for d in drivers for k in d.keys})
    if len(t.problems) == before:  # the driver's own checks (no I/O: drivers open ports on connect)
        try:
            driver.factory(space, options, safety)()
        except ArmConfigError as exc:  # "DynamixelArm.watchdog_ms: expected 20..2540, got 10"
            key = driver.refused_key(exc)
            t.report(key if key in t.data else "[arm]", str(exc))
    return ArmSection(name, space, options)


def _options(t: _Table, options: Sequence[registry.Option]) -> Dict[str, Any]:
    """The values of a driver's ``options`` in ``t``; a sub-table's values as a dict of their own."""
    values: Dict[str, Any] = {}
    for o in options:
        if o.table:
            sub = t.table(o.name)
            values[o.name] = _options(sub, o.table)
            sub.finish()
        elif o.field.kind is Path:
            values[o.name] = t.path(o.name, required=o.required, kind="file")
        else:
            values[o.name] = t.field(o.name, o.field, o.default, required=o.required)
    return values


def _control(t: _Table) -> ControlSection:
    given = {"rate_hz": t.take("rate_hz", float), "realtime_priority": t.take("realtime_priority", int),
             "cpu": t.take("cpu", int, check=lambda n: n in _cpus(), expected=f"a CPU this process may use: {_cpus()}"),
             "max_trajectory_lag": t.take("max_trajectory_lag", float)}
    values = {name: value for name, value in given.items() if value is not None}
    t.finish()
    loop = _build(t, LoopConfig, values)
    return ControlSection(**{name: getattr(loop, name) for name in _CONTROL_KEYS})


def _safety(t: _Table) -> SafetyLimits:
    rates = {}
    for f in dataclasses.fields(SafetyLimits):
        if f.name.startswith("max_"):
            value = t.take(f.name, float, None)
            if value is not None:
                rates[f.name] = value
    boxes = []
    for i, entry in enumerate(t.take("workspaces", list, [], check=lambda boxes: len(boxes) <= MAX_ARMS,
                                     expected=f"an array of {{lower=[x,y,z], upper=[x,y,z]}}, one per arm, at most "
                                              f"{MAX_ARMS}")):
        box = _entry(t, f"workspaces[{i}]", entry, lambda e: Box(
            e.take("lower", list, required=True, expected="[x, y, z] (m)"),
            e.take("upper", list, required=True, expected="[x, y, z] (m)")))
        boxes += [box] if box is not None else []
    joints = []
    for i, entry in enumerate(t.take("joint_limits", list, [], check=lambda joints: len(joints) <= MAX_JOINTS,
                                     expected=f"an array of {{lower=, upper=, max_velocity=}}, one per joint, at "
                                              f"most {MAX_JOINTS}")):
        joint = _entry(t, f"joint_limits[{i}]", entry, lambda e: JointLimit(
            e.take("lower", float, required=True, expected="rad (or m)"),
            e.take("upper", float, required=True, expected="rad (or m)"),
            e.take("max_velocity", float, required=True, expected="rad/s (or m/s) > 0")))
        joints += [joint] if joint is not None else []
    t.finish()
    limits = _build(t, SafetyLimits, rates)
    return dataclasses.replace(limits, workspaces=tuple(boxes), joint_limits=tuple(joints))


def _entry(t: _Table, name: str, entry: Any, build: Callable[[_Table], Any]) -> Any:
    """One inline table of an array (a workspace box, a joint limit), or None when it has problems."""
    if not isinstance(entry, dict):
        t.problems.value(t.key(name), entry, "expected an inline table { ... }")
        return None
    e = _Table(t.problems, f"{t.key(name)}.", entry)
    before = len(t.problems)
    try:
        built = build(e)
    except (ArmConfigError, TypeError, ValueError) as exc:
        if len(t.problems) == before:  # not already reported as a missing or mistyped key
            t.problems.value(t.key(name), entry, str(exc))
        built = None
    e.finish()
    return built if len(t.problems) == before else None


def _splice(t: _Table, chunking: str) -> SplicePolicy:
    """``[splice]``: the splice's numbers; its mode follows ``[inference].chunking``. Real-time chunking needs
    chunks anchored at their observation (its prefix holds the rows the arm executes while the model runs)."""
    if "mode" in t.data:
        t.read.append("mode")
        t.report("mode", f"moved: set [inference].chunking = {' | '.join(show(c) for c in CHUNKING)} "
                         "(it chooses the splice)")
    splice = dataclasses.replace(_policy(t, SplicePolicy, skip=("mode",)), mode=splice_mode(chunking))
    if chunking == "rtc" and splice.anchor != "observation":
        t.report("anchor", 'expected "observation" with [inference].chunking = "rtc": real-time chunking freezes the '
                           "rows the arm executes while the model runs, at their observed times (an arrival-anchored "
                           'chunk executes them late); or set chunking = "blend" or "replace"')
    return splice


def _policy(t: _Table, cls: type, skip: Sequence[str] = ()) -> Any:
    """A drivers policy dataclass whose fields are the table's keys (kinds and choices from its type hints),
    but the fields ``skip``."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        hint = hints[f.name]
        choices = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else ()
        value = t.take(f.name, str if choices else hint, None, choices=choices)
        if value is not None:
            values[f.name] = value
    t.finish()
    return _build(t, cls, values)
