"""Pacing for the control-loop process: absolute-deadline sleep, real-time priority, period statistics.

Why sleep and never spin: on a stock (non-PREEMPT_RT) kernel a SCHED_FIFO task that spins is throttled by
``sched_rt_runtime_us`` (by default it loses the CPU for ~50 ms every second), far worse than any sleep
jitter; a spinning SCHED_OTHER task also steals the core from inference. So each tick sleeps to an
absolute deadline.

Why ``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`` (through ctypes) when libc has it: the deadline
is absolute, so a preemption between reading the clock and going to sleep does not push the wake-up
later, and deadlines never drift because each one is the previous one plus the period. ``time.monotonic``
reads the same clock on Linux. Elsewhere, ``time.sleep(deadline - now)`` is the fallback (same deadline
arithmetic, one extra race).

SCHED_FIFO (``os.sched_setscheduler``) needs CAP_SYS_NICE or an RLIMIT_RTPRIO grant (systemd
``LimitRTPRIO=``); without it the loop runs as SCHED_OTHER with the timer slack lowered to 1 ns
(``prctl(PR_SET_TIMERSLACK)``; FIFO tasks have zero slack anyway).
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from typing import Any, Callable, Dict, Optional

import numpy as np

_CLOCK_MONOTONIC = 1
_TIMER_ABSTIME = 1
_PR_SET_TIMERSLACK = 29


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _load_libc() -> Optional[ctypes.CDLL]:
    """The C library the interpreter is linked with (its own symbols: no search, so importing this module runs
    no ``ldconfig`` process as ``ctypes.util.find_library`` would)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.clock_nanosleep.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Timespec), ctypes.c_void_p]
        libc.clock_nanosleep.restype = ctypes.c_int
        libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
        libc.prctl.restype = ctypes.c_int
    except (OSError, AttributeError):  # no libc, or it lacks these functions (not Linux)
        return None
    return libc


_LIBC = _load_libc()


def _sleep_fallback(deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


def _sleep_abstime(deadline: float) -> None:
    sec = int(deadline)
    ts = _Timespec(sec, int((deadline - sec) * 1e9))
    while _LIBC.clock_nanosleep(_CLOCK_MONOTONIC, _TIMER_ABSTIME, ctypes.byref(ts), None) == errno.EINTR:
        pass


#: Sleep until ``time.monotonic()`` reaches the given deadline (returns at once if it has passed).
sleep_until: Callable[[float], None] = _sleep_fallback if _LIBC is None else _sleep_abstime


def enable_realtime(priority: int, cpu: Optional[int] = None) -> str:
    """Best-effort real-time set-up of the calling process; returns a description of what it got.

    ``priority`` 1-99 asks for SCHED_FIFO at that priority (0 = do not ask); ``cpu`` pins the process.
    """
    notes = []
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
        notes.append(f"cpu {cpu}")
    if priority > 0 and hasattr(os, "SCHED_FIFO"):
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
            return ", ".join([f"SCHED_FIFO {priority}"] + notes)
        except PermissionError:
            notes.append("SCHED_FIFO not permitted")
    if _LIBC is not None and _LIBC.prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0) == 0:
        notes.append("timer slack 1 ns")
    return ", ".join(["SCHED_OTHER"] + notes)


def interval_summary(interval_error: np.ndarray) -> Dict[str, float]:
    """p50, p99 and max of tick-interval errors (seconds); the one definition the summary, ``/metrics`` and
    the demo's plot all use. An empty array gives zeros."""
    err = interval_error if interval_error.size else np.zeros(1)
    return {
        "interval_error_p50": float(np.percentile(err, 50)),
        "interval_error_p99": float(np.percentile(err, 99)),
        "interval_error_max": float(err.max()),
    }


#: Upper bounds of the tick-interval histogram, in periods: on time is about 1; one missed deadline about 2.
INTERVAL_BUCKETS = (0.5, 0.9, 0.98, 1.02, 1.1, 1.5, 2.0, 3.0, 5.0, 10.0)


class PeriodStats:
    """Per-tick timing over a sliding window of ``window`` ticks, plus totals.

    The **interval error** of a tick is the time since the previous tick's wake-up minus the period. A tick
    that wakes on time scores about 0; when the tick before it overran and its deadlines were skipped, it
    scores about one period per skipped deadline. Missed deadlines therefore sit inside the percentiles
    instead of vanishing from them (waking late against a re-based deadline would hide them). ``busy`` is
    the time from wake-up to the end of the tick's work. An **overrun** is a tick whose work ended after
    the next deadline; the deadlines it passed are **missed** and skipped, not caught up in a burst.
    """

    def __init__(self, period: float, window: int) -> None:
        self.period = period
        self._interval_error = np.zeros(window)
        self._busy = np.zeros(window)
        self._last_wake: Optional[float] = None
        self.ticks = 0
        self.intervals = 0
        self.overruns = 0
        self.missed = 0
        self.max_interval_error = 0.0
        self._bounds = np.array(INTERVAL_BUCKETS) * period
        self._bucket_counts = np.zeros(len(INTERVAL_BUCKETS) + 1, dtype=np.int64)  # the last: above every bound
        self._interval_sum = 0.0

    def record(self, wake: float, busy: float, missed: int) -> None:
        """One tick: it woke at ``wake``, worked ``busy`` seconds and made ``missed`` deadlines pass."""
        i = self.ticks % self._busy.shape[0]
        self._busy[i] = busy
        self.ticks += 1
        if self._last_wake is not None:
            error = wake - self._last_wake - self.period
            self._interval_error[self.intervals % self._interval_error.shape[0]] = error
            self.intervals += 1
            self.max_interval_error = max(self.max_interval_error, error)
            self._bucket_counts[int(np.searchsorted(self._bounds, error + self.period, side="left"))] += 1
            self._interval_sum += error + self.period
        self._last_wake = wake
        if missed:
            self.overruns += 1
            self.missed += missed

    def interval_errors(self) -> np.ndarray:
        """The window's interval errors (seconds), oldest first."""
        n = self._interval_error.shape[0]
        order = np.arange(max(self.intervals - n, 0), self.intervals) % n
        return self._interval_error[order].copy()

    def interval_histogram(self) -> Dict[str, Any]:
        """Every tick interval since start (seconds) as a cumulative histogram: ``bounds`` (upper bounds,
        :data:`INTERVAL_BUCKETS` periods), ``counts`` (intervals <= each bound; then all of them), ``sum``,
        ``count``."""
        return {"bounds": [float(b) for b in self._bounds],
                "counts": [int(c) for c in np.cumsum(self._bucket_counts)],
                "sum": self._interval_sum, "count": self.intervals}

    def summary(self) -> Dict[str, float]:
        """Interval-error and busy percentiles over the window (seconds), the all-time maximum interval
        error, and the counters (``missed_deadlines`` all-time)."""
        n = min(self.ticks, self._busy.shape[0])
        busy = self._busy[:n] if n else np.zeros(1)
        return {
            "ticks": self.ticks,
            "window": min(self.intervals, self._interval_error.shape[0]),
            **interval_summary(self.interval_errors()),
            "interval_error_max_all": self.max_interval_error,
            "busy_p50": float(np.percentile(busy, 50)),
            "busy_p99": float(np.percentile(busy, 99)),
            "busy_max": float(busy.max()),
            "overruns": self.overruns,
            "missed_deadlines": self.missed,
        }
