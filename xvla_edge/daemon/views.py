"""What the daemon shows of itself: ``ctl status`` (:meth:`StatusViews.status`), the status page's series and
camera frames, ``/healthz`` (:meth:`StatusViews.health`) and the run's :class:`Summary`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from xvla_edge.daemon.state import FAULT_MODES, DaemonState


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
    chunking: Dict[str, object] = field(default_factory=dict)  # StatusViews.chunking_status()
    seams: List[float] = field(default_factory=list)  # every hand-over's seam (drivers/control/seam.py)

    def lines(self) -> List[str]:
        ms = 1e3
        return [f"chunking: {self.chunking.get('text', 'not started')}",
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


class StatusViews(DaemonState):
    """The views of :class:`~xvla_edge.daemon.service.Daemon` (read from any thread)."""

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
            "cameras": sorted(self.cameras or {}), "chunking": self.chunking_status(),
        }

    def chunking_status(self) -> Dict[str, object]:
        """The chunking mode, the last prefix's delay and horizon (rows) and latency estimate, the seams of the
        hand-overs so far (p50, p99, count; m/s) and the prefixes refused, with ``text``: all of it in one line."""
        c = self.chunking
        if c is None:
            return {"mode": None, "text": "not started"}
        last, seams = c.last, np.array(self.seam_values, float)
        refused = dict(self._prefix_refused)
        out: Dict[str, object] = {
            "mode": c.mode, "delay_rows": None if last is None else last.delay,
            "horizon_rows": None if last is None else last.horizon,
            "latency_estimate_s": None if last is None else round(last.latency_s, 4),
            "handovers": len(seams), "seam_p50": None if not len(seams) else float(np.percentile(seams, 50)),
            "seam_p99": None if not len(seams) else float(np.percentile(seams, 99)), "prefix_unavailable": refused}
        text = c.mode
        if last is not None:
            text += (f", delay {last.delay} rows (latency estimate {last.latency_s * 1e3:.0f} ms), horizon "
                     f"{last.horizon} rows")
        if len(seams):
            text += f"; seam p50 {out['seam_p50']:.3f}, p99 {out['seam_p99']:.3f} m/s over {len(seams)} hand-overs"
        if any(refused.values()):
            text += f"; prefixes refused {refused}"
        out["text"] = text
        return out

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
            chunking=self.chunking_status(),
            seams=list(self.seam_values),
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
