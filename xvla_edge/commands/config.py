"""``xvla-edge config check FILE``: validate a robot.toml without running anything.

Exit status: 0 valid (a one-screen summary on stdout), 1 invalid (every problem on stderr, one per line),
2 the file cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xvla_edge.daemon.config import RobotConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="validate a robot.toml and summarise it (exit 0 valid, 1 invalid, 2 unreadable)")
    check.add_argument("file", type=Path, help="the robot.toml (see xvla_edge/daemon/robot.example.toml)")


def run(args: argparse.Namespace) -> int:
    from xvla_edge.daemon.config import ConfigError, ConfigFileError, load_config

    try:
        config = load_config(args.file)
    except ConfigFileError as exc:
        print(exc, file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        n = len(str(exc).splitlines())
        print(f"{args.file}: invalid ({n} problem{'s' if n > 1 else ''})", file=sys.stderr)
        return 1
    print(summary(config))
    return 0


def summary(config: RobotConfig) -> str:
    """What the daemon would run, one line per part."""
    c = config
    lines = [f"{c.file}: valid", f"  instruction: {c.instruction!r}"]
    if c.bundle is not None:
        lines.append(f"  bundle:    {c.bundle.path} (backend {c.bundle.backend}, device {c.bundle.device}, "
                     f"steps {c.bundle.steps or 'from the manifest'})")
    else:
        r = c.remote
        assert r is not None
        lines.append(f"  policy:    served at {r.url} (domain {'the only one served' if r.domain_id is None else r.domain_id}"
                     f", token {'set' if r.token else 'none'}, chunk timeout {r.timeout_s:g} s, "
                     f"steps {r.steps or 'from the manifest'})")
    o = c.operator
    lines.append(f"  operator:  {'control socket ' + str(o.socket) if o.socket else 'no control socket'}"
                 + (f" (group {o.socket_group})" if o.socket_group else "")
                 + f", episode {'starts with the daemon' if o.autostart else 'waits for ctl start'}")
    for cam in c.cameras:
        what = {"synthetic": f"{cam.width}x{cam.height}", "v4l2": f"{cam.device} {cam.width}x{cam.height}",
                "gstreamer": "pipeline", "folder": str(cam.path), "video": str(cam.path)}[cam.source]
        rate = "" if cam.source == "gstreamer" else f" @ {cam.fps:g} fps"
        lines.append(f"  {cam.name + ':':<10} slot {cam.slot}, {cam.source} {what}{rate}, stale after {cam.max_age_s:g} s")
    a, o = c.arm, c.arm.options
    where = f" on {o['port']}" if o.get("port") else ""
    deadman = "" if "timeout_ms" not in o else ", deadman " + (
        "the driver's default" if o["timeout_ms"] is None else f"{o['timeout_ms']} ms")
    calibration = f", calibration {o['calibration']}" if o.get("calibration") else ""
    lines.append(f"  arm:       {a.driver}{where} ({a.space} space){deadman}{calibration}")
    k, s = c.control, c.safety
    lines.append(f"  control:   {k.rate_hz:g} Hz, realtime priority {k.realtime_priority or 'off'}, "
                 f"cpu {'any' if k.cpu is None else k.cpu}")
    theirs = "the controller's"
    lines.append(f"  safety:    {s.max_linear_speed:g} m/s, {s.max_angular_speed:g} rad/s; workspace boxes: "
                 f"{len(s.workspaces) or theirs}, joint limits: {len(s.joint_limits) or theirs}")
    lines.append(f"  chunks:    next at {c.inference.start_fraction:g} of the span left, chunking "
                 f"{c.inference.chunking}, "
                 f"gripper {c.gripper.mode}, degraded above {c.inference.max_latency_s:g} s")
    h, r = c.health, c.recorder
    auth = "; POST needs the token" if h.token else ""
    lines.append(f"  health:    {f'http://{h.host}:{h.port}/healthz' if h.port else 'off'}{auth}; log level {c.logging.level}")
    lines.append(f"  recorder:  last {r.seconds:g} s to {r.directory}{', on faults' if r.on_fault else ''}")
    return "\n".join(lines)
