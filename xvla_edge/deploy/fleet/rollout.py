"""Flash one bundle to many robots from a workstation: ``xvla-edge flash BUNDLE --robot user@host:/path ...``.

The bundle is verified here first (manifest and every file's sha256): a tampered bundle is refused before
anything is sent anywhere. Then, per robot (:func:`flash_robot`), over SSH (:mod:`xvla_edge.deploy.fleet.ssh`):

1. ``have``: which of the bundle's files (by sha256) the robot lacks, and how much of each a dropped
   connection already delivered;
2. ``put``: only those, each from where it stopped; each is checked against its sha256 on the robot;
3. ``assemble``: the bundle rebuilt on the robot from what it received and what its installed bundles hold;
4. ``flash``: :func:`xvla_edge.deploy.install.flash` on the robot — verified again, TensorRT engines built there
   when it has TensorRT (an engine belongs to its GPU and TensorRT version, so engines are never copied), the
   smoke inference on the daemon's backend and device, the atomic switch;
5. the daemon (:class:`Daemon`): the restart command, then ``/healthz`` must name the new bundle; if it does not,
   the previous bundle is made active again and the daemon restarted on it.

A robot on which any step fails keeps its active bundle (the switch is the last step of ``flash``, and
:mod:`xvla_edge.deploy.install` guarantees the rest), and its result names the step and the cause. What the
robot's ``current`` link says decides, not how a call ended: a ``flash`` (or ``rollback``) that errs or loses
its connection after the robot switched counts as switched (its error becomes a message), because the robot
now runs that bundle. ``canary`` robots go first; the others only when all of them succeeded. ``parallel`` robots
at a time.
"""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from runtime.manifest import MANIFEST_FILE, Manifest
from xvla.files import sha256_file
from xvla_edge.deploy.fleet.ssh import Agent, RemoteError, Robot, SSHOptions
from xvla_edge.deploy.install import verify

Say = Callable[[str], None]


@dataclass
class RobotResult:
    """What happened on one robot."""

    robot: str
    result: str = "skipped"  # ok | failed | skipped
    step: str = ""  # the step that failed (or the last one done)
    error: Optional[str] = None
    old: Optional[str] = None  # bundle ids: active before, active after
    new: Optional[str] = None
    sent_bytes: int = 0
    seconds: float = 0.0
    engines: Optional[bool] = None  # TensorRT engines built on the robot
    build_s: Optional[float] = None  # the robot's engine build, and its smoke inference
    smoke_s: Optional[float] = None
    messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FlashPlan:
    """The verified bundle: its files by name → (sha256, bytes), the manifest's own digest, its id."""

    bundle: Path
    manifest: Manifest
    files: dict[str, tuple[str, int]]
    manifest_sha256: str

    @classmethod
    def of(cls, bundle: Path) -> FlashPlan:
        manifest = verify(bundle)  # BundleError naming the file: nothing has been sent
        files = {name: (e["sha256"], int(e["bytes"])) for name, e in manifest.files.items()}
        digest = sha256_file(bundle / MANIFEST_FILE)
        files[MANIFEST_FILE] = (digest, (bundle / MANIFEST_FILE).stat().st_size)
        return cls(bundle, manifest, files, digest)


@dataclass(frozen=True)
class Daemon:
    """How the robot's daemon takes a new bundle: ``restart`` (a command run on the robot, e.g. ``sudo systemctl
    restart xvla-edge``), then its ``/healthz`` at ``health_url`` (polled on the robot) must name the new bundle
    within ``timeout_s``."""

    restart: Optional[str] = None
    health_url: Optional[str] = None
    timeout_s: float = 120.0

    def take(self, agent: Agent, bundle_id: str, result: RobotResult, what: str) -> None:
        if self.restart:
            result.step = f"daemon restart ({what})"
            agent.shell(result.step, self.restart)
        if self.health_url:
            result.step = f"daemon health ({what})"
            agent.call(result.step, "health", self.health_url, bundle_id, str(self.timeout_s),
                       timeout_s=self.timeout_s + 60)


def flash_robot(plan: FlashPlan, agent: Agent, *, backend: str, device: str, smoke_timeout_s: float,
                say: Say, daemon: Daemon = Daemon()) -> RobotResult:
    """The four steps on one robot (module docstring), then the daemon's restart and health; never raises for
    the robot's own failures. A daemon that does not come back healthy on the new bundle is rolled back to the
    previous one (and restarted on it)."""
    result = RobotResult(str(agent.robot))
    t0 = time.monotonic()
    switched = False
    try:
        result.step = "status"
        before = agent.call("status", "status")
        result.old = (before.get("current") or {}).get("bundle_id")
        result.step = "have"
        request = {"files": {name: {"sha256": d, "bytes": n} for name, (d, n) in plan.files.items()}}
        missing = agent.call("have", "have", stdin=json.dumps(request).encode())["missing"]
        by_digest = {d: (name, n) for name, (d, n) in plan.files.items()}
        for digest, offset in missing.items():
            if digest not in by_digest or not isinstance(offset, int) or not 0 <= offset <= by_digest[digest][1]:
                raise RemoteError(f"{agent.robot}: have: the robot asked for {digest[:12]} from {offset!r}, which "
                                  "this bundle does not have")
            name, size = by_digest[digest]
            result.step = f"transfer of {name}"
            with open(plan.bundle / name, "rb") as f:
                f.seek(offset)
                agent.call(result.step, "put", digest, str(size), str(offset), stdin=f)
            result.sent_bytes += size - offset
        say(f"{agent.robot}: {result.sent_bytes} bytes sent ({len(plan.files) - len(missing)} of {len(plan.files)} "
            "files already there)")
        result.step = "assemble"
        agent.call("assemble", "assemble", plan.manifest_sha256)
        result.step = "flash"
        try:
            answer = agent.call("flash (verify, engines, smoke inference, switch)", "flash", plan.manifest.bundle_id,
                                "--backend", backend, "--device", device, "--smoke-timeout", str(smoke_timeout_s),
                                timeout_s=smoke_timeout_s + 3600)
        except RemoteError as exc:  # switched anyway (e.g. the connection dropped after the switch)?
            answer = _status(agent)
            if result.old == plan.manifest.bundle_id or _active(answer) != plan.manifest.bundle_id:
                raise
            answer["messages"] = [f"{exc} (but the robot reports the new bundle active: switched)"]
        result.messages = [str(m) for m in answer.get("messages", [])]
        last = answer.get("last") or {}
        if last.get("bundle_id") == plan.manifest.bundle_id:  # this flash's record (its write may have failed)
            result.engines = last.get("engines") if isinstance(last.get("engines"), bool) else None
            result.build_s, result.smoke_s = _seconds(last.get("build_s")), _seconds(last.get("smoke_s"))
        result.new = _active(answer)
        if result.new != plan.manifest.bundle_id:
            raise RemoteError(f"{agent.robot}: flash: the robot reports bundle {result.new} active, not "
                              f"{plan.manifest.bundle_id}")
        switched = True
        daemon.take(agent, plan.manifest.bundle_id, result, "new bundle")
        result.result, result.step = "ok", "done"
    except RemoteError as exc:
        if switched and result.old is not None and result.old != plan.manifest.bundle_id:
            exc = _roll_back(agent, daemon, result, exc)
        result.result, result.error = "failed", str(exc)
        result.new = _active(_status(agent))  # what is active now (the old bundle, by the flash's guarantees)
    result.seconds = round(time.monotonic() - t0, 2)
    say(f"{agent.robot}: {result.result}" + (f" at {result.step}: {result.error}" if result.error else ""))
    return result


def _status(agent: Agent) -> dict:
    """The robot's ``status`` answer; empty when it does not give one."""
    try:
        return agent.call("status", "status")
    except RemoteError:
        return {}


def _active(answer: dict) -> Optional[str]:
    """The bundle id ``current`` points at, per a ``status`` (or ``flash``) answer."""
    current = answer.get("current")
    return current.get("bundle_id") if isinstance(current, dict) else None


def _seconds(value: object) -> Optional[float]:
    """A duration from the robot's history entry; None for anything but a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an integer beyond float
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _roll_back(agent: Agent, daemon: Daemon, result: RobotResult, cause: RemoteError) -> RemoteError:
    """After a switch whose daemon did not come back: the previous bundle active again, the daemon on it."""
    failed_step = result.step
    try:
        result.step = "rollback"
        try:
            agent.call("rollback", "rollback")
        except RemoteError:  # rolled back anyway (e.g. the connection dropped after the switch)?
            if _active(_status(agent)) != result.old:
                raise
        daemon.take(agent, result.old or "", result, "previous bundle")
    except RemoteError as exc:
        return RemoteError(f"{cause}; then the rollback failed too: {exc}")
    result.step = failed_step
    return RemoteError(f"{cause}; rolled back to the previous bundle {(result.old or '')[:12]}")


def rollout(bundle: Path, robots: Sequence[Robot], options: SSHOptions, *, backend: str = "auto",
            device: str = "cpu", smoke_timeout_s: float = 600.0, parallel: int = 4, canary: int = 0,
            daemon: Daemon = Daemon(), say: Say = print) -> list[RobotResult]:
    """Flash ``bundle`` to ``robots``: ``canary`` of them first, the rest only if every canary succeeded."""
    plan = FlashPlan.of(Path(bundle))
    say(f"bundle {plan.manifest.bundle_id} ({plan.manifest.embodiment}, {plan.manifest.precision}) verified; "
        f"flashing {len(robots)} robot(s)" + (f", {canary} canary first" if canary else ""))
    results: dict[int, RobotResult] = {}

    def run(indices: Sequence[int]) -> None:
        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            for i, res in zip(indices, pool.map(lambda i: flash_robot(plan, Agent(robots[i], options), backend=backend,
                                                                      device=device, smoke_timeout_s=smoke_timeout_s,
                                                                      say=say, daemon=daemon), indices)):
                results[i] = res

    first = list(range(min(canary, len(robots))))
    run(first)
    if all(results[i].result == "ok" for i in first):
        run(list(range(len(first), len(robots))))
    else:
        say(f"a canary failed: the other {len(robots) - len(first)} robot(s) are left as they are")
    return [results.get(i, RobotResult(str(robots[i]), error="not flashed: a canary failed")) for i in range(len(robots))]


def table(results: Sequence[RobotResult]) -> str:
    """The summary: one line per robot."""
    def seconds(value: Optional[float]) -> str:
        return "-" if value is None else f"{value:.1f} s"

    rows = [("robot", "result", "old → new bundle", "sent", "engines", "smoke test", "time", "step / error")]
    for r in results:
        engines = "-" if r.engines is None else (f"built {seconds(r.build_s)}" if r.engines else "none")
        rows.append((r.robot, r.result, f"{(r.old or '-')[:12]} → {(r.new or '-')[:12]}", f"{r.sent_bytes / 1e6:.1f} MB",
                     engines, seconds(r.smoke_s), seconds(r.seconds), r.error or r.step))
    widths = [max(len(row[k]) for row in rows) for k in range(7)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row[:7], widths)) + "  " + row[7] for row in rows)
