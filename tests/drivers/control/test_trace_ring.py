"""The control loop's trace ring: rows a reader gets are whole, in order, and reading never asks the loop."""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest

from drivers.arm import ArmConfigError
from drivers.control.control_loop import LoopConfig
from drivers.control.loop_process import ControlLoopClient
from drivers.control.trace_ring import MAX_TRACE_WIDTH, TraceRing
from drivers.emulation.sim_arm import SimArm


def test_a_reader_racing_the_writer_only_gets_whole_rows_in_order():
    ring = TraceRing(50, ["a", "b"])
    ring.start(8)
    stop = threading.Event()

    def writer() -> None:
        k = 0
        while not stop.is_set():
            k += 1
            ring.write(float(k), k % 2, np.full(8, float(k)), np.full(8, -float(k)))

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can: rows are torn if anything is
    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    try:
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            rows = ring.read()
            t = rows["time"]
            if len(t):
                reads += 1
                assert (rows["command"] == t[:, None]).all() and (rows["measured"] == -t[:, None]).all()
                assert (np.diff(t) == 1).all() and rows["mode"] == [("a", "b")[int(k) % 2] for k in t]
                assert len(t) <= 49
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(old)
    assert reads > 100


def test_widths_beyond_the_ring_are_refused_by_name():
    with pytest.raises(ArmConfigError, match=rf"the arm's command has {MAX_TRACE_WIDTH + 1} values; the control loop's "
                                             rf"trace holds 1 ... {MAX_TRACE_WIDTH}"):
        TraceRing(10, ["a"]).start(MAX_TRACE_WIDTH + 1)


@pytest.mark.subprocess
def test_the_trace_is_read_without_the_loop_even_while_it_cannot_run():
    """The client reads the ring the loop process writes: with that process stopped (SIGSTOP: it answers nothing)
    the trace is still there at once (before, the client asked the loop and waited for its answer)."""
    with ControlLoopClient(functools.partial(SimArm, time_constant=0.02), LoopConfig(realtime_priority=0)) as client:
        time.sleep(0.3)
        os.kill(client._process.pid, signal.SIGSTOP)
        try:
            trace = client.trace()
        finally:
            os.kill(client._process.pid, signal.SIGCONT)
        assert len(trace["time"]) > 10 and trace["command"].shape == (len(trace["time"]), 8)
        assert np.all(np.diff(trace["time"]) > 0) and set(trace["mode"]) <= {"idle", "holding", "tracking"}
