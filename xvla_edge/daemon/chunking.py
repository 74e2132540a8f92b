"""How the next chunk takes over from the one the arm executes (``[inference].chunking``), and real-time chunking's
prefix: the daemon's side of :mod:`xvla.realtime_chunking`, used alike by the daemon's supervisor and the simulated
task's virtual run (:func:`xvla_edge.sim.evaluate.run_scene`).

- ``"rtc"``: the new chunk is computed to *continue* the executing one. When inference starts, the commands the
  arm will execute from the new chunk's first row time on are known: the control loop's executing trajectory on
  the wall clock (:meth:`drivers.control.control_loop.ControlLoop.executing`: the chunk as spliced, smoothed and
  delayed, shifted by the time the loop fell behind it). They are sampled at the new chunk's row times, turned
  back into the model's rows (:func:`xvla_edge.daemon.bridge.trajectory_to_rows`) and given to the policy as the
  committed prefix. The chunk that arrives is spliced in without a blend
  (``replace``: from the last command, at its velocity, onto the first row still ahead), because it already
  agrees with the executing one where they meet.
- ``"blend"`` / ``"replace"``: no prefix; the splice blends the two plans over ``[splice].blend_window_s``, or
  switches to the new one (:mod:`drivers.control.splice`).

The prefix's numbers, per chunk (:meth:`Chunking.prefix`):

- **latency**: the :data:`LATENCY_QUANTILE` th percentile of the last :data:`LATENCY_WINDOW` chunks' latencies
  (observation time stamp to the chunk handed to the loop), at most ``[splice].max_latency_s`` (a later chunk is
  refused by the splice anyway);
- **delay** ``d``: that latency in rows, :func:`xvla.realtime_chunking.delay_rows` with the row period
  ``chunk_seconds / chunk_length`` of the manifest: the rows the arm executes from the old chunk before the new
  one can take over (frozen, weight 1);
- **horizon**: the new chunk's rows whose times lie within the executing chunk (the overlap of the two; with
  ``[inference].start_fraction`` 0.5 half a chunk), at least ``d``: the soft mask decays over the rows after ``d``
  up to it. A delay longer than the executing chunk (it ends before the new one lands) freezes the rows up to
  ``d`` to where it ends, where the arm holds.

A prefix that cannot be built is refused by name (:class:`PrefixUnavailable`: ``reason`` ``"delay"`` for a delay
longer than the chunk, ``"invalid"`` for an executing trajectory that gives no valid rows); the daemon then holds
the arm and sends nothing (the chunk would arrive stale, or continue a plan that is not valid).

Not modelled: what changes after inference started (the loop falling further behind a clipped command, a hold).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Optional

import numpy as np

from drivers.control.interpolation import GripperPolicy, TrajectorySampler
from drivers.control.splice import SplicePolicy
from drivers.control.trajectory import Trajectory, TrajectoryError, chunk_times
from runtime.types import PrefixUnsupported
from xvla.errors import InputError
from xvla.realtime_chunking import Prefix, delay_rows, scheduled_prefix

CHUNKING = ("rtc", "blend", "replace")
DEFAULT_CHUNKING = "blend"  # measured on the sim task: docs/daemon.md#real-time-chunking (why not "rtc" yet)
LATENCY_WINDOW = 20  # chunks: about 10 s of a 1 s chunk replanned at half its span
LATENCY_QUANTILE = 90.0


class PrefixUnavailable(InputError):
    """No prefix can be built for the next chunk; ``reason``: ``"delay"`` (the expected delay is longer than a
    chunk) or ``"invalid"`` (the executing trajectory gives no valid rows)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_supported(chunking: str, supports_prefix: bool, bundle: str) -> None:
    """Refuse ``"rtc"`` by name (:class:`runtime.types.PrefixUnsupported`) for a bundle whose denoise graph takes no
    prefix (exported before real-time chunking)."""
    if chunking == "rtc" and not supports_prefix:
        raise PrefixUnsupported(f"[inference].chunking = \"rtc\": the bundle {bundle} was exported without real-time "
                                "chunking's prefix inputs; re-export it (`xvla-edge export`), or set chunking = "
                                "\"blend\" or \"replace\"")


def splice_mode(chunking: str) -> str:
    """The splice of a chunking mode: ``blend`` blends, ``rtc`` and ``replace`` replace."""
    return "blend" if chunking == "blend" else "replace"


@dataclass(frozen=True)
class PlannedPrefix:
    """A prefix with the numbers it was built from: delay and horizon in rows, the latency estimate in s."""

    prefix: Prefix
    delay: int
    horizon: int
    latency_s: float


def build_prefix(executing: Trajectory, obs_time: float, action: dict, latency_s: float, *,
                 gripper: str = "hold") -> PlannedPrefix:
    """The prefix of the chunk predicted from an observation at ``obs_time`` while the arm executes ``executing``
    (the loop's trajectory on the wall clock) and inference is expected to take ``latency_s`` (module docstring); ``action``: the
    manifest's action section; ``gripper``: how the loop samples the gripper (:attr:`GripperPolicy.sampling`).
    Raises :class:`PrefixUnavailable`."""
    from xvla_edge.daemon.bridge import BridgeError, trajectory_to_rows  # here: it needs scipy, config check does not

    length, dim, span = int(action["chunk_length"]), int(action["dim"]), float(action["chunk_seconds"])
    try:
        delay = delay_rows(latency_s, span / length)
    except InputError as exc:
        raise PrefixUnavailable("invalid", f"real-time chunking: {exc}") from None
    if delay > length:
        raise PrefixUnavailable("delay", f"real-time chunking: an inference delay of {delay} rows ({latency_s:.3f} "
                                f"s at {span / length * 1e3:.1f} ms a row) is longer than the chunk's {length} "
                                "rows: every chunk would arrive stale")
    times = chunk_times(obs_time, span, length)  # the rows' times (runtime.decode.chunk_timestamps)
    horizon = min(max(int(np.count_nonzero(times <= executing.end)), delay), length)
    n = max(horizon, 1)
    try:
        values, quaternions, grip = TrajectorySampler(executing, gripper=gripper).at(times[:n])  # type: ignore[arg-type]
        if executing.space == "joint":
            sampled = Trajectory.joint(times[:n], values, grip)
        else:
            sampled = Trajectory.ee(times[:n], values, quaternions, grip)
        rows = trajectory_to_rows(sampled, action)
        prefix = scheduled_prefix(rows, length=length, dim=dim, delay=delay, horizon=horizon)
    except (TrajectoryError, BridgeError, InputError, FloatingPointError, ValueError) as exc:
        raise PrefixUnavailable("invalid", f"real-time chunking: the executing trajectory gives no valid prefix: "
                                f"{exc}") from None
    return PlannedPrefix(prefix, delay, horizon, float(latency_s))


class Chunking:
    """One robot's chunking: the mode and the recent latencies. ``action``: the manifest's action section;
    ``splice`` and ``gripper``: the loop's policies."""

    def __init__(self, mode: str, action: dict, splice: SplicePolicy, gripper: GripperPolicy) -> None:
        if mode not in CHUNKING:
            raise InputError(f"chunking = {mode!r}: expected one of {', '.join(CHUNKING)}")
        self.mode, self.action, self.splice, self.gripper = mode, action, splice, gripper
        self.latencies: deque = deque(maxlen=LATENCY_WINDOW)
        self.last: Optional[PlannedPrefix] = None  # the last prefix built

    def latency_estimate(self) -> Optional[float]:
        """The expected latency of the next chunk (module docstring), None before the first chunk."""
        if not self.latencies:
            return None
        return min(float(np.percentile(np.asarray(self.latencies), LATENCY_QUANTILE)), self.splice.max_latency_s)

    def arrived(self, latency_s: float) -> None:
        """A chunk was handed to the loop ``latency_s`` after its observation."""
        self.latencies.append(max(float(latency_s), 0.0))

    def prefix(self, obs_time: float, executing: Optional[Trajectory]) -> Optional[PlannedPrefix]:
        """The prefix of the chunk about to be computed from an observation at ``obs_time`` while the loop executes
        ``executing`` (:meth:`~drivers.control.control_loop.ControlLoop.executing`); None when not ``"rtc"``, with
        nothing executing (the next chunk starts from rest) or before the first latency. Raises
        :class:`PrefixUnavailable`."""
        latency = self.latency_estimate()
        if self.mode != "rtc" or executing is None or latency is None:
            return None
        self.last = build_prefix(executing, obs_time, self.action, latency, gripper=self.gripper.sampling)
        return self.last
