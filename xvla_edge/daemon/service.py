"""The on-robot daemon: cameras → policy → control loop, watched by health, metrics, recorder and systemd.

Three kinds of work run side by side:

- the **control loop** in its own process (:mod:`drivers.loop_process`): streams the executing chunk at the
  control rate through the safety envelope, holds when no fresh trajectory covers now, pings the systemd
  watchdog from its tick;
- **inference** on a worker thread (:meth:`runtime.policy.Policy.act_async`): the next chunk is started when
  the executing one has ``inference.start_fraction`` of its span left, so in steady state the arm never
  waits for the model; each chunk carries the time stamp of its observation (the oldest camera frame),
  and the control loop splices it in at its latency;
- this **supervisor** (the caller's thread, :meth:`Daemon.run`): polls the loop's state at ``POLL_S``,
  checks camera ages, starts and collects inference, updates metrics and health, feeds the recorder.

Safe states: a stale camera (no frame younger than its ``max_age_s``) → the loop drops the executing chunk
and holds, and no inference starts until every camera is fresh again; an inference stall → the chunk runs
out and the watchdog holds; a link loss → the loop sends nothing (the controller's own deadman holds) and
the supervisor asks it to reconnect every ``RECONNECT_S``; a policy server (``[policy]``) out of reach or
too slow → hold at once, and a new attempt every ``RECONNECT_S`` until it answers (an outage, however long,
is not a fault that ends the daemon); SIGTERM/SIGINT → :meth:`Daemon.close` stops the
loop, which holds the arm before the process exits (during start-up: start-up stops at the next phase).
Faults (and stale cameras, inference errors) dump the recorder when ``recorder.on_fault`` is set.

Faults the daemon cannot recover from in-process end in a :class:`DaemonFault`, logged as one JSON line with
its ``event``, and the command exits with the fault's ``exit_code`` so systemd restarts it:

- the control-loop process dies or stops answering (:class:`ControlLoopLost`, exit 3): noticed within one
  ``POLL_S`` pass (a dead process) or the stats timeout (a stuck one, which is then told to hold over its
  pipe and stopped). A dead process took the arm link with it, so nothing can be sent; the controller's own
  deadman (``[arm].timeout_ms``) holds the arm, and the log says so with its timeout;
- inference fails ``MAX_INFERENCE_FAILURES`` times in a row, by raising or by its worker thread dying
  (:class:`InferenceFailing`, exit 4): the loop is told to hold first.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from drivers import registry, sdnotify
from drivers.control_loop import LoopStats
from drivers.loop_process import ControlLoopClient, ControlLoopError
from xvla_edge.daemon.bridge import check_arm, chunk_to_trajectory, proprio_from_state
from xvla_edge.daemon.cameras import Camera, open_camera
from xvla_edge.daemon.config import RobotConfig
from xvla_edge.daemon.control import (COMMANDS, CommandRefused, ControlServer, check_instruction, check_seconds, claim,
                                      estop_socket_path)
from xvla_edge.daemon.health import HealthServer, Operator
from xvla_edge.daemon.metrics import DaemonMetrics
from xvla_edge.daemon.recorder import Recorder, RecorderError
from runtime.policy import Policy
from runtime.remote import RemotePolicy, RemoteUnavailable
from runtime.types import ActionChunk, Observation
from xvla.errors import InputError, XVLAError
from xvla.extras import needs

POLL_S = 0.02
RECONNECT_S = 1.0
TRACE_EVERY_S = 1.0
FAULT_MODES = ("fault", "estopped", "link_lost")
MAX_INFERENCE_FAILURES = 5  # in a row: then hold and exit (InferenceFailing)
log = logging.getLogger("xvla.daemon")


class DaemonFault(XVLAError):
    """A fault the daemon does not recover from in-process; ``xvla-edge run`` exits with ``exit_code``
    (non-zero: systemd's ``Restart=on-failure`` restarts it) after logging ``event``."""

    exit_code = 1
    event = "fault"


class ControlLoopLost(DaemonFault):
    """The control-loop process died or stopped answering."""

    exit_code = 3
    event = "control_loop_lost"


class InferenceFailing(DaemonFault):
    """Inference failed ``MAX_INFERENCE_FAILURES`` times in a row (raised, or its worker thread died)."""

    exit_code = 4
    event = "inference_failing"


class StartupInterrupted(XVLAError):
    """SIGTERM/SIGINT arrived during :meth:`Daemon.start`; start-up stopped at the next phase (not a fault)."""


def deadman_ms(config: RobotConfig) -> Optional[int]:
    """The controller deadman the arm was configured with (``[arm].timeout_ms``, else the driver's default), in
    ms; None when the driver has none (the simulated arm) or leaves it to the controller (0)."""
    driver = registry.lookup(config.arm.driver)
    option = next((o for o in driver.options if o.name == "timeout_ms"), None)
    if option is None:
        return None
    value = config.arm.options.get("timeout_ms")
    if value is None:
        value = inspect.signature(driver.arm).parameters[option.argument or option.name].default
    return int(value) or None


@dataclass
class Summary:
    """What a run did, for the demo and for logs. Times in seconds."""

    seconds: float
    chunks: int
    chunk_latency_p50: float
    chunk_latency_p99: float
    interval_error_p50: float
    interval_error_p99: float
    interval_error_max: float
    interval_window: int
    missed_deadlines: int
    ticks: int
    clamps: int
    holds: int
    camera_stalls: int
    inference_errors: int
    mode: str
    scheduler: str
    interventions: Dict[str, int] = field(default_factory=dict)
    events: Dict[str, int] = field(default_factory=dict)

    def lines(self) -> List[str]:
        ms = 1e3
        return [
            f"ran {self.seconds:.1f} s, control loop {self.scheduler}, final mode {self.mode}",
            f"chunks: {self.chunks}, latency p50 {self.chunk_latency_p50 * ms:.1f} ms, "
            f"p99 {self.chunk_latency_p99 * ms:.1f} ms",
            f"control tick interval error (last {self.interval_window} intervals, missed deadlines included): "
            f"p50 {self.interval_error_p50 * ms:.3f} ms, p99 {self.interval_error_p99 * ms:.3f} ms, "
            f"max {self.interval_error_max * ms:.3f} ms; missed deadlines {self.missed_deadlines} of "
            f"{self.ticks + self.missed_deadlines}",
            f"safety clamps: {self.clamps} ({', '.join(f'{k} {v}' for k, v in self.interventions.items() if v) or 'none'})",
            f"watchdog holds: {self.holds}, camera stalls: {self.camera_stalls}, inference errors: {self.inference_errors}",
        ]


def load_policy(cfg: RobotConfig) -> Union[Policy, RemotePolicy]:
    """The configured policy: the ``[bundle]`` on this computer, or the ``[policy]`` server's."""
    if cfg.remote is None:
        assert cfg.bundle is not None
        return Policy.load(cfg.bundle.path, backend=cfg.bundle.backend, device=cfg.bundle.device)
    with needs("remote"):
        import msgpack  # noqa: F401
        import websockets  # noqa: F401
    r = cfg.remote
    return RemotePolicy(r.url, domain_id=r.domain_id, token=r.token, timeout_s=r.timeout_s,
                        connect_timeout_s=r.connect_timeout_s)


class Daemon:
    """One robot's daemon. ``start`` → ``run`` (until ``stop`` is set or ``duration`` passes) → ``close``.

    ``policy`` and ``cameras`` (slot → camera) may be given ready-made (tests, the demo); otherwise they are
    built from ``config``.
    """

    def __init__(
        self,
        config: RobotConfig,
        *,
        policy: Optional[Union[Policy, RemotePolicy]] = None,
        cameras: Optional[Dict[int, Camera]] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.policy = policy
        self.cameras = cameras
        self.clock = clock
        self.metrics = DaemonMetrics(cameras=[cam.name for cam in config.cameras])
        self.recorder = Recorder(config.recorder.seconds, config.recorder.directory, bundle=config.source)
        self.loop: Optional[ControlLoopClient] = None
        self.health_server: Optional[HealthServer] = None
        self.latencies: deque = deque(maxlen=10_000)
        self.stats: Optional[LoopStats] = None
        self._future: Optional[Future] = None
        self._future_obs: Optional[Observation] = None
        self._future_started = 0.0
        self._executing_end: Optional[float] = None
        self._stale: Dict[str, float] = {}
        self._camera_stalls = 0
        self._inference_errors = 0
        self._failures_in_a_row = 0
        self._last_error: Tuple[float, str] = (-np.inf, "")
        self._last_reconnect = -np.inf
        self._retry_at = -np.inf
        self._outage_since: Optional[float] = None
        self._last_trace = -np.inf
        self._mode = "idle"
        self._started = 0.0
        self._lock = threading.Lock()
        # operator state (xvla_edge.daemon.control): changed by commands, read by the supervisor
        self.instruction = config.instruction
        self.control_server: Optional[ControlServer] = None
        self._operator = "running" if config.operator.autostart else "stopped"
        self._episode: Dict[str, Optional[float]] = {"number": 1 if config.operator.autostart else 0,
                                                     "started": None, "ends": None}
        self._generation = 0  # bumped by hold, stop and e-stop: older chunks are dropped
        self._future_generation = 0
        self._estops = 0  # e-stops so far: a clear-estop that raced with a new one keeps it
        self._cleared_at_tick = -1  # the loop's tick count when the last clear-estop was seen to hold
        self._faults: deque = deque(maxlen=20)
        self._dump_due: Optional[str] = None  # a fault's recording, written by the supervisor thread
        self._commands = threading.Lock()  # one operator command at a time (the e-stop never waits for it)
        self._state = threading.Lock()  # operator state changes: held briefly, the e-stop's only wait

    # -- life cycle -------------------------------------------------------------------------------------

    def start(self, stop: Optional[threading.Event] = None) -> None:
        """Load the policy, open cameras, start the control loop, serve health; then tell systemd READY.

        When ``stop`` is set meanwhile (SIGTERM), raises :class:`StartupInterrupted` at the next phase; the
        caller's :meth:`close` then holds the arm if the loop had started.
        """
        cfg = self.config

        def phase(name: str) -> None:
            if stop is not None and stop.is_set():
                raise StartupInterrupted(f"stop requested during start-up, before {name}")

        phase("loading the policy")
        if self.policy is None:
            self.policy = load_policy(cfg)
        manifest = self.policy.manifest
        self.metrics.set_bundle(bundle_id=manifest.bundle_id, embodiment=manifest.embodiment,
                                domain=manifest.domain_id, precision=manifest.precision,
                                backend=cfg.bundle.backend if cfg.bundle is not None else "remote")
        phase("opening the cameras")
        if self.cameras is None:
            self.cameras = {cam.slot: open_camera(cam) for cam in cfg.cameras}
        views = int(manifest.inputs["views"])
        extra = [slot for slot in self.cameras if slot >= views]
        if extra:
            raise ValueError(f"camera slot {extra[0]}: the bundle {cfg.source} was exported for {views} view(s)")
        for camera in self.cameras.values():
            camera.start()
        phase("starting the control loop")
        operator = cfg.operator
        if operator.socket is not None:
            claim(operator.socket)  # before the loop replaces the e-stop socket beside it: never a live daemon's
        self.loop = ControlLoopClient(cfg.arm_factory(), cfg.loop_config(), estop_group=operator.socket_group,
                                      estop_socket=None if operator.socket is None else estop_socket_path(operator.socket))
        caps = self.loop.start()
        try:
            check_arm(manifest.action, caps.space, caps.n_arms, caps.n_joints)
        except ValueError:
            self.close()
            raise
        phase("serving health")
        if cfg.health.port:
            self.health_server = HealthServer(cfg.health.host, cfg.health.port, self.health, self.metrics.render,
                                              on_record=lambda: str(self.recorder.dump("request")),
                                              token=cfg.health.token,
                                              operator=Operator(self.status, self.series, self.camera_png,
                                                                self.execute),
                                              bundle_id=lambda: self.policy.manifest.bundle_id
                                              if self.policy is not None else None)
        if cfg.operator.socket is not None:
            phase("opening the control socket")
            self.control_server = ControlServer(cfg.operator.socket, self.execute, cfg.operator.socket_group)
        phase("telling systemd READY")
        self._started = self.clock()
        sdnotify.ready()
        log.info("daemon ready", extra={"event": "ready", "bundle": cfg.source,
                                        "bundle_id": manifest.bundle_id, "arm": caps.space,
                                        "health_port": self.health_server.port if self.health_server else 0})

    def close(self) -> Optional[LoopStats]:
        """Stop everything; the control loop holds the arm before its process exits. Never raises."""
        sdnotify.stopping()
        final = None
        if self.loop is not None:
            final = self.loop.stop()
            self.stats = final or self.stats
        for camera in (self.cameras or {}).values():
            camera.stop()
        if self.health_server is not None:
            self.health_server.close()
            self.health_server = None
        if self.control_server is not None:
            self.control_server.close()
            self.control_server = None
        if self.policy is not None:
            self.policy.close()
        log.info("daemon stopped; arm holding", extra={"event": "stopped"})
        return final

    # -- the supervisor ---------------------------------------------------------------------------------

    def run(self, stop: threading.Event, duration: Optional[float] = None) -> Summary:
        """Supervise until ``stop`` is set (SIGTERM) or ``duration`` seconds passed; returns the summary.
        Raises a :class:`DaemonFault` (after logging it) when a fault ends the run."""
        assert self.loop is not None and self.policy is not None, "call start() first"
        end = None if duration is None else self.clock() + duration
        while not stop.is_set() and (end is None or self.clock() < end):
            self.step()
            stop.wait(POLL_S)
        return self.summary()

    def step(self) -> None:
        """One supervisor pass (also used by tests to drive the daemon). Raises a :class:`DaemonFault`."""
        try:
            self._step()
        except ControlLoopError as exc:
            raise self._loop_lost(exc) from exc
        finally:
            self._dump_if_due()

    def _step(self) -> None:
        assert self.loop is not None
        now = self.clock()
        if not self.loop.running:
            raise ControlLoopError("the control-loop process exited")
        self.stats = self.loop.stats()
        self._watch_loop(self.stats, now)
        frames = self._frames(now)
        self._end_episode_if_due(now)
        if self._future is not None:
            self._collect(now)
        elif (frames is not None and self._operator == "running" and self._mode not in FAULT_MODES
              and self._due(now) and now >= self._retry_at):
            try:
                self._start_inference(frames, self.stats)
            except RuntimeError as exc:  # the worker thread cannot be started or its executor is gone
                self._inference_failed(exc)
        if now - self._last_trace >= TRACE_EVERY_S:
            self.recorder.add_commands(self.loop.trace())
            self._last_trace = now

    def _watch_loop(self, stats: LoopStats, now: float) -> None:
        mode = stats.mode
        if mode != self._mode:
            log.info("control loop mode %s", mode, extra={"event": "mode", "mode": mode, "previous": self._mode})
            if mode in FAULT_MODES:
                self._fault(f"control loop {mode}: {stats.last_error}")
            self._mode = mode
        if mode == "estopped":  # latched in the loop by the e-stop socket or the controller's own input
            with self._state:  # (stats from before a clear-estop that succeeded do not count)
                if self._operator != "estopped" and stats.timing.get("ticks", 0) > self._cleared_at_tick:
                    self._drop_motion("estopped")
                    self._estops += 1
                    log.info("e-stop latched in the control loop (its e-stop socket or the controller's input)",
                             extra={"event": "estop_seen"})
        if mode == "link_lost" and now - self._last_reconnect >= RECONNECT_S:
            self.loop.reconnect()  # type: ignore[union-attr]
            self._last_reconnect = now
        self.metrics.observe_loop(stats)

    def _frames(self, now: float) -> Optional[Dict[int, "object"]]:
        """Every camera's latest frame, or None (and the arm held) when any is missing or stale."""
        frames, stale = {}, {}
        for cam_cfg in self.config.cameras:
            camera = self.cameras[cam_cfg.slot]  # type: ignore[index]
            frame = camera.latest()
            age = np.inf if frame is None else now - frame.timestamp
            self.metrics.camera_age(camera.name, age)
            if age > cam_cfg.max_age_s:
                stale[camera.name] = age
            frames[cam_cfg.slot] = frame
        newly = set(stale) - set(self._stale)
        if newly:
            self._camera_stalls += len(newly)
            for name in newly:
                self.metrics.camera_stale(name)
            self.loop.hold()  # type: ignore[union-attr]
            self._executing_end = None
            self._fault(f"camera stale: {', '.join(sorted(newly))}")
        self._stale = stale
        return None if stale else frames

    def _due(self, now: float) -> bool:
        if self._executing_end is None:
            return True
        span = float(self.policy.manifest.action["chunk_seconds"])  # type: ignore[union-attr]
        return now >= self._executing_end - self.config.inference.start_fraction * span

    def _start_inference(self, frames: Dict[int, "object"], stats: LoopStats) -> None:
        if stats.last_state is None:
            return
        policy = self.policy
        assert policy is not None
        manifest = policy.manifest
        images: List[Optional[np.ndarray]] = [None, None, None]
        for slot, frame in frames.items():
            images[slot] = frame.image  # type: ignore[attr-defined]
        proprio = proprio_from_state(stats.last_state, manifest.action, policy.state_dim)
        obs = Observation(images=images, instruction=self.instruction, proprio=proprio,
                          timestamp=min(f.timestamp for f in frames.values()))  # type: ignore[attr-defined]
        self.recorder.add_observation(obs.timestamp, images, proprio, obs.instruction, int(manifest.domain_id))
        self._future = policy.act_async(obs, steps=self.config.steps)
        self._future_generation = self._generation
        self._future_obs = obs
        self._future_started = self.clock()

    def _collect(self, now: float) -> None:
        future, obs = self._future, self._future_obs
        assert future is not None and obs is not None
        if not future.done():
            return
        self._future = None
        try:
            chunk: ActionChunk = future.result()
            trajectory = chunk_to_trajectory(chunk)
        except BaseException as exc:  # noqa: B902 - raised in the worker thread (even SystemExit): a failed chunk
            self._inference_failed(exc)
            return
        self._failures_in_a_row = 0
        if self._outage_since is not None:
            log.info("policy server back after %.1f s", now - self._outage_since,
                     extra={"event": "policy_server_back", "url": self.config.source})
            self._outage_since = None
        latency = self.clock() - obs.timestamp
        self.latencies.append(latency)
        backend = getattr(self.policy, "backend", None)  # a RemotePolicy has none
        self.metrics.chunk(latency, graph_fallback=getattr(backend, "graph_fallback", None) is not None)
        self.recorder.add_chunk(obs.timestamp, chunk.actions, latency)
        if self._stale:
            return  # a camera went stale while the model ran: do not start moving on what it saw
        with self._state:  # a hold or e-stop lands before this check or after the submit, never between
            if self._future_generation != self._generation or self._operator != "running":
                return  # held, stopped or e-stopped while the model ran
            self.loop.submit(trajectory, obs.timestamp)  # type: ignore[union-attr]
            self._executing_end = float(chunk.timestamps[-1])
        log.debug("chunk", extra={"event": "chunk", "latency_s": round(latency, 4)})

    def _inference_failed(self, exc: BaseException) -> None:
        """Count a failed inference (the chunk runs out and the watchdog holds); hold and raise
        :class:`InferenceFailing` after ``MAX_INFERENCE_FAILURES`` in a row. A policy server out of reach is
        an outage instead (:meth:`_outage`)."""
        if isinstance(exc, RemoteUnavailable):
            self._outage(exc)
            return
        if isinstance(exc, InputError):
            self._refused_input(exc)
            return
        self._inference_errors += 1
        self._failures_in_a_row += 1
        self.metrics.inference_error()
        what = f"{type(exc).__name__}: {exc}"
        log.error("inference failed: %s", what, extra={"event": "inference_error"})
        self._fault(f"inference error: {what}")
        if self._failures_in_a_row >= MAX_INFERENCE_FAILURES:
            self.loop.hold()  # type: ignore[union-attr]
            message = (f"inference failed {self._failures_in_a_row} times in a row (last: {what}); "
                       "the control loop holds the arm")
            log.error(message, extra={"event": InferenceFailing.event, "failures": self._failures_in_a_row})
            raise InferenceFailing(message)

    def _refused_input(self, exc: InputError) -> None:
        """The policy refused the observation (e.g. a state the arm reported that it cannot take): hold, say why
        in health and the log, try again every ``RECONNECT_S``; the daemon keeps running (it is the input, not
        the model, that failed)."""
        now = self.clock()
        self.loop.hold()  # type: ignore[union-attr]
        self._executing_end = None
        self._retry_at = now + RECONNECT_S
        self._inference_errors += 1
        self.metrics.inference_error()
        log.error("observation refused by the policy: %s; holding the arm", exc, extra={"event": "input_refused"})
        self._fault(f"inference error: observation refused: {exc}")

    def _outage(self, exc: RemoteUnavailable) -> None:
        """The policy server cannot be reached or did not answer in time: hold now (the executing chunk is
        dropped), try again every ``RECONNECT_S``, for as long as it takes; never a reason to exit."""
        now = self.clock()
        self.loop.hold()  # type: ignore[union-attr]
        self._executing_end = None
        self._retry_at = now + RECONNECT_S
        self._inference_errors += 1
        self.metrics.inference_error()
        if self._outage_since is None:
            self._outage_since = now
            log.error("policy server unavailable (%s); holding the arm, retrying every %.0f s", exc, RECONNECT_S,
                      extra={"event": "policy_server_lost", "url": self.config.source})
            self._fault(f"inference error: policy server unavailable: {exc}")
        else:
            self._last_error = (now, f"inference error: policy server unavailable for {now - self._outage_since:.0f} s")

    def _loop_lost(self, exc: ControlLoopError) -> ControlLoopLost:
        """The control-loop process is dead or does not answer: hold through what is left, log it, name it."""
        loop = self.loop
        assert loop is not None
        held = False
        if loop.running:
            try:
                loop.hold()  # stuck but still reading its pipe?
                held = True
            except ControlLoopError:  # the pipe is broken: the process is on its way out
                end = time.monotonic() + 1.0
                while loop.running and time.monotonic() < end:
                    time.sleep(0.01)
        status = _exit_status(loop.exitcode)
        if loop.running:
            loop.stop(timeout=1.0)  # ends with SIGTERM, on which the loop holds the arm as it exits
        deadman = deadman_ms(self.config)
        if held:
            arm = "told it to hold over its pipe, then stopped it"
        else:
            arm = ("the arm link lived in that process, so nothing can be sent; the controller's deadman holds the "
                   + (f"arm within {deadman} ms" if deadman else "arm (its timeout is the controller's)"))
        message = f"control loop lost ({status}): {str(exc).splitlines()[0]}; {arm}"
        log.error(message, extra={"event": ControlLoopLost.event, "held_by": "control loop" if held else "deadman",
                                  "deadman_ms": deadman, "detail": str(exc)})
        self._fault(message)
        return ControlLoopLost(message)

    # -- operator commands (xvla_edge.daemon.control) ------------------------------------------------------

    def execute(self, request: Dict[str, object]) -> Dict[str, object]:
        """Run one operator command (any thread; one at a time, except ``estop``, which never waits for another
        command); the reply with the resulting state."""
        name = request.get("command")
        if name == "estop":
            return self._estop()
        with self._commands:
            try:
                handler = getattr(self, "_cmd_" + str(name).replace("-", "_"), None)
                if handler is None:
                    raise CommandRefused(f"unknown command {name!r}; commands: {', '.join(COMMANDS)}")
                result = handler(request)
            except CommandRefused as exc:
                log.info("command %s refused: %s", name, exc, extra={"event": "command_refused", "command": name})
                return {"ok": False, "error": str(exc), "state": self.status()}
            except ControlLoopError as exc:
                return {"ok": False, "error": f"the control loop does not answer: {exc}", "state": self.status()}
            if name != "status":
                log.info("command %s", name, extra={"event": "command", "command": name, **(result or {})})
            return {"ok": True, "state": self.status(), **({"result": result} if result else {})}

    def _drop_motion(self, operator: str) -> None:
        """Under ``_state``: the operator state becomes ``operator`` and chunks in flight are dropped; the caller
        then tells the loop to hold (outside the lock: an e-stop never waits for the pipe)."""
        self._operator = operator
        self._executing_end = None
        self._generation += 1

    def _cmd_status(self, request: Dict[str, object]) -> None:
        return None

    def _cmd_instruction(self, request: Dict[str, object]) -> Dict[str, object]:
        text = check_instruction(request.get("text"))
        previous, self.instruction = self.instruction, text
        return {"instruction": text, "previous": previous}

    def _cmd_start(self, request: Dict[str, object]) -> Dict[str, object]:
        seconds = check_seconds(request.get("seconds"))
        with self._state:
            if self._operator == "estopped":
                raise CommandRefused("start: the e-stop is latched; clear-estop first")
            if self._operator in ("running", "held"):
                raise CommandRefused(f"start: episode {self._episode['number']} is {self._operator}; stop it first")
            now = self.clock()
            self._episode = {"number": (self._episode["number"] or 0) + 1, "started": now,
                             "ends": None if seconds is None else now + seconds}
            self._operator = "running"
            return {"episode": self._episode["number"], "seconds": seconds}

    def _cmd_stop(self, request: Dict[str, object]) -> Dict[str, object]:
        with self._state:
            if self._operator not in ("running", "held"):
                raise CommandRefused(f"stop: no episode is running (operator state {self._operator})")
            self._drop_motion("stopped")
        self.loop.hold()  # type: ignore[union-attr]
        return {"episode": self._episode["number"]}

    def _cmd_hold(self, request: Dict[str, object]) -> None:
        with self._state:
            if self._operator != "running":
                raise CommandRefused(f"hold: nothing is running (operator state {self._operator})")
            self._drop_motion("held")
        self.loop.hold()  # type: ignore[union-attr]

    def _cmd_resume(self, request: Dict[str, object]) -> None:
        with self._state:
            if self._operator == "estopped":
                raise CommandRefused("resume: the e-stop is latched; clear-estop first")
            if self._operator != "held":
                raise CommandRefused(f"resume: nothing is held (operator state {self._operator}"
                                     + ("; start an episode" if self._operator == "stopped" else "") + ")")
            self._operator = "running"

    def _estop(self) -> Dict[str, object]:
        """The e-stop's own path (any thread, never behind another command): the loop first, then the state."""
        error = None
        try:
            self.loop.estop()  # type: ignore[union-attr]  # a counter the loop reads before its next tick
        except ControlLoopError as exc:  # the loop is gone: the controller's deadman holds the arm
            error = f"the control loop does not answer: {exc}"
        with self._state:
            self._drop_motion("estopped")
            self._estops += 1
        self._fault("e-stop by the operator")
        log.info("command estop", extra={"event": "command", "command": "estop"})
        if error is not None:
            return {"ok": False, "error": error, "state": self.status()}
        return {"ok": True, "state": self.status()}

    def _cmd_clear_estop(self, request: Dict[str, object]) -> None:
        with self._state:
            if self._operator != "estopped":
                raise CommandRefused(f"clear-estop: the e-stop is not latched (operator state {self._operator})")
            estops = self._estops
        loop = self.loop
        assert loop is not None
        loop.clear_estop()
        ticks = loop.stats().timing.get("ticks", 0)  # answered after the clear: the loop handles messages in order
        end = time.monotonic() + 2.0
        stats = loop.stats()
        while stats.timing.get("ticks", 0) < ticks + 2 and time.monotonic() < end:  # ticks that saw the clear
            time.sleep(0.005)
            stats = loop.stats()
        with self._state:
            if self._estops != estops:  # a new e-stop while clearing: it stays latched, in the loop too
                loop.estop()
                raise CommandRefused("clear-estop: another e-stop arrived while clearing; it stays latched")
            if stats.mode == "estopped":
                raise CommandRefused("clear-estop: the arm still reports its e-stop"
                                     + (f" ({stats.last_error})" if stats.last_error else "")
                                     + "; release it there first")
            self._operator = "held"
            self._cleared_at_tick = int(stats.timing.get("ticks", 0))

    def _cmd_record(self, request: Dict[str, object]) -> Dict[str, object]:
        try:
            return {"path": str(self.recorder.dump("request"))}
        except RecorderError as exc:
            raise CommandRefused(f"record: {exc}") from None

    def _end_episode_if_due(self, now: float) -> None:
        ends = self._episode["ends"]
        if ends is None or now < ends:
            return
        with self._state:
            if self._operator not in ("running", "held"):
                return
            self._drop_motion("stopped")
        self.loop.hold()  # type: ignore[union-attr]
        log.info("episode %s ended (time limit)", self._episode["number"],
                     extra={"event": "episode_end", "episode": self._episode["number"]})

    def status(self) -> Dict[str, object]:
        """What ``xvla-edge ctl status`` shows."""
        stats, manifest = self.stats, self.policy.manifest if self.policy is not None else None
        health, reasons = self.health()
        lat = np.array(self.latencies) if self.latencies else None
        timing = stats.timing if stats else {}
        return {
            "mode": stats.mode if stats else "starting", "operator": self._operator,
            "bundle_id": manifest.bundle_id if manifest else None,
            "embodiment": manifest.embodiment if manifest else None, "source": self.config.source,
            "instruction": self.instruction, "episode": dict(self._episode), "health": health, "reasons": reasons,
            "faults": [{"time": t, "reason": r} for t, r in list(self._faults)[-10:]],
            "chunks": len(self.latencies),
            "chunk_latency_p50_s": None if lat is None else float(np.percentile(lat, 50)),
            "chunk_latency_p99_s": None if lat is None else float(np.percentile(lat, 99)),
            "ticks": int(timing.get("ticks", 0)), "missed_deadlines": int(timing.get("missed_deadlines", 0)),
            "interval_error_p99_s": timing.get("interval_error_p99"),
            "cameras": sorted(self.cameras or {}),
        }

    def series(self, seconds: float = 5.0, points: int = 400) -> Dict[str, object]:
        """For the status page: commanded and measured positions (first arm) over the last ``seconds``
        (at most ``points`` of them), chunk-latency and tick-interval histograms."""
        trace = self.loop.trace()  # type: ignore[union-attr]
        t = trace["time"]
        keep = np.flatnonzero(t >= t[-1] - seconds) if len(t) else np.zeros(0, int)
        keep = keep[:: max(1, len(keep) // points)]
        lat = np.array(self.latencies, float) if self.latencies else np.zeros(0)
        hist = self.stats.interval_histogram if self.stats is not None else None
        return {"time": (t[keep] - (t[-1] if len(t) else 0.0)).tolist(),
                "command": trace["command"][keep, :3].tolist(), "measured": trace["measured"][keep, :3].tolist(),
                "chunk_latency": _histogram(lat, 12, "s"), "tick_interval_ms": _cumulative_to_bins(hist)}

    def camera_png(self, slot: int, width: int = 160) -> Optional[bytes]:
        """The camera in ``slot``'s latest frame, ``width`` pixels wide, as PNG (None: no such camera or frame)."""
        import io

        from PIL import Image

        camera = (self.cameras or {}).get(slot)
        frame = camera.latest() if camera is not None else None
        if frame is None:
            return None
        img = Image.fromarray(frame.image)
        img = img.resize((width, max(1, round(img.height * width / img.width))), Image.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()

    def _fault(self, reason: str) -> None:
        """Note a fault (any thread); its recording (``recorder.on_fault``) is written by the supervisor at the end
        of its pass, so a command thread never waits for the disk."""
        self._last_error = (self.clock(), reason)
        self._faults.append((time.time(), reason))
        log.warning(reason, extra={"event": "fault"})
        if self.config.recorder.on_fault and self._dump_due is None:
            self._dump_due = reason

    def _dump_if_due(self) -> None:
        reason, self._dump_due = self._dump_due, None
        if reason is None:
            return
        try:
            path = self.recorder.dump(reason.split(":")[0].replace(" ", "-"), force=False)
        except Exception as exc:  # noqa: BLE001 - a full disk must not stop the daemon
            log.error("recorder dump failed: %s", exc, extra={"event": "recorder_error"})
        else:
            if path is not None:
                log.info("recorder dump %s", path, extra={"event": "recording", "path": str(path)})

    # -- reporting --------------------------------------------------------------------------------------

    def health(self) -> Tuple[str, List[str]]:
        """``("ok", [])`` or ``("degraded", reasons)``, for ``/healthz``."""
        reasons = []
        now = self.clock()
        if self.loop is None or not self.loop.running:
            reasons.append("control loop not running")
        if self._mode in FAULT_MODES:
            reasons.append(f"control loop {self._mode}")
        reasons += [f"camera {name} stale ({age:.2f} s)" for name, age in sorted(self._stale.items())]
        max_latency = self.config.inference.max_latency_s
        if self._future is not None and now - self._future_started > max_latency:
            reasons.append(f"inference stalled ({now - self._future_started:.1f} s)")
        elif self.latencies and self.latencies[-1] > max_latency:
            reasons.append(f"chunk latency {self.latencies[-1]:.2f} s over {max_latency} s")
        when, error = self._last_error
        if now - when < 10.0 and error.startswith("inference"):
            reasons.append(error)
        return ("degraded", reasons) if reasons else ("ok", [])

    def summary(self, timing: Optional[Dict[str, float]] = None) -> Summary:
        """The run so far. ``timing`` replaces the last polled loop timing (the demo passes the one taken
        with its trace, so the printed figures and the plotted intervals come from one window)."""
        stats = self.stats
        if timing is None:
            timing = stats.timing if stats else {}
        interventions = {k: v for k, v in (stats.interventions if stats else {}).items() if k != "commands"}
        events = stats.events if stats else {}
        lat = np.array(self.latencies) if self.latencies else np.zeros(1)
        return Summary(
            seconds=self.clock() - self._started,
            chunks=len(self.latencies),
            chunk_latency_p50=float(np.percentile(lat, 50)),
            chunk_latency_p99=float(np.percentile(lat, 99)),
            interval_error_p50=float(timing.get("interval_error_p50", np.nan)),
            interval_error_p99=float(timing.get("interval_error_p99", np.nan)),
            interval_error_max=float(timing.get("interval_error_max_all", np.nan)),
            interval_window=int(timing.get("window", 0)),
            missed_deadlines=int(timing.get("missed_deadlines", 0)),
            ticks=int(timing.get("ticks", 0)),
            clamps=int(sum(interventions.values())),
            holds=int(events.get("mode_holding", 0)),
            camera_stalls=self._camera_stalls,
            inference_errors=self._inference_errors,
            mode=stats.mode if stats else "unknown",
            scheduler=stats.scheduler if stats else "unknown",
            interventions=interventions,
            events=dict(events),
        )


def _histogram(values: np.ndarray, bins: int, unit: str) -> Dict[str, list]:
    if not len(values):
        return {"edges": [0.0, 1.0], "counts": [0], "unit": unit}
    counts, edges = np.histogram(values, bins=bins)
    return {"edges": [round(float(e), 4) for e in edges], "counts": counts.tolist(), "unit": unit}


def _cumulative_to_bins(hist: Optional[Dict[str, object]]) -> Dict[str, list]:
    """The loop's cumulative tick-interval histogram as bins in milliseconds."""
    if not hist:
        return {"edges": [0.0, 1.0], "counts": [0], "unit": "ms"}
    bounds = [round(b * 1e3, 3) for b in hist["bounds"]]  # type: ignore[union-attr]
    cumulative = list(hist["counts"])  # type: ignore[arg-type]
    counts = [cumulative[0]] + [b - a for a, b in zip(cumulative, cumulative[1:])]
    return {"edges": [0.0, *bounds], "counts": counts[: len(bounds)], "unit": "ms",
            "over": int(cumulative[-1] - cumulative[len(bounds) - 1])}  # longer than the last bound


def _exit_status(code: Optional[int]) -> str:
    """A process exit code in words (negative: killed by that signal)."""
    if code is None:
        return "not answering"
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"
