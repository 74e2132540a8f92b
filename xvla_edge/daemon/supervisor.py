"""The daemon's supervisor: start-up, the supervisor's passes (:meth:`Supervisor.run`) and shut-down.

A pass polls the control loop's state, watches its mode (reconnecting a lost arm link every ``RECONNECT_S``),
checks camera ages, ends an episode at its time limit, starts and collects inference (the next chunk when the
executing one has ``inference.start_fraction`` of its span left; a chunk from before a hold, stop or e-stop is
dropped), feeds the recorder, and writes a fault's recording at its end.

Faults the daemon cannot recover from in-process end in a :class:`DaemonFault`, logged as one JSON line with
its ``event``, and the command exits with the fault's ``exit_code`` so systemd restarts it:

- the control-loop process dies or stops answering (:class:`ControlLoopLost`, exit 3): noticed within one
  ``POLL_S`` pass (a dead process) or the stats timeout (a stuck one, which is then told to hold over its
  pipe and stopped). A dead process took the arm link with it, so nothing can be sent; the controller's own
  deadman (``[arm].timeout_ms``) holds the arm, and the log says so with its timeout;
- inference fails ``MAX_INFERENCE_FAILURES`` times in a row, by raising or by its worker thread dying
  (:class:`InferenceFailing`, exit 4): the loop is told to hold first.

A policy server out of reach and an observation the policy refuses are not such faults: the arm holds and
inference is tried again every ``RECONNECT_S``.
"""

from __future__ import annotations

import inspect
import threading
import time
from typing import Dict, List, Optional, Union

import numpy as np

from drivers import registry
from drivers.system import sdnotify
from drivers.control.control_loop import LoopStats
from drivers.control.loop_process import ControlLoopClient, ControlLoopError
from drivers.control.seam import SeamMeter
from runtime.policy import Policy
from runtime.remote.client import RemotePolicy, RemoteUnavailable
from runtime.types import ActionChunk, Observation
from xvla.errors import InputError, XVLAError
from xvla_edge.daemon.bridge import check_arm, chunk_to_trajectory, proprio_from_state
from xvla_edge.daemon.cameras import open_camera
from xvla_edge.daemon.chunking import Chunking, PrefixUnavailable, check_supported
from xvla_edge.daemon.config import RobotConfig
from xvla_edge.daemon.control import ControlServer, claim, estop_socket_path
from xvla_edge.daemon.health import HealthServer, Operator
from xvla_edge.daemon.state import FAULT_MODES, DaemonState, log
from xvla_edge.daemon.views import Summary
from xvla.extras import needs

POLL_S = 0.02
RECONNECT_S = 1.0
TRACE_EVERY_S = 1.0
MAX_INFERENCE_FAILURES = 5  # in a row: then hold and exit (InferenceFailing)


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


class Supervisor(DaemonState):
    """Start-up, the supervisor's passes and shut-down of :class:`~xvla_edge.daemon.service.Daemon`."""

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
        mode = cfg.inference.chunking
        check_supported(mode, manifest.supports_prefix, cfg.source)
        loop_config = cfg.loop_config()
        self.chunking = Chunking(mode, manifest.action, loop_config.splice, loop_config.gripper)
        self.metrics.set_chunking(mode)
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
        self.loop = ControlLoopClient(cfg.arm_factory(), loop_config, estop_group=operator.socket_group,
                                      estop_socket=None if operator.socket is None else estop_socket_path(operator.socket))
        caps = self.loop.start()
        try:
            check_arm(manifest.action, caps.space, caps.n_arms, caps.n_joints)
        except ValueError:
            self.close()
            raise
        self.seams = SeamMeter(caps.space, caps.n_arms)
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

    def run(self, stop: threading.Event, duration: Optional[float] = None) -> Summary:
        """Supervise until ``stop`` is set (SIGTERM) or ``duration`` seconds passed; returns the summary.
        Raises a :class:`DaemonFault` (after logging it) when a fault ends the run."""
        assert self.loop is not None and self.policy is not None, "call start() first"
        end = None if duration is None else self.clock() + duration
        while not stop.is_set() and (end is None or self.clock() < end):
            self.step()
            stop.wait(POLL_S)
        if self.loop.running:
            self._read_trace()  # the seams of the last hand-overs
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
            self._read_trace()
            self._last_trace = now

    def _read_trace(self) -> None:
        """The loop's recent commands into the recorder, and the seams of the hand-overs they now cover."""
        trace = self.loop.trace()  # type: ignore[union-attr]
        self.recorder.add_commands(trace)
        for value in self.seams.collect(trace):  # type: ignore[union-attr]
            self.seam_values.append(value)
            self.metrics.seam(value)

    def _watch_loop(self, stats: LoopStats, now: float) -> None:
        mode = stats.mode
        if mode != self._mode:
            log.info("control loop mode %s", mode, extra={"event": "mode", "mode": mode, "previous": self._mode})
            if mode in FAULT_MODES:
                self._fault(f"control loop {mode}: {stats.last_error}")
            self._mode = mode
        self._adopt_loop_estop(stats)
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
        chunking = self.chunking
        assert chunking is not None and self.loop is not None
        try:  # nothing executing (a hold, a stop): the next chunk starts from rest, without a prefix
            executing = self.loop.executing() if chunking.mode == "rtc" and self._executing_end is not None else None
            planned = chunking.prefix(obs.timestamp, executing)
        except PrefixUnavailable as exc:
            self._prefix_unavailable(exc)
            return
        self.recorder.add_observation(obs.timestamp, images, proprio, obs.instruction, int(manifest.domain_id))
        if planned is None:
            self._future = policy.act_async(obs, steps=self.config.steps)
        else:
            self.metrics.prefix(planned.delay, planned.horizon, planned.latency_s)
            self._future = policy.act_async(obs, steps=self.config.steps, prefix=planned.prefix)
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
            self.chunking.arrived(latency)  # type: ignore[union-attr]
            self.seams.handover(self.clock())  # type: ignore[union-attr]
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

    def _prefix_unavailable(self, exc: PrefixUnavailable) -> None:
        """Real-time chunking cannot build the next chunk's prefix (a delay longer than a chunk, an executing
        trajectory that gives no valid rows): nothing is sent; hold (the executing chunk is dropped), count it
        by reason, say why in health and the log, and try again in ``RECONNECT_S`` (from rest, without a
        prefix)."""
        self._hold_and_retry()
        self._prefix_refused[exc.reason] = self._prefix_refused.get(exc.reason, 0) + 1
        self.metrics.prefix_unavailable(exc.reason)
        log.error("real-time chunking: no prefix (%s): %s; holding the arm", exc.reason, exc,
                  extra={"event": "prefix_unavailable", "reason": exc.reason})
        self._fault(f"inference error: {exc}")

    def _refused_input(self, exc: InputError) -> None:
        """The policy refused the observation (e.g. a state the arm reported that it cannot take): hold, say why
        in health and the log, try again every ``RECONNECT_S``; the daemon keeps running (it is the input, not
        the model, that failed)."""
        self._hold_and_retry()
        log.error("observation refused by the policy: %s; holding the arm", exc, extra={"event": "input_refused"})
        self._fault(f"inference error: observation refused: {exc}")

    def _outage(self, exc: RemoteUnavailable) -> None:
        """The policy server cannot be reached or did not answer in time: hold now (the executing chunk is
        dropped), try again every ``RECONNECT_S``, for as long as it takes; never a reason to exit."""
        now = self._hold_and_retry()
        if self._outage_since is None:
            self._outage_since = now
            log.error("policy server unavailable (%s); holding the arm, retrying every %.0f s", exc, RECONNECT_S,
                      extra={"event": "policy_server_lost", "url": self.config.source})
            self._fault(f"inference error: policy server unavailable: {exc}")
        else:
            self._last_error = (now, f"inference error: policy server unavailable for {now - self._outage_since:.0f} s")

    def _hold_and_retry(self) -> float:
        """Hold now (the executing chunk is dropped), count an inference error and start the next inference no
        sooner than ``RECONNECT_S`` from now; the time now."""
        now = self.clock()
        self.loop.hold()  # type: ignore[union-attr]
        self._executing_end = None
        self._retry_at = now + RECONNECT_S
        self._inference_errors += 1
        self.metrics.inference_error()
        return now

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


def _exit_status(code: Optional[int]) -> str:
    """A process exit code in words (negative: killed by that signal)."""
    if code is None:
        return "not answering"
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"
