"""Real-time chunking in the running daemon (tiny bundle, synthetic camera, the xvla-serial emulator on a pty): every
chunk after the first is asked for with the prefix of what the loop executes, the delay, horizon and seams show in
metrics and status; a prefix that cannot be built (a delay longer than the chunk) sends nothing, holds the arm and
is named in metrics, health and status; an older bundle asked for ``rtc`` does not start."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from xvla.realtime_chunking import Prefix
from xvla_edge.daemon.chunking import LATENCY_WINDOW
from xvla_edge.daemon.config import load_config
from xvla_edge.daemon.robot_toml import robot_toml
from xvla_edge.daemon.service import Daemon
from xvla_edge.daemon.supervisor import RECONNECT_S

from tests.support.daemon_driving import accepted, drive
from tests.support.robot_configs import SLOW_LOOP, SMALL_CAMERA


def rtc_daemon(tmp_path: Path, bundle: Path, port: str, chunking: Optional[str] = "rtc") -> Daemon:
    """A daemon of ``chunking`` (None: the default)."""
    path = tmp_path / "robot.toml"
    path.write_text(robot_toml(bundle, port, tmp_path / "recordings", cameras=SMALL_CAMERA, arm={"timeout_ms": 300},
                               control=SLOW_LOOP, inference={} if chunking is None else {"chunking": chunking},
                               splice={"max_latency_s": 5.0}, recorder={"seconds": 5}))
    return Daemon(load_config(path))


def test_every_chunk_after_the_first_continues_the_executing_one(tmp_path, bundle, emu):
    daemon = rtc_daemon(tmp_path, bundle, emu.port)
    daemon.start()
    try:
        asked: list = []
        act_async = daemon.policy.act_async
        daemon.policy.act_async = lambda obs, **kw: (asked.append(kw.get("prefix")), act_async(obs, **kw))[1]
        assert drive(daemon, 30.0, until=lambda d: accepted(d) >= 4)
        time.sleep(0.2)
        daemon.step()  # the last hand-over's 50 ms after are in the trace now
        daemon._read_trace()
        assert asked[0] is None and all(isinstance(p, Prefix) for p in asked[1:]), asked
        last = daemon.chunking.last
        period = 1.0 / daemon.policy.chunk_shape[1]  # the tiny bundle's chunk: 1 s
        latencies = list(daemon.chunking.latencies)
        assert min(latencies) <= last.latency_s <= max(latencies)  # a percentile of the chunks' latencies
        assert last.delay == int(np.ceil(last.latency_s / period - 1e-9)) >= 1
        assert last.delay <= last.horizon <= daemon.policy.chunk_shape[1]
        assert len(last.prefix.weights) == last.horizon and (last.prefix.weights[: last.delay] == 1).all()
        assert daemon.seam_values and all(0 <= s < 0.3 for s in daemon.seam_values)  # the envelope's bound: 0.25
        text = daemon.status()["chunking"]["text"]
        assert text.startswith(f"rtc, delay {last.delay} rows") and "hand-overs" in text, text
        metrics = daemon.metrics.render().decode()
        assert 'xvla_chunking_info{mode="rtc"} 1.0' in metrics
        assert f"xvla_chunk_delay_rows {float(last.delay)}" in metrics
        assert f"xvla_chunk_seam_count {float(len(daemon.seam_values))}" in metrics
        assert any(line.startswith("chunking: rtc, delay") for line in daemon.summary().lines())
    finally:
        daemon.close()


def test_a_prefix_that_cannot_be_built_sends_nothing_and_holds(tmp_path, bundle, emu):
    daemon = rtc_daemon(tmp_path, bundle, emu.port)
    daemon.start()
    try:
        asked: list = []
        act_async = daemon.policy.act_async
        daemon.policy.act_async = lambda obs, **kw: (asked.append(kw.get("prefix")), act_async(obs, **kw))[1]
        assert drive(daemon, 30.0, until=lambda d: accepted(d) >= 2)
        # chunks took 4 s lately (as measured): longer than the tiny bundle's 1 s chunk, so any would arrive stale
        daemon.chunking.latencies.extend([4.0] * LATENCY_WINDOW)
        assert drive(daemon, 10.0, until=lambda d: d._prefix_refused["delay"] == 1)
        chunks, calls, refused_at = accepted(daemon), len(asked), time.monotonic()
        drive(daemon, 0.6 * RECONNECT_S)  # until the retry: nothing asked, nothing sent, the arm held
        assert (accepted(daemon), len(asked)) == (chunks, calls)
        assert daemon.loop.executing() is None and daemon.stats.mode in ("idle", "holding")
        assert time.monotonic() - refused_at < RECONNECT_S
        assert 'xvla_chunk_prefix_unavailable_total{reason="delay"} 1.0' in daemon.metrics.render().decode()
        health, reasons = daemon.health()
        assert health == "degraded" and any("real-time chunking: an inference delay of 120 rows" in r for r in reasons)
        assert "prefixes refused {'delay': 1, 'invalid': 0}" in daemon.status()["chunking"]["text"]
        daemon.chunking.latencies.clear()  # latency back to normal: after the retry the arm moves again, from rest
        assert drive(daemon, 10.0, until=lambda d: accepted(d) > chunks)
        assert asked[calls] is None  # from rest: without a prefix
    finally:
        daemon.close()


def test_rtc_on_a_bundle_without_prefix_inputs_does_not_start(tmp_path, tiny_checkpoint, emu):
    from export.bundle import ExportOptions, export_bundle
    from runtime.types import PrefixUnsupported

    old = tmp_path / "old-bundle"
    export_bundle(tiny_checkpoint, old, ExportOptions(domain_id=3, views=1, prefix_inputs=False),
                  progress=lambda line: None)
    daemon = rtc_daemon(tmp_path, old, emu.port)
    with pytest.raises(PrefixUnsupported, match=f'chunking = "rtc": the bundle {old} was exported without'):
        daemon.start()
    daemon.close()
    default = rtc_daemon(tmp_path, old, emu.port, chunking=None)  # the default, blend, runs it as before
    default.start()
    try:
        assert default.chunking.mode == "blend" and default.loop.config.splice.mode == "blend"
        assert drive(default, 20.0, until=lambda d: accepted(d) >= 2)
    finally:
        default.close()
