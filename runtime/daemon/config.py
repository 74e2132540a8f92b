"""``robot.toml``: the daemon's configuration, validated at start (``xvla-edge config check FILE`` alone).

Every error names the file, the key, the value and what is allowed; unknown keys are errors (with a
"did you mean"), and all errors are reported together. The annotated example with every key, default and
unit is ``runtime/daemon/robot.example.toml``.

Values the drivers check themselves (``LoopConfig``, ``SafetyLimits``, ``SplicePolicy``, ``GripperPolicy``)
are built here at load time, so their errors also come out as :class:`ConfigError` naming the section.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (JetPack 6)
    import tomli as tomllib  # type: ignore[no-redef]

from drivers.arm import ArmConfigError, Box, JointLimit
from drivers.control_loop import LoopConfig
from drivers.interpolation import GripperPolicy
from drivers.safety import SafetyLimits
from drivers.splice import SplicePolicy

BACKENDS = ("auto", "onnxruntime", "tensorrt", "torch")
DEVICES = ("cpu", "cuda")
SOURCES = ("synthetic", "v4l2", "gstreamer", "folder", "video")
DRIVERS = ("sim", "xvla-serial", "dynamixel")
LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """One or more problems in a config file (one per line)."""


@dataclass(frozen=True)
class BundleSection:
    path: Path
    backend: str = "auto"
    device: str = "cpu"
    steps: Optional[int] = None


@dataclass(frozen=True)
class CameraSection:
    slot: int
    source: str
    device: Optional[str] = None
    pipeline: Optional[str] = None
    path: Optional[Path] = None
    width: int = 640
    height: int = 480
    fps: float = 30.0
    max_age_s: float = 0.5
    loop: bool = True

    @property
    def name(self) -> str:
        return f"{self.source}{self.slot}"


@dataclass(frozen=True)
class ArmSection:
    driver: str
    port: Optional[str] = None
    baud: Optional[int] = None
    space: str = "ee"
    calibration: Optional[Path] = None
    timeout_ms: int = 200


@dataclass(frozen=True)
class ControlSection:
    rate_hz: float = 200.0
    realtime_priority: int = 80
    cpu: Optional[int] = None
    max_trajectory_lag: float = 1.0


@dataclass(frozen=True)
class InferenceSection:
    start_fraction: float = 0.5
    max_latency_s: float = 1.0


@dataclass(frozen=True)
class HealthSection:
    host: str = "127.0.0.1"
    port: int = 8765


@dataclass(frozen=True)
class LoggingSection:
    level: str = "info"


@dataclass(frozen=True)
class RecorderSection:
    seconds: float = 30.0
    directory: Path = Path("recordings")
    on_fault: bool = True


@dataclass(frozen=True)
class RobotConfig:
    source: Path
    instruction: str
    bundle: BundleSection
    cameras: Tuple[CameraSection, ...]
    arm: ArmSection
    control: ControlSection
    limits: SafetyLimits
    splice: SplicePolicy
    gripper: GripperPolicy
    inference: InferenceSection
    health: HealthSection
    logging: LoggingSection
    recorder: RecorderSection

    def loop_config(self) -> LoopConfig:
        c = self.control
        return LoopConfig(rate_hz=c.rate_hz, limits=self.limits, splice=self.splice, gripper=self.gripper,
                          realtime_priority=c.realtime_priority, cpu=c.cpu, max_trajectory_lag=c.max_trajectory_lag)

    def arm_factory(self) -> Callable[[], Any]:
        """A picklable factory of the configured arm driver (called inside the control-loop process)."""
        a = self.arm
        if a.driver == "sim":
            from drivers.sim_arm import SimArm

            return functools.partial(SimArm, space=a.space)
        if a.driver == "xvla-serial":
            from drivers.xvla_serial.client import XvlaSerialArm

            extra = {} if a.baud is None else {"baudrate": a.baud}
            return functools.partial(XvlaSerialArm, a.port, space=a.space, timeout_ms=a.timeout_ms, **extra)
        from drivers.dynamixel.arm import DynamixelArm

        extra = {} if a.baud is None else {"baudrate": a.baud}
        return functools.partial(DynamixelArm, a.port, a.calibration, watchdog_ms=a.timeout_ms, **extra)


class _Reader:
    """Typed lookups into one table that collect errors instead of raising at the first."""

    def __init__(self, file: Path, table: Dict[str, Any], where: str, errors: List[str]) -> None:
        self.file, self.table, self.where, self.errors = file, table, where, errors
        self.seen: set = set()

    def _err(self, key: str, value: Any, expected: str) -> None:
        self.errors.append(f"{self.file}: {self.where}{key} = {value!r}: expected {expected}")

    def get(self, key: str, kind: type, default: Any = None, *, required: bool = False,
            choices: Tuple[Any, ...] = (), check: Optional[Callable[[Any], bool]] = None, expected: str = "") -> Any:
        self.seen.add(key)
        if key not in self.table:
            if required:
                self.errors.append(f"{self.file}: {self.where}{key} is missing ({expected or kind.__name__})")
            return default
        value = self.table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self._err(key, value, expected or f"a {kind.__name__}")
            return default
        if choices and value not in choices:
            self._err(key, value, "one of " + ", ".join(repr(c) for c in choices))
            return default
        if check is not None and not check(value):
            self._err(key, value, expected)
            return default
        return value

    def path(self, key: str, *, required: bool = False, must_exist: bool = False) -> Optional[Path]:
        value = self.get(key, str, required=required, expected="a path")
        if value is None:
            return None
        path = Path(value).expanduser()
        path = path if path.is_absolute() else self.file.parent / path
        if must_exist and not path.exists():
            self._err(key, value, f"an existing path ({path} does not exist)")
        return path

    def finish(self) -> None:
        for key in sorted(set(self.table) - self.seen):
            close = difflib.get_close_matches(key, sorted(self.seen), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.errors.append(f"{self.file}: {self.where}{key} is not a known key{hint}")


def _positive(x: float) -> bool:
    return x > 0


def _table(root: _Reader, key: str) -> Dict[str, Any]:
    value = root.get(key, dict, {}, expected="a table")
    return value if isinstance(value, dict) else {}


def load_config(path: str | Path) -> RobotConfig:
    """Read and validate ``path``; raises :class:`ConfigError` listing every problem."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text())
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read ({exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    return parse_config(data, file)


def parse_config(data: Dict[str, Any], file: Path) -> RobotConfig:
    errors: List[str] = []
    root = _Reader(file, data, "", errors)
    instruction = root.get("instruction", str, "", required=True, check=lambda s: bool(s.strip()),
                           expected="a non-empty instruction")

    r = _Reader(file, _table(root, "bundle"), "[bundle].", errors)
    bundle = BundleSection(
        path=r.path("path", required=True) or Path("."), backend=r.get("backend", str, "auto", choices=BACKENDS),
        device=r.get("device", str, "cpu", choices=DEVICES),
        steps=r.get("steps", int, None, check=lambda n: n >= 1, expected="an integer >= 1"))
    r.finish()

    cameras = _cameras(root, file, errors)
    arm = _arm(_Reader(file, _table(root, "arm"), "[arm].", errors))

    r = _Reader(file, _table(root, "control"), "[control].", errors)
    control = ControlSection(
        rate_hz=r.get("rate_hz", float, 200.0, check=lambda x: 50 <= x <= 500, expected="50 ... 500 (Hz)"),
        realtime_priority=r.get("realtime_priority", int, 80, check=lambda x: 0 <= x <= 99, expected="0 ... 99"),
        cpu=r.get("cpu", int, None, check=lambda x: x >= 0, expected="a CPU index >= 0"),
        max_trajectory_lag=r.get("max_trajectory_lag", float, 1.0, check=lambda x: x >= 0, expected="a number >= 0"))
    r.finish()

    limits = _safety(_Reader(file, _table(root, "safety"), "[safety].", errors))
    splice = _policy(_Reader(file, _table(root, "splice"), "[splice].", errors), SplicePolicy)
    gripper = _policy(_Reader(file, _table(root, "gripper"), "[gripper].", errors), GripperPolicy)

    r = _Reader(file, _table(root, "inference"), "[inference].", errors)
    inference = InferenceSection(
        start_fraction=r.get("start_fraction", float, 0.5, check=lambda x: 0 < x < 1, expected="0 < f < 1"),
        max_latency_s=r.get("max_latency_s", float, 1.0, check=_positive, expected="seconds > 0"))
    r.finish()
    r = _Reader(file, _table(root, "health"), "[health].", errors)
    health = HealthSection(host=r.get("host", str, "127.0.0.1"),
                           port=r.get("port", int, 8765, check=lambda p: 0 <= p <= 65535,
                                      expected="0 (off) ... 65535"))
    r.finish()
    r = _Reader(file, _table(root, "logging"), "[logging].", errors)
    logging_ = LoggingSection(level=r.get("level", str, "info", choices=LEVELS))
    r.finish()
    r = _Reader(file, _table(root, "recorder"), "[recorder].", errors)
    recorder = RecorderSection(seconds=r.get("seconds", float, 30.0, check=_positive, expected="seconds > 0"),
                               directory=r.path("directory") or file.parent / "recordings",
                               on_fault=r.get("on_fault", bool, True))
    r.finish()
    root.finish()
    if errors:
        raise ConfigError("\n".join(errors))
    config = RobotConfig(file, instruction, bundle, cameras, arm, control, limits, splice, gripper,  # type: ignore[arg-type]
                         inference, health, logging_, recorder)
    try:
        config.loop_config()
    except ArmConfigError as exc:
        raise ConfigError(f"{file}: [control]/[safety]: {exc}") from exc
    return config


def _cameras(root: _Reader, file: Path, errors: List[str]) -> Tuple[CameraSection, ...]:
    tables = root.get("cameras", list, [], required=True, check=lambda c: 1 <= len(c) <= 3,
                      expected="1 to 3 [[cameras]] tables")
    out, slots = [], set()
    for i, table in enumerate(tables or []):
        if not isinstance(table, dict):
            errors.append(f"{file}: [[cameras]] #{i + 1} is not a table")
            continue
        r = _Reader(file, table, f"[[cameras]] #{i + 1}.", errors)
        slot = r.get("slot", int, i, required=True, check=lambda s: 0 <= s <= 2, expected="a view slot 0, 1 or 2")
        if slot in slots:
            r._err("slot", slot, "a slot no other camera uses")
        slots.add(slot)
        source = r.get("source", str, "synthetic", required=True, choices=SOURCES)
        cam = CameraSection(
            slot=slot, source=source,
            device=_device(r) if source == "v4l2" and "device" in table else None,
            pipeline=r.get("pipeline", str, None, required=source == "gstreamer", expected="a pipeline ending in appsink"),
            path=r.path("path", required=source in ("folder", "video"), must_exist=True) if source in ("folder", "video") else None,
            width=r.get("width", int, 640, check=_positive, expected="pixels > 0"),
            height=r.get("height", int, 480, check=_positive, expected="pixels > 0"),
            fps=r.get("fps", float, 30.0, check=_positive, expected="frames per second > 0"),
            max_age_s=r.get("max_age_s", float, 0.5, check=_positive, expected="seconds > 0"),
            loop=r.get("loop", bool, True))
        if source == "v4l2" and "device" not in table:
            errors.append(f"{file}: [[cameras]] #{i + 1}.device is missing (a /dev/videoN path or an index)")
        for key in ("device", "pipeline", "path"):
            allowed = {"device": ("v4l2",), "pipeline": ("gstreamer",), "path": ("folder", "video")}[key]
            if key in table and source not in allowed:
                r._err(key, table[key], f"no {key} for source {source!r} (only for {', '.join(allowed)})")
        r.seen.update(("device", "pipeline", "path"))
        r.finish()
        out.append(cam)
    if out and 0 not in slots:
        errors.append(f"{file}: [[cameras]]: slot 0 (the main view) must have a camera")
    return tuple(out)


def _device(r: _Reader) -> Optional[str]:
    value = r.get("device", (str, int), None, expected="a /dev/videoN path or a camera index")  # type: ignore[arg-type]
    return None if value is None else str(value)


def _arm(r: _Reader) -> ArmSection:
    driver = r.get("driver", str, "sim", required=True, choices=DRIVERS)
    space = r.get("space", str, "joint" if driver == "dynamixel" else "ee", choices=("ee", "joint"))
    if driver == "dynamixel" and space != "joint":
        r._err("space", space, '"joint" (Dynamixel arms are joint-space)')
    arm = ArmSection(
        driver=driver, space=space,
        port=r.get("port", str, None, required=driver != "sim", expected="a serial device or pyserial URL"),
        baud=r.get("baud", int, None, check=_positive, expected="a baud rate > 0"),
        calibration=r.path("calibration", required=driver == "dynamixel", must_exist=True),
        timeout_ms=r.get("timeout_ms", int, 200, check=lambda t: 10 <= t <= 10_000, expected="10 ... 10000 (ms)"))
    r.finish()
    return arm


def _safety(r: _Reader) -> SafetyLimits:
    values: Dict[str, Any] = {}
    for f in fields(SafetyLimits):
        if f.name.startswith("max_"):
            value = r.get(f.name, float, None, check=_positive, expected="a number > 0")
            if value is not None:
                values[f.name] = value
    boxes = []
    for i, box in enumerate(r.get("workspaces", list, [], expected="a list of {lower=[x,y,z], upper=[x,y,z]}")):
        try:
            boxes.append(Box(tuple(map(float, box["lower"])), tuple(map(float, box["upper"]))))
        except (KeyError, TypeError, ValueError, ArmConfigError) as exc:
            r._err(f"workspaces[{i}]", box, f"{{lower=[x,y,z], upper=[x,y,z]}} with lower < upper ({exc})")
    joints = []
    for i, j in enumerate(r.get("joint_limits", list, [], expected="a list of {lower=, upper=, max_velocity=}")):
        try:
            joints.append(JointLimit(float(j["lower"]), float(j["upper"]), float(j["max_velocity"])))
        except (KeyError, TypeError, ValueError, ArmConfigError) as exc:
            r._err(f"joint_limits[{i}]", j, f"{{lower=, upper=, max_velocity=}} with lower < upper ({exc})")
    r.finish()
    try:
        return SafetyLimits(workspaces=tuple(boxes), joint_limits=tuple(joints), **values)
    except ArmConfigError as exc:
        r.errors.append(f"{r.file}: [safety]: {exc}")
        return SafetyLimits()


def _policy(r: _Reader, cls: type) -> Any:
    """A drivers policy dataclass from a table whose keys are its fields (types taken from the defaults)."""
    defaults = cls()
    values = {}
    for f in fields(cls):
        default = getattr(defaults, f.name)
        kind = float if isinstance(default, float) else type(default)
        value = r.get(f.name, kind, None, expected=f"a {kind.__name__}")
        if value is not None:
            values[f.name] = value
    r.finish()
    try:
        return cls(**values)
    except (ArmConfigError, ValueError) as exc:
        r.errors.append(f"{r.file}: {r.where.rstrip('.')}: {exc}")
        return defaults
