"""The loop's timing statistics tell the truth: ticks that overran and made deadlines pass show up in the
interval-error percentiles and in the missed-deadline count, exactly as an independent computation from the
wake-up times says. The pacing loop (``drivers.control.loop_process._run``) runs on a fake clock and sleeper that
force the overruns, so nothing depends on how loaded the machine is.
"""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import pytest

from drivers.control import loop_process
from drivers.control.control_loop import LoopConfig
from drivers.system.realtime import PeriodStats, interval_summary

RATE_HZ = 200
PERIOD = 1.0 / RATE_HZ
TICKS = 3000  # more than the 2000-tick window: the window wraps


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now

    def sleep_until(self, deadline: float) -> None:
        """Wake at the deadline plus a little scheduling jitter (never early)."""
        self.sleeps += 1
        self.now = max(self.now, deadline) + 2e-5 * (self.sleeps % 5)


def busy_time(i: int) -> float:
    if i == 700:
        return 0.023  # four deadlines pass
    if i % 20 == 7:
        return 0.006  # one deadline passes
    return 0.0003


class StubLoop:
    """Stands in for ControlLoop: each tick takes ``busy_time`` on the fake clock; records wake-ups."""

    def __init__(self, clock: FakeClock) -> None:
        self.config = LoopConfig(rate_hz=RATE_HZ, stats_window_s=10.0)
        self.clock = clock
        self.wakes: List[float] = []

    def tick(self, now: float) -> None:
        self.clock.now += busy_time(len(self.wakes))
        self.wakes.append(now)

    def stats(self, timing: Dict[str, float], scheduler: str, interval_histogram: Dict[str, Any]) -> Dict[str, float]:
        self.histogram = interval_histogram
        return timing


class StubConn:
    """No messages until ``TICKS`` ticks have run; then a trace request and a stop."""

    def __init__(self, loop: StubLoop) -> None:
        self.loop = loop
        self.inbox = [("timing", 1), ("stop", 2)]
        self.replies: Dict[int, Any] = {}

    def poll(self) -> bool:
        return len(self.loop.wakes) >= TICKS and bool(self.inbox)

    def recv(self) -> tuple:
        return self.inbox.pop(0)

    def send(self, message: tuple) -> None:
        self.replies[message[1]] = message[2]


def test_missed_deadlines_are_in_the_percentiles_and_counted() -> None:
    clock = FakeClock()
    loop = StubLoop(clock)
    conn = StubConn(loop)
    loop_process._run(loop, conn, "SCHED_OTHER", clock=clock, sleep=clock.sleep_until)  # type: ignore[arg-type]
    trace, timing = conn.replies[1], conn.replies[2]
    assert timing == trace["timing"]  # the timing request and the final stats: one window

    # independent computation from the wake-up times alone (the replying tick is recorded after its reply)
    wakes = np.array(loop.wakes[:-1])
    intervals = np.diff(wakes) - PERIOD
    window = intervals[-2000:]
    slot = np.round((wakes - wakes[0]) / PERIOD).astype(int)  # the deadline each tick woke for
    missed = int(slot[-1] + 1 - len(wakes))
    assert missed == 150 + 4  # one per slow tick (i % 20 == 7), four for the very slow one
    np.testing.assert_array_equal(trace["interval_error"], window)
    assert timing["window"] == 2000 and timing["ticks"] == len(wakes)
    assert timing["missed_deadlines"] == missed and timing["overruns"] == 150 + 1
    assert timing["interval_error_p50"] == pytest.approx(np.percentile(window, 50), abs=1e-12)
    assert timing["interval_error_p99"] == pytest.approx(np.percentile(window, 99), abs=1e-12)
    assert timing["interval_error_max"] == pytest.approx(window.max(), abs=1e-12)
    assert timing["interval_error_max_all"] == pytest.approx(intervals.max(), abs=1e-12)
    # 5 % of intervals lasted two periods: the p99 says so (a wake-up lateness figure would say ~0.05 ms)
    assert timing["interval_error_p99"] == pytest.approx(PERIOD, abs=1e-4)
    assert timing["interval_error_max_all"] == pytest.approx(4 * PERIOD, abs=1e-4)
    # the histogram /metrics exports: every interval since start, cumulative counts per bound
    histogram, durations = loop.histogram, np.diff(wakes)
    assert histogram["count"] == len(durations) and histogram["counts"][-1] == len(durations)
    assert histogram["sum"] == pytest.approx(durations.sum(), abs=1e-9)
    for bound, count in zip(histogram["bounds"], histogram["counts"]):
        assert count == int((durations <= bound).sum()), bound
    assert histogram["counts"][histogram["bounds"].index(1.02 * PERIOD)] == len(durations) - 151  # all but slow


def test_period_stats_before_two_ticks() -> None:
    stats = PeriodStats(PERIOD, window=10)
    assert stats.summary()["window"] == 0 and stats.summary()["interval_error_p99"] == 0.0
    stats.record(1.0, 0.001, 0)
    assert stats.interval_errors().size == 0
    stats.record(1.0 + 3 * PERIOD, 0.001, 0)
    np.testing.assert_allclose(stats.interval_errors(), [2 * PERIOD])
    assert interval_summary(stats.interval_errors())["interval_error_p50"] == pytest.approx(2 * PERIOD)
