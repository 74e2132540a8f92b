"""Prometheus text-format metrics (exposition format 0.0.4) for the daemon.

Hand-written rather than ``prometheus_client``: the daemon must install on Jetson images with loose
dependencies, and it needs three metric types and one renderer (about a hundred lines).
"""

from __future__ import annotations

import math
import threading
from typing import Dict, List, Tuple

from drivers.control_loop import LoopStats

Labels = Tuple[Tuple[str, str], ...]
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels, extra: Tuple[Tuple[str, str], ...] = ()) -> str:
    items = labels + extra
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in items) + "}" if items else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class Metric:
    def __init__(self, name: str, help_text: str, kind: str) -> None:
        self.name, self.help, self.kind = name, help_text, kind
        self._values: Dict[Labels, float] = {}
        self._lock = threading.Lock()

    def _key(self, labels: Dict[str, str]) -> Labels:
        return tuple(sorted((k, str(v)) for k, v in labels.items()))

    def render(self) -> List[str]:
        with self._lock:
            return [f"{self.name}{_labels(k)} {_number(v)}" for k, v in sorted(self._values.items())]


class Counter(Metric):
    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text, "counter")

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError(f"{self.name}: a counter only goes up (got {amount})")
        with self._lock:
            key = self._key(labels)
            self._values[key] = self._values.get(key, 0.0) + amount

    def set_total(self, total: float, **labels: str) -> None:
        """Mirror a count kept elsewhere (the control loop's); never moves backwards."""
        with self._lock:
            key = self._key(labels)
            self._values[key] = max(self._values.get(key, 0.0), float(total))


class Gauge(Metric):
    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text, "gauge")

    def set(self, value: float, **labels: str) -> None:
        with self._lock:
            self._values[self._key(labels)] = float(value)


class Histogram(Metric):
    def __init__(self, name: str, help_text: str, buckets: Tuple[float, ...]) -> None:
        super().__init__(name, help_text, "histogram")
        self.buckets = tuple(sorted(buckets)) + (math.inf,)
        self._counts = [0] * len(self.buckets)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        with self._lock:
            self._sum += value
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    self._counts[i] += 1

    def render(self) -> List[str]:
        with self._lock:
            lines = [f'{self.name}_bucket{{le="{_number(b)}"}} {c}' for b, c in zip(self.buckets, self._counts)]
            return lines + [f"{self.name}_sum {_number(self._sum)}", f"{self.name}_count {self._counts[-1]}"]


class Registry:
    def __init__(self) -> None:
        self.metrics: List[Metric] = []

    def add(self, metric: Metric) -> Metric:
        self.metrics.append(metric)
        return metric

    def render(self) -> str:
        out = []
        for m in self.metrics:
            out += [f"# HELP {m.name} {m.help.replace(chr(92), chr(92) * 2).replace(chr(10), chr(92) + 'n')}",
                    f"# TYPE {m.name} {m.kind}", *m.render()]
        return "\n".join(out) + "\n"


class DaemonMetrics:
    """The daemon's metrics, created in one place; the supervisor updates them."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.latency = r.add(Histogram("xvla_chunk_latency_seconds", "Observation to chunk ready.", LATENCY_BUCKETS))
        self.chunks = r.add(Counter("xvla_chunks_total", "Chunks produced by the policy."))
        self.interval_error = r.add(Gauge("xvla_control_interval_error_seconds",
                                          "Control tick interval minus the period over the stats window, by "
                                          "quantile; a missed deadline counts as one period late."))
        self.missed = r.add(Counter("xvla_control_missed_deadlines_total",
                                    "Control deadlines skipped because a tick ran past them."))
        self.overruns = r.add(Counter("xvla_control_overruns_total", "Control ticks that ran past their period."))
        self.arm_link = r.add(Counter("xvla_arm_link_total", "Arm link counters by kind (targets_skipped: not "
                                      "sent under controller backpressure; replies_lost, states_lost, ...)."))
        self.interventions = r.add(Counter("xvla_safety_interventions_total",
                                           "Commands the safety envelope rejected or clipped, by kind."))
        self.holds = r.add(Counter("xvla_watchdog_holds_total", "Entries into the holding mode (trajectory ran out)."))
        self.mode = r.add(Gauge("xvla_mode", "1 for the control loop's current mode."))
        self.camera_age_s = r.add(Gauge("xvla_camera_age_seconds", "Age of the newest frame, by camera."))
        self.camera_stale_n = r.add(Counter("xvla_camera_stale_total", "Times a camera went stale."))
        self.inference_errors = r.add(Counter("xvla_inference_errors_total", "Failed inferences."))
        self.bundle = r.add(Gauge("xvla_bundle_info", "1 for the running bundle: its id (sha256 of the canonical "
                                  "manifest), embodiment, domain and precision."))

    def observe_loop(self, stats: LoopStats) -> None:
        timing = stats.timing
        for q, key in (("0.5", "interval_error_p50"), ("0.99", "interval_error_p99"), ("1", "interval_error_max")):
            if key in timing:
                self.interval_error.set(timing[key], quantile=q)
        self.missed.set_total(timing.get("missed_deadlines", 0))
        self.overruns.set_total(timing.get("overruns", 0))
        for name, n in stats.events.items():
            if name.startswith("arm_"):
                self.arm_link.set_total(n, kind=name[len("arm_"):])
        for kind, n in stats.interventions.items():
            if kind != "commands":
                self.interventions.set_total(n, kind=kind)
        self.holds.set_total(stats.events.get("mode_holding", 0))
        for mode in ("link_lost", "estopped", "fault", "idle", "holding", "tracking"):
            self.mode.set(1.0 if stats.mode == mode else 0.0, mode=mode)

    def chunk(self, latency: float) -> None:
        self.latency.observe(latency)
        self.chunks.inc()

    def camera_age(self, camera: str, age: float) -> None:
        self.camera_age_s.set(age, camera=camera)

    def camera_stale(self, camera: str) -> None:
        self.camera_stale_n.inc(camera=camera)

    def inference_error(self) -> None:
        self.inference_errors.inc()
