"""The daemon's Prometheus metrics, with ``prometheus_client`` (a registry per daemon, not the global one:
:func:`xvla_edge.web.metrics.new_registry`).

What the supervisor sees itself (chunks, their latency, inference errors, camera ages and stalls) is counted
with the library's own metric types. What the control-loop process counts (ticks, deadlines, safety
interventions, arm-link events, mode) arrives as :class:`~drivers.control.control_loop.LoopStats` snapshots and is
exported from the latest one by a custom collector, as the library intends for values counted elsewhere.

Every counter is there from the start, at zero: per camera, per intervention kind and per mode, so that a
rate() over a fresh daemon is 0, not "no data". The loop's tick intervals are a histogram in seconds (on
time is one period); chunk latency too. ``xvla_build_info`` and ``xvla_bundle_info`` carry the versions and
the running bundle as labels (value 1).
"""

from __future__ import annotations

import threading
from typing import Iterable, Optional, Sequence

from prometheus_client import Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from drivers.control.control_loop import LoopStats
from drivers.control.safety import CLIP_KINDS, REJECT_KINDS
from xvla_edge.web.metrics import new_registry

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SEAM_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # m/s (rad/s): the seam's bound is 0.25 by default
PREFIX_REASONS = ("delay", "invalid")  # the reasons of xvla_edge.daemon.chunking.PrefixUnavailable
MODES = ("link_lost", "estopped", "fault", "idle", "holding", "tracking")


class LoopCollector:
    """Exports the latest :class:`LoopStats` (all zeros until the first arrives)."""

    def __init__(self) -> None:
        self._stats: Optional[LoopStats] = None
        self._lock = threading.Lock()

    def update(self, stats: LoopStats) -> None:
        with self._lock:
            self._stats = stats

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            stats = self._stats
        timing = {} if stats is None else stats.timing
        events = {} if stats is None else stats.events
        interventions = {} if stats is None else stats.interventions
        yield CounterMetricFamily("xvla_control_missed_deadlines", "Control deadlines skipped because a tick ran "
                                  "past them.", value=timing.get("missed_deadlines", 0))
        yield CounterMetricFamily("xvla_control_overruns", "Control ticks that ran past their period.",
                                  value=timing.get("overruns", 0))
        yield CounterMetricFamily("xvla_control_ticks", "Control ticks run.", value=timing.get("ticks", 0))
        yield GaugeMetricFamily("xvla_control_interval_error_max_seconds", "Longest tick interval minus the "
                                "period since start (a missed deadline counts as one period late).",
                                value=timing.get("interval_error_max_all", 0.0))
        histogram = None if stats is None else stats.interval_histogram
        intervals = HistogramMetricFamily("xvla_control_tick_interval_seconds", "Time between control ticks "
                                          "(one period when on time).")
        if histogram is not None:
            buckets = [(repr(b), c) for b, c in zip(histogram["bounds"], histogram["counts"])]
            buckets.append(("+Inf", histogram["count"]))
            intervals.add_metric([], buckets, histogram["sum"])
        else:
            intervals.add_metric([], [("+Inf", 0)], 0.0)
        yield intervals
        safety = CounterMetricFamily("xvla_safety_interventions", "Commands the safety envelope rejected or "
                                     "clipped, by kind.", labels=["kind"])
        for kind in REJECT_KINDS + CLIP_KINDS:
            safety.add_metric([kind], interventions.get(kind, 0))
        yield safety
        link = CounterMetricFamily("xvla_arm_link", "Arm link counters by kind (targets_skipped: not sent under "
                                   "controller backpressure; replies_lost, states_lost, ...).", labels=["kind"])
        for name, n in sorted(events.items()):
            if name.startswith("arm_"):
                link.add_metric([name[len("arm_"):]], n)
        yield link
        yield CounterMetricFamily("xvla_watchdog_holds", "Entries into the holding mode (trajectory ran out).",
                                  value=events.get("mode_holding", 0))
        mode = GaugeMetricFamily("xvla_mode", "1 for the control loop's current mode.", labels=["mode"])
        for name in MODES:
            mode.add_metric([name], 1.0 if stats is not None and stats.mode == name else 0.0)
        yield mode


class DaemonMetrics:
    """The daemon's metrics, created in one place; the supervisor updates them. ``cameras``: the camera names
    (their series exist from the start)."""

    def __init__(self, cameras: Sequence[str] = ()) -> None:
        r = self.registry = new_registry("The running xvla-edge: package version, Python, machine.")
        self.latency = Histogram("xvla_chunk_latency_seconds", "Observation to chunk ready.",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.chunks = Counter("xvla_chunks", "Chunks produced by the policy.", registry=r)
        self.inference_errors = Counter("xvla_inference_errors", "Failed inferences.", registry=r)
        self.camera_age_s = Gauge("xvla_camera_age_seconds", "Age of the newest frame, by camera.", ["camera"],
                                  registry=r)
        self.camera_stale_n = Counter("xvla_camera_stale", "Times a camera went stale.", ["camera"], registry=r)
        for name in cameras:
            self.camera_stale_n.labels(camera=name)
        self.bundle = Info("xvla_bundle", "The running bundle: its id (sha256 of the canonical manifest), "
                           "embodiment, domain, precision and the backend running it.", registry=r)
        self.graph_fallback = Gauge("xvla_backend_graph_fallback", "1 while the backend runs without the CUDA "
                                    "graphs it would replay (capture failed on this machine; the daemon's log says "
                                    "why), else 0.", registry=r)
        self.chunking = Info("xvla_chunking", "How the next chunk takes over: rtc (real-time chunking), blend or "
                             "replace ([inference].chunking, resolved for the bundle).", registry=r)
        self.seams = Histogram("xvla_chunk_seam", "The command's velocity jump across a chunk hand-over: mean "
                               "velocity over the 50 ms after minus the 50 ms before (m/s; rad/s for joints; "
                               "drivers/control/seam.py).", buckets=SEAM_BUCKETS, registry=r)
        self.delay_rows = Gauge("xvla_chunk_delay_rows", "Real-time chunking: the inference delay in rows of the "
                                "last prefix (frozen rows).", registry=r)
        self.horizon_rows = Gauge("xvla_chunk_horizon_rows", "Real-time chunking: the last prefix's horizon in "
                                  "rows (its guided rows end there).", registry=r)
        self.latency_estimate = Gauge("xvla_chunk_latency_estimate_seconds", "Real-time chunking: the latency "
                                      "the last prefix's delay was computed from (p90 of recent chunks).", registry=r)
        self.prefix_errors = Counter("xvla_chunk_prefix_unavailable", "Real-time chunking: prefixes that could "
                                     "not be built (nothing was sent, the arm held), by reason.", ["reason"],
                                     registry=r)
        for reason in PREFIX_REASONS:
            self.prefix_errors.labels(reason=reason)
        self.loop = LoopCollector()
        r.register(self.loop)

    def set_bundle(self, *, bundle_id: str, embodiment: str, domain: int, precision: str, backend: str) -> None:
        self.bundle.info({"bundle_id": bundle_id, "embodiment": embodiment, "domain": str(domain),
                          "precision": precision, "backend": backend})

    def set_chunking(self, mode: str) -> None:
        self.chunking.info({"mode": mode})

    def prefix(self, delay: int, horizon: int, latency_s: float) -> None:
        self.delay_rows.set(delay)
        self.horizon_rows.set(horizon)
        self.latency_estimate.set(latency_s)

    def prefix_unavailable(self, reason: str) -> None:
        self.prefix_errors.labels(reason=reason).inc()

    def seam(self, value: float) -> None:
        self.seams.observe(value)

    def observe_loop(self, stats: LoopStats) -> None:
        self.loop.update(stats)

    def chunk(self, latency: float, *, graph_fallback: bool = False) -> None:
        self.latency.observe(latency)
        self.chunks.inc()
        self.graph_fallback.set(1 if graph_fallback else 0)

    def camera_age(self, camera: str, age: float) -> None:
        self.camera_age_s.labels(camera=camera).set(age)

    def camera_stale(self, camera: str) -> None:
        self.camera_stale_n.labels(camera=camera).inc()

    def inference_error(self) -> None:
        self.inference_errors.inc()

    def render(self) -> bytes:
        """The exposition text (:data:`xvla_edge.web.metrics.CONTENT_TYPE`)."""
        return generate_latest(self.registry)
