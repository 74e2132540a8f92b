"""The control loop's tick: streams the executing trajectory to an arm at a fixed rate.

Every tick: read the arm's state, let the watchdog pick the mode, sample the trajectory, pass the sample
through the safety envelope, send it, record. :class:`ControlLoop` is the tick logic, usable in-process
with any clock; :mod:`drivers.control.loop_process` runs it in its own process at the control rate.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np

from drivers.arm import (
    Arm,
    ArmCapabilities,
    ArmConfigError,
    ArmError,
    ArmFault,
    ArmLinkError,
    ArmState,
    FaultFlag,
    Target,
)
from drivers.control.interpolation import GripperPolicy
from drivers.control.safety import EnvelopeState, InterventionCounter, SafetyLimits, enforce
from drivers.control.splice import SplicePolicy, SpliceRejected
from drivers.control.streamer import Streamer
from drivers.control.trace_ring import TraceRing
from drivers.control.trajectory import Trajectory
from drivers.control.watchdog import STOPPED_MODES, Mode, Watchdog

MIN_RATE_HZ = 50.0
MAX_RATE_HZ = 500.0
MAX_TRAJECTORY_LAG = (0.1, 100.0)  # allowed range of LoopConfig.max_trajectory_lag (fraction of the span)
MAX_TRACE_LENGTH = 100_000  # ticks: 200 s at 500 Hz
MAX_STATS_WINDOW_S = 3600.0  # the timing percentiles' window: at most 1.8 million periods at 500 Hz
_MODES = tuple(Mode)


@dataclass(frozen=True)
class LoopConfig:
    """Settings of one control loop.

    ``rate_hz`` 50-500. ``max_trajectory_lag`` (0.1-100): how far a trajectory may fall behind the wall clock
    (missed ticks, clipped commands; see :mod:`drivers.control.streamer`), as a fraction of its own duration, before
    it is dropped as stale: below 0.1 the first clipped start of a chunk drops it, and beyond 100 a stalled
    chunk is never dropped. ``realtime_priority`` 1-99 asks for SCHED_FIFO (0: do not); ``cpu`` pins the
    loop to one core. ``trace_length`` (1-100 000) ticks of commanded/measured values are kept for
    :meth:`trace`; timing percentiles cover the last ``stats_window_s`` (at most 3600) seconds.
    """

    rate_hz: float = 100.0
    limits: SafetyLimits = field(default_factory=SafetyLimits)
    splice: SplicePolicy = field(default_factory=SplicePolicy)
    gripper: GripperPolicy = field(default_factory=GripperPolicy)
    realtime_priority: int = 80
    cpu: Optional[int] = None
    trace_length: int = 2000
    stats_window_s: float = 10.0
    max_trajectory_lag: float = 1.0

    def __post_init__(self) -> None:
        if not MIN_RATE_HZ <= self.rate_hz <= MAX_RATE_HZ:
            raise ArmConfigError(f"LoopConfig.rate_hz ({self.rate_hz}) must be in {MIN_RATE_HZ:g}..{MAX_RATE_HZ:g}")
        if not 0 <= self.realtime_priority <= 99:
            raise ArmConfigError(f"LoopConfig.realtime_priority ({self.realtime_priority}) must be in 0..99")
        lower, upper = MAX_TRAJECTORY_LAG
        if not lower <= self.max_trajectory_lag <= upper:
            raise ArmConfigError(f"LoopConfig.max_trajectory_lag ({self.max_trajectory_lag}) must be in "
                                 f"{lower:g}..{upper:g} (a fraction of the trajectory's span)")
        if not 1 <= self.trace_length <= MAX_TRACE_LENGTH:
            raise ArmConfigError(f"LoopConfig.trace_length ({self.trace_length}) must be in 1..{MAX_TRACE_LENGTH}")
        if not 0 < self.stats_window_s <= MAX_STATS_WINDOW_S:
            raise ArmConfigError(f"LoopConfig.stats_window_s ({self.stats_window_s}) must be in "
                                 f"(0, {MAX_STATS_WINDOW_S:g}] s")

    @property
    def period(self) -> float:
        return 1.0 / self.rate_hz


@dataclass(frozen=True)
class LoopStats:
    """A snapshot of the loop. ``timing`` is :meth:`drivers.system.realtime.PeriodStats.summary` (seconds);
    ``interventions`` counts safety rejections/clips by kind; ``events`` counts chunks accepted/rejected
    (``chunk_rejected_<reason>``), refused commands, link losses, mode entries (``mode_<name>``) and the
    arm backend's own counters (``arm_<name>``, e.g. targets skipped under backpressure)."""

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
    interval_histogram: Optional[Dict[str, Any]] = None  # PeriodStats.interval_histogram (the loop process's)
    estop_latched: bool = False  # the e-stop latch, also while a lost link decides the mode


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

    def __init__(self, arm: Arm, config: LoopConfig, trace: Optional[TraceRing] = None) -> None:
        """``trace``: where the recent ticks go (shared memory when another process reads them; default a ring of
        ``config.trace_length`` rows in this process)."""
        self.arm = arm
        self.config = config
        self._trace = trace or TraceRing(config.trace_length, [m.value for m in _MODES])
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
            command,
            limits=self.limits,
            splice_policy=self.config.splice,
            gripper=self.config.gripper,
            max_lag=self.config.max_trajectory_lag,
        )
        self._restart_from(state)
        self._trace.start(command.to_vector().size)
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
        state = self.arm.poll_state()
        self.last_state = state
        previous = self.watchdog.mode
        dt = self._dt(now)
        if self._last_send is not None and now - self._last_send > dt:  # missed ticks: slow the trajectory
            self.events["ticks_late"] += 1
            if not self.streamer.fall_behind(now - self._last_send - dt, now):
                self.events["trajectory_expired"] += 1
        mode = self.watchdog.update(now=now, faults=state.faults, trajectory_end=self.streamer.end)
        if mode != previous:
            self._enter(mode, previous, state)
        if mode in STOPPED_MODES:
            return None
        if mode is Mode.IDLE:  # no trajectory: hold the last safe command, at rest
            self.env = EnvelopeState.at_rest(self.env.target)
        else:  # tracking, or holding at the end of a run-out trajectory (the sample clamps there)
            wanted, reference = self.streamer.sample(now), self.streamer.velocity(now)
            result = enforce(wanted, self.env, dt=dt, limits=self.limits, reference=reference)
            self.interventions.add(result)
            if result.clipped and not self.streamer.keep_pace(wanted, reference, result.target, dt, now):
                self.events["trajectory_expired"] += 1
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
        state = self.last_state
        self._trace.write(now, _MODES.index(self.watchdog.mode), None if command is None else command.to_vector(),
                          None if state is None else state.to_vector(self.caps.space))

    # -- commands from the client ---------------------------------------------------------------------

    def submit(self, chunk: Trajectory, obs_timestamp: float, now: float) -> bool:
        """Splice a chunk in; returns whether it was accepted (rejections are counted by reason)."""
        mode = self.watchdog.mode
        if mode in STOPPED_MODES:
            self.events[f"chunk_rejected_{mode.value}"] += 1
            self.last_error = f"chunk rejected: loop is {mode.value}"
            return False
        try:
            sent = self._last_send
            recent = sent is not None and now - 2 * self.config.period <= sent <= now
            result = self.streamer.submit(chunk, obs_timestamp=obs_timestamp, now=now, command=self.env.target,
                                          command_time=sent if recent else None)
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

    def executing(self) -> Optional[Trajectory]:
        """The trajectory the arm is commanded along from now on, on the wall clock (the spliced chunk, smoothed,
        blended, delayed as the loop runs it), before the gripper policy and the safety envelope; ``None`` when
        nothing is executing or the loop is stopped. Real-time chunking builds its prefix from it."""
        if self.watchdog.mode in STOPPED_MODES:
            return None
        return self.streamer.executing()

    def hold(self) -> None:
        """Drop the executing trajectory and hold the last safe command (not latched: a new chunk resumes).

        Used when the inputs behind the trajectory went bad (a stale camera): the arm stops where the last
        command put it instead of finishing a chunk computed from old images.
        """
        if self.watchdog.mode not in STOPPED_MODES:
            self.streamer.reset(self.env.target)
            self.env = EnvelopeState.at_rest(self.env.target)
            self.events["hold_requested"] += 1

    def estop(self) -> None:
        """Latch the e-stop and tell the arm now (not at the next tick)."""
        self.watchdog.estop()
        self.streamer.reset(self.env.target)
        try:
            self.arm.estop()
        except ArmError as exc:
            self.last_error = f"estop: {exc}"

    def clear_estop(self) -> None:
        """Release the e-stop; the arm holds where it is until a new chunk arrives.

        A state read after the release decides: a streamed state from before it still carries the e-stop
        flag and would latch it again at the next tick, so one fresh state is read here; if the controller
        still reports its e-stop (its own input held), the watchdog latches again, as it should."""
        try:
            self.arm.clear_estop()
            self.last_state = self.arm.read_state()
        except ArmError as exc:
            self.last_error = f"clear_estop: {exc}"
            return
        if self.last_state.faults & FaultFlag.ESTOP:
            self.last_error = "clear_estop: the controller still reports its e-stop (its own input is engaged)"
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

    def stats(self, timing: Dict[str, float], scheduler: str,
              interval_histogram: Optional[Dict[str, Any]] = None) -> LoopStats:
        events = dict(self.events)
        events.update({f"mode_{k}": v for k, v in self.watchdog.report().items()})
        events.update({f"arm_{k}": v for k, v in self.arm.counters().items()})
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
            interval_histogram=interval_histogram,
            estop_latched=self.watchdog.estop_latched,
        )

    def trace(self) -> Dict[str, Any]:
        """The recent ticks, oldest first (:meth:`drivers.control.trace_ring.TraceRing.read`): ``time`` [K], ``mode`` [K]
        (names), ``command`` and ``measured`` [K, D] in :meth:`~drivers.arm.Target.to_vector` layout (NaN when
        nothing was sent)."""
        return self._trace.read()
