"""The control loop: streams the executing trajectory to an arm at a fixed rate, in its own process.

Every tick: read the arm's state, let the watchdog pick the mode, sample the trajectory, pass the sample
through the safety envelope, send it, record. Between ticks the process sleeps to the next absolute
deadline (:mod:`drivers.realtime`); chunks, stats requests and stop/e-stop commands arrive over a pipe
and are handled right after the tick's command has been sent.

Why a separate process: the loop must not share a GIL with camera capture, inference or a web server.
It is started with the ``spawn`` (or ``forkserver``) method, never ``fork``, so it is safe to start
from a parent that already runs threads. The arm is built inside the child by a picklable factory, so
serial ports are opened there.

On leaving the loop for any reason (stop, exception, SIGTERM, the parent going away) the arm is told to
hold and the link is closed; power stays on.

Typical use::

    arm_factory = functools.partial(SimArm, space="ee")
    with ControlLoopClient(arm_factory, LoopConfig(rate_hz=200)) as loop:
        loop.submit(Trajectory.from_chunk(t_obs, 2.0, position=..., rotation=..., gripper=...), t_obs)
        print(loop.stats())
"""

from __future__ import annotations

import gc
import itertools
import math
import multiprocessing as mp
import signal
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np

from drivers.arm import (
    Arm,
    ArmCapabilities,
    ArmConfigError,
    ArmError,
    ArmFactory,
    ArmFault,
    ArmLinkError,
    ArmState,
    FaultFlag,
    Target,
)
from drivers.interpolation import GripperPolicy
from drivers.realtime import PeriodStats, enable_realtime, sleep_until
from drivers.safety import EnvelopeState, InterventionCounter, SafetyLimits, enforce
from drivers.splice import SplicePolicy, SpliceRejected
from drivers.streamer import Streamer
from drivers.trajectory import Trajectory, TrajectoryError
from drivers.watchdog import STOPPED_MODES, Mode, Watchdog

MIN_RATE_HZ = 50.0
MAX_RATE_HZ = 500.0
_MODES = tuple(Mode)
_MAX_MESSAGES_PER_TICK = 16


class ControlLoopError(ArmError):
    """The control-loop process failed or does not answer; the message carries its traceback if any."""


@dataclass(frozen=True)
class LoopConfig:
    """Settings of one control loop.

    ``rate_hz`` 50-500. ``realtime_priority`` 1-99 asks for SCHED_FIFO (0: do not); ``cpu`` pins the
    loop to one core. ``trace_length`` ticks of commanded/measured values are kept for :meth:`trace`;
    timing percentiles cover the last ``stats_window_s`` seconds.
    """

    rate_hz: float = 100.0
    limits: SafetyLimits = field(default_factory=SafetyLimits)
    splice: SplicePolicy = field(default_factory=SplicePolicy)
    gripper: GripperPolicy = field(default_factory=GripperPolicy)
    realtime_priority: int = 80
    cpu: Optional[int] = None
    trace_length: int = 2000
    stats_window_s: float = 10.0

    def __post_init__(self) -> None:
        if not MIN_RATE_HZ <= self.rate_hz <= MAX_RATE_HZ:
            raise ArmConfigError(f"LoopConfig.rate_hz ({self.rate_hz}) must be in {MIN_RATE_HZ:g}..{MAX_RATE_HZ:g}")
        if not 0 <= self.realtime_priority <= 99:
            raise ArmConfigError(f"LoopConfig.realtime_priority ({self.realtime_priority}) must be in 0..99")
        if self.trace_length < 1 or not self.stats_window_s > 0:
            raise ArmConfigError(
                f"LoopConfig: trace_length ({self.trace_length}) and stats_window_s ({self.stats_window_s}) must be > 0"
            )

    @property
    def period(self) -> float:
        return 1.0 / self.rate_hz


@dataclass(frozen=True)
class LoopStats:
    """A snapshot of the loop. ``timing`` is :meth:`drivers.realtime.PeriodStats.summary` (seconds);
    ``interventions`` counts safety rejections/clips by kind; ``events`` counts chunks accepted/rejected
    (``chunk_rejected_<reason>``), refused commands, link losses and mode entries (``mode_<name>``)."""

    mode: str
    scheduler: str
    rate_hz: float
    timing: Dict[str, float]
    interventions: Dict[str, int]
    events: Dict[str, int]
    last_latency: Optional[float]
    last_state: Optional[ArmState]
    last_command: Optional[Target]
    last_error: str


def measured_target(state: ArmState, space: str) -> Target:
    """The arm's measured pose as a command, used to start (and restart) holding where the arm is."""
    gripper = np.clip(state.gripper, 0.0, 1.0)
    if space == "ee":
        norm = np.linalg.norm(state.quaternion, axis=1, keepdims=True)
        target = Target.ee(state.position, state.quaternion / np.where(norm > 0, norm, 1.0), gripper)
    else:
        target = Target.joint(state.joint_positions, gripper)
    if not np.isfinite(target.to_vector()).all():
        raise ArmConfigError(f"the arm reports no finite measured {space} pose to hold: {target.to_vector()}")
    return target


class ControlLoop:
    """The tick logic, usable in-process (tests drive :meth:`tick` with their own clock).

    Call :meth:`start` once before anything else; then :meth:`tick` at the control rate, and the command
    methods (:meth:`submit`, :meth:`estop`, ...) between ticks from the same thread.
    """

    def __init__(self, arm: Arm, config: LoopConfig) -> None:
        self.arm = arm
        self.config = config
        self.watchdog = Watchdog()
        self.interventions = InterventionCounter()
        self.events: Counter = Counter()
        self.last_state: Optional[ArmState] = None
        self.last_latency: Optional[float] = None
        self.last_error = ""
        self._last_send: Optional[float] = None

    def start(self) -> ArmCapabilities:
        """Connect, merge the safety limits with the controller's, start holding the measured pose."""
        self.caps = self.arm.connect()
        self.limits = self.config.limits.for_arm(self.caps)
        state = self.arm.read_state()
        self.last_state = state
        command = measured_target(state, self.caps.space)
        self.streamer = Streamer(
            command, limits=self.limits, splice_policy=self.config.splice, gripper=self.config.gripper
        )
        self._restart_from(state)
        n = self.config.trace_length
        width = command.to_vector().size
        self._trace = {"time": np.full(n, np.nan), "mode": np.zeros(n, dtype=np.int8),
                       "command": np.full((n, width), np.nan), "measured": np.full((n, width), np.nan)}
        self._trace_count = 0
        return self.caps

    @property
    def command(self) -> Target:
        """The last safe command (what the arm was told to hold or track)."""
        return self.env.target

    def _restart_from(self, state: ArmState) -> None:
        command = measured_target(state, self.caps.space)
        self.env = EnvelopeState.at_rest(command)
        self.streamer.reset(command)
        self._last_send = None

    def _dt(self, now: float) -> float:
        """Step for the safety envelope: time since the last command, within 0.5-2 periods."""
        period = self.config.period
        if self._last_send is None:
            return period
        return min(max(now - self._last_send, 0.5 * period), 2.0 * period)

    # -- one tick -------------------------------------------------------------------------------------

    def tick(self, now: float) -> Mode:
        """Read state, decide the mode, command the arm; returns the mode of this tick."""
        command = None
        try:
            command = self._step(now)
        except ArmLinkError as exc:
            self._lose_link(now, exc)
        self._record(now, command)
        return self.watchdog.mode

    def _step(self, now: float) -> Optional[Target]:
        """The tick's work; returns the command sent, or ``None``."""
        if self.watchdog.link_down:
            return None  # nothing is sent until a reconnect
        state = self.arm.read_state()
        self.last_state = state
        previous = self.watchdog.mode
        trajectory = self.streamer.trajectory
        end = None if trajectory is None else trajectory.end
        mode = self.watchdog.update(now=now, faults=state.faults, trajectory_end=end)
        if mode != previous:
            self._enter(mode, previous, state)
        if mode in STOPPED_MODES:
            return None
        if mode is Mode.IDLE:  # no trajectory: hold the last safe command, at rest
            self.env = EnvelopeState.at_rest(self.env.target)
        else:  # tracking, or holding at the end of a run-out trajectory (the sample clamps there)
            result = enforce(self.streamer.sample(now), self.env, dt=self._dt(now), limits=self.limits)
            self.interventions.add(result)
            self.env = result.state
        try:
            self.arm.send_target(self.env.target)
        except ArmFault as exc:
            self._refused(exc)
        self._last_send = now
        return self.env.target

    def _enter(self, mode: Mode, previous: Mode, state: ArmState) -> None:
        if mode in STOPPED_MODES:
            self.streamer.reset(self.env.target)
            try:
                if mode is Mode.ESTOPPED:
                    self.arm.estop()
                else:
                    self.arm.hold()
            except ArmFault as exc:
                self.last_error = str(exc)  # a faulted controller may refuse; it holds on its own
        elif previous in STOPPED_MODES:
            self._restart_from(state)  # the arm may have been moved while stopped

    def _lose_link(self, now: float, exc: ArmLinkError) -> None:
        self.last_error = f"link lost: {exc}"
        self.events["link_lost"] += 1
        self.watchdog.link_lost()
        self.watchdog.update(now=now, faults=FaultFlag(0), trajectory_end=None)
        self.streamer.reset(self.env.target)

    def _refused(self, exc: ArmFault) -> None:
        """The controller refused a command: hold and drop the trajectory; a new chunk resumes."""
        self.events["refused"] += 1
        self.last_error = f"command refused: {exc}"
        try:
            self.arm.hold()
        except ArmFault:
            pass  # it refuses everything while faulted; the fault flags show at the next read_state
        self.env = EnvelopeState.at_rest(self.env.target)
        self.streamer.reset(self.env.target)

    def _record(self, now: float, command: Optional[Target]) -> None:
        i = self._trace_count % self.config.trace_length
        self._trace_count += 1
        t = self._trace
        t["time"][i] = now
        t["mode"][i] = _MODES.index(self.watchdog.mode)
        t["command"][i] = np.nan if command is None else command.to_vector()
        state = self.last_state
        t["measured"][i] = np.nan if state is None else state.to_vector(self.caps.space)

    # -- commands from the client ---------------------------------------------------------------------

    def submit(self, chunk: Trajectory, obs_timestamp: float, now: float) -> bool:
        """Splice a chunk in; returns whether it was accepted (rejections are counted by reason)."""
        mode = self.watchdog.mode
        if mode in STOPPED_MODES:
            self.events[f"chunk_rejected_{mode.value}"] += 1
            self.last_error = f"chunk rejected: loop is {mode.value}"
            return False
        try:
            result = self.streamer.submit(chunk, obs_timestamp=obs_timestamp, now=now, command=self.env.target)
        except SpliceRejected as exc:
            self.events[f"chunk_rejected_{exc.reason}"] += 1
            self.last_error = f"chunk rejected: {exc}"
            return False
        self.events["chunk_accepted"] += 1
        self.events["waypoints_dropped"] += result.dropped
        if result.delay > 0:
            self.events["chunk_delayed"] += 1
        self.last_latency = result.latency
        return True

    def estop(self) -> None:
        """Latch the e-stop and tell the arm now (not at the next tick)."""
        self.watchdog.estop()
        self.streamer.reset(self.env.target)
        try:
            self.arm.estop()
        except ArmError as exc:
            self.last_error = f"estop: {exc}"

    def clear_estop(self) -> None:
        """Release the e-stop; the arm holds where it is until a new chunk arrives."""
        try:
            self.arm.clear_estop()
        except ArmError as exc:
            self.last_error = f"clear_estop: {exc}"
            return
        self.watchdog.clear_estop()

    def reconnect(self) -> None:
        """Handshake again (after link loss or a controller timeout) and hold the measured pose."""
        try:
            self.arm.connect()
            state = self.arm.read_state()
        except ArmError as exc:
            self.last_error = f"reconnect: {exc}"
            return
        self.watchdog.link_restored()
        self.last_state = state
        self._restart_from(state)

    def shutdown(self) -> None:
        """Hold (unless the link is gone) and close the arm; never raises."""
        try:
            if not self.watchdog.link_down:
                self.arm.hold()
        except Exception as exc:  # noqa: BLE001 - best effort on the way out, whatever the backend raises
            self.last_error = f"shutdown hold: {exc!r}"
        finally:
            try:
                self.arm.close()
            except Exception as exc:  # noqa: BLE001
                self.last_error = f"shutdown close: {exc!r}"

    # -- reporting ------------------------------------------------------------------------------------

    def stats(self, timing: Dict[str, float], scheduler: str) -> LoopStats:
        events = dict(self.events)
        events.update({f"mode_{k}": v for k, v in self.watchdog.report().items()})
        return LoopStats(
            mode=self.watchdog.mode.value,
            scheduler=scheduler,
            rate_hz=self.config.rate_hz,
            timing=timing,
            interventions=self.interventions.as_dict(),
            events=dict(sorted(events.items())),
            last_latency=self.last_latency,
            last_state=self.last_state,
            last_command=self.env.target,
            last_error=self.last_error,
        )

    def trace(self) -> Dict[str, Any]:
        """The last ``trace_length`` ticks, oldest first: ``time`` [K], ``mode`` [K] (names), ``command``
        and ``measured`` [K, D] in :meth:`~drivers.arm.Target.to_vector` layout (NaN when nothing was sent)."""
        n = self.config.trace_length
        k = self._trace_count
        order = np.arange(max(k - n, 0), k) % n
        out: Dict[str, Any] = {key: value[order].copy() for key, value in self._trace.items()}
        out["mode"] = [_MODES[i].value for i in out["mode"]]
        return out


# -- the child process ---------------------------------------------------------------------------------


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(f"control loop: signal {signum}")


def _serve(conn: Any, arm_factory: ArmFactory, config: LoopConfig) -> None:
    """Entry point of the control-loop process."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it then stops us
    loop: Optional[ControlLoop] = None
    try:
        scheduler = enable_realtime(config.realtime_priority, config.cpu)
        loop = ControlLoop(arm_factory(), config)
        conn.send(("ready", loop.start()))
        gc.collect()
        gc.freeze()  # keep start-up objects out of the collector's way during the loop
        _run(loop, conn, scheduler)
    except BaseException:  # noqa: B902 - report anything, then hold in finally
        try:
            conn.send(("error", traceback.format_exc()))
        except (OSError, ValueError):
            pass
    finally:
        if loop is not None:
            loop.shutdown()
        conn.close()


def _run(loop: ControlLoop, conn: Any, scheduler: str) -> None:
    config = loop.config
    period = config.period
    timer = PeriodStats(max(int(config.stats_window_s * config.rate_hz), 1))
    deadline = time.monotonic() + period
    while True:
        sleep_until(deadline)
        wake = time.monotonic()
        loop.tick(wake)
        keep_going = _handle_messages(loop, conn, timer, scheduler)
        done = time.monotonic()
        error = wake - deadline
        deadline += period
        missed = 0
        if done > deadline:
            missed = int((done - deadline) // period) + 1
            deadline += missed * period
        timer.record(error, done - wake, missed)
        if not keep_going:
            return


def _handle_messages(loop: ControlLoop, conn: Any, timer: PeriodStats, scheduler: str) -> bool:
    """Handle pending client messages; False when the loop must stop."""
    for _ in range(_MAX_MESSAGES_PER_TICK):
        try:
            if not conn.poll():
                return True
            message = conn.recv()
        except (EOFError, OSError):
            return False  # the parent is gone
        kind = message[0]
        if kind == "submit":
            # "now" is read here, after the message arrived, so it is never before the client's obs_timestamp
            loop.submit(message[1], message[2], time.monotonic())
        elif kind == "estop":
            loop.estop()
        elif kind == "clear_estop":
            loop.clear_estop()
        elif kind == "reconnect":
            loop.reconnect()
        elif kind in ("stats", "stop"):
            conn.send(("reply", message[1], loop.stats(timer.summary(), scheduler)))
            if kind == "stop":
                return False
        elif kind == "trace":
            conn.send(("reply", message[1], loop.trace()))
        else:
            raise ControlLoopError(f"unknown control-loop message {kind!r}")
    return True


# -- the parent side -------------------------------------------------------------------------------------


class ControlLoopClient:
    """Starts the control-loop process and talks to it. Thread-safe; use as a context manager.

    ``arm_factory`` must be picklable (a class or ``functools.partial``; no lambdas) and is called in the
    child. ``start_method`` is ``"spawn"`` (default) or ``"forkserver"``.
    """

    def __init__(
        self, arm_factory: ArmFactory, config: Optional[LoopConfig] = None, *, start_method: str = "spawn"
    ) -> None:
        if start_method not in ("spawn", "forkserver"):
            raise ArmConfigError(f"start_method: expected 'spawn' or 'forkserver', got {start_method!r}")
        self.config = config or LoopConfig()
        self._factory = arm_factory
        self._ctx = mp.get_context(start_method)
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._conn: Any = None
        self._process: Optional[mp.process.BaseProcess] = None
        self._caps: Optional[ArmCapabilities] = None
        self._error = ""

    def start(self, timeout: float = 30.0) -> ArmCapabilities:
        """Start the process; returns the controller's capabilities once the arm is connected."""
        if self._process is not None:
            raise ControlLoopError("control loop already started")
        self._conn, child = self._ctx.Pipe(duplex=True)
        self._process = self._ctx.Process(
            target=_serve, args=(child, self._factory, self.config), name="xvla-control-loop", daemon=True
        )
        try:
            self._process.start()
        except Exception as exc:  # typically a factory that cannot be pickled (a lambda, a local class)
            self._process = None
            self._kill()
            raise ControlLoopError(f"cannot start the control loop (is the arm factory picklable?): {exc}") from exc
        finally:
            child.close()
        try:
            if not self._conn.poll(timeout):
                raise ControlLoopError(f"control loop did not start within {timeout} s")
            kind, payload = self._conn.recv()
        except (EOFError, OSError) as exc:
            kind, payload = "error", f"the process exited during start-up ({exc!r})"
        except ControlLoopError:
            self._kill()
            raise
        if kind != "ready":
            self._kill()
            raise ControlLoopError(f"control loop failed to start:\n{payload}")
        self._caps = payload
        return payload

    @property
    def capabilities(self) -> ArmCapabilities:
        if self._caps is None:
            raise ControlLoopError("control loop not started")
        return self._caps

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def submit(self, trajectory: Trajectory, obs_timestamp: float) -> None:
        """Hand a chunk to the loop (returns at once; acceptance shows in :meth:`stats` events).

        ``obs_timestamp`` is the ``time.monotonic()`` of the observation the chunk was predicted from.
        Raises ``TrajectoryError`` when the chunk does not fit the arm.
        """
        caps = self.capabilities
        if (trajectory.space, trajectory.n_arms) != (caps.space, caps.n_arms) or (
            caps.space == "joint" and trajectory.n_joints != caps.n_joints
        ):
            raise TrajectoryError(
                f"trajectory is {trajectory.space!r} with {trajectory.n_arms} arm(s) and {trajectory.n_joints} "
                f"joint(s); the arm takes {caps.space!r} with {caps.n_arms} arm(s) and {caps.n_joints} joint(s)"
            )
        if not math.isfinite(obs_timestamp):
            raise TrajectoryError(f"obs_timestamp must be finite, got {obs_timestamp!r}")
        self._send(("submit", trajectory, float(obs_timestamp)))

    def estop(self) -> None:
        """Latch the e-stop: the arm holds and chunks are refused until :meth:`clear_estop`."""
        self._send(("estop",))

    def clear_estop(self) -> None:
        self._send(("clear_estop",))

    def reconnect(self) -> None:
        """Ask the loop to handshake with the controller again (after link loss or a deadman timeout)."""
        self._send(("reconnect",))

    def stats(self, timeout: float = 2.0) -> LoopStats:
        return self._request("stats", timeout)

    def trace(self, timeout: float = 2.0) -> Dict[str, Any]:
        """Recent per-tick commanded and measured values (see :meth:`ControlLoop.trace`)."""
        return self._request("trace", timeout)

    def stop(self, timeout: float = 5.0) -> Optional[LoopStats]:
        """Stop the loop (the arm holds) and wait for the process; returns the final stats if it answered."""
        if self._process is None:
            return None
        final = None
        try:
            if self._process.is_alive():
                final = self._request("stop", timeout)
        except ControlLoopError:
            pass
        self._process.join(timeout)
        self._kill()
        return final

    def __enter__(self) -> "ControlLoopClient":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _send(self, message: tuple) -> None:
        with self._lock:
            if self._conn is None:
                raise ControlLoopError("control loop not started")
            try:
                self._conn.send(message)
            except (OSError, ValueError) as exc:
                raise ControlLoopError(f"control loop pipe failed: {exc}{self._error_suffix()}") from exc

    def _request(self, kind: str, timeout: float) -> Any:
        with self._lock:
            if self._conn is None:
                raise ControlLoopError("control loop not started")
            request_id = next(self._ids)
            try:
                self._conn.send((kind, request_id))
                deadline = time.monotonic() + timeout
                while self._conn.poll(max(deadline - time.monotonic(), 0.0)):
                    reply = self._conn.recv()
                    if reply[0] == "error":
                        self._error = reply[1]
                        break
                    if reply[0] == "reply" and reply[1] == request_id:
                        return reply[2]
            except (EOFError, OSError) as exc:
                raise ControlLoopError(f"control loop pipe failed: {exc}{self._error_suffix()}") from exc
        raise ControlLoopError(f"control loop did not answer {kind!r} within {timeout} s{self._error_suffix()}")

    def _error_suffix(self) -> str:
        """The child's last words, if it sent any (read from the pipe when not read yet)."""
        try:
            while not self._error and self._conn is not None and self._conn.poll():
                reply = self._conn.recv()
                if reply[0] == "error":
                    self._error = reply[1]
        except (EOFError, OSError):
            pass
        return f"; it failed with:\n{self._error}" if self._error else ""

    def _kill(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.terminate()  # SIGTERM: the child holds the arm before exiting
            self._process.join(2.0)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._process = None
