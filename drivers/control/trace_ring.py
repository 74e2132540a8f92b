"""The control loop's recent ticks (time, mode, commanded and measured values) in memory the loop writes and any
other process holding the same buffers reads, the loop never waiting for a reader.

Why not ask the loop over its pipe: 2000 ticks are about 290 kB, four times a pipe's buffer, so the loop sat in
``send`` until the parent — busy serving a flood of status pages — had read it all: 372 missed deadlines and a
30 ms tick in 40 s of ``/series`` requests (the status page's plot). Here the loop writes one row per tick and then
bumps a counter; a reader copies the rows and keeps only those that cannot have been overwritten while it copied
(and not the newest, which on a weakly ordered CPU such as the Jetson's may not be fully visible yet).
"""

from __future__ import annotations

import ctypes
from typing import Any, Dict, Optional, Sequence

import numpy as np

from drivers.arm import ArmConfigError

MAX_TRACE_WIDTH = 64  # values of a command vector (:meth:`drivers.arm.Target.to_vector`); 4 arms end-effector: 32


class TraceRing:
    """``length`` rows of ``time``, ``mode`` (an index into ``modes``), ``command`` and ``measured`` (``width``
    values each, the first :attr:`used` of them meaningful). :meth:`shared` puts the buffers where a child
    process started with them (``spawn`` included) writes into the same memory."""

    def __init__(self, length: int, modes: Sequence[str], raw: Optional[Dict[str, Any]] = None) -> None:
        self.length, self.modes = int(length), tuple(modes)
        self._raw = raw or {"time": (ctypes.c_double * length)(), "mode": (ctypes.c_int8 * length)(),
                            "command": (ctypes.c_double * (length * MAX_TRACE_WIDTH))(),
                            "measured": (ctypes.c_double * (length * MAX_TRACE_WIDTH))(),
                            "count": ctypes.c_uint64(0), "used": ctypes.c_uint32(0)}
        self._views()

    @classmethod
    def shared(cls, ctx: Any, length: int, modes: Sequence[str]) -> TraceRing:
        """A ring in shared memory of the multiprocessing context ``ctx`` (pass it to the child process)."""
        raw = {"time": ctx.RawArray(ctypes.c_double, length), "mode": ctx.RawArray(ctypes.c_int8, length),
               "command": ctx.RawArray(ctypes.c_double, length * MAX_TRACE_WIDTH),
               "measured": ctx.RawArray(ctypes.c_double, length * MAX_TRACE_WIDTH),
               "count": ctx.RawValue(ctypes.c_uint64, 0), "used": ctx.RawValue(ctypes.c_uint32, 0)}
        return cls(length, modes, raw)

    def _views(self) -> None:
        raw, n = self._raw, self.length
        self._time = np.frombuffer(raw["time"], np.float64)
        self._mode = np.frombuffer(raw["mode"], np.int8)
        self._command = np.frombuffer(raw["command"], np.float64).reshape(n, MAX_TRACE_WIDTH)
        self._measured = np.frombuffer(raw["measured"], np.float64).reshape(n, MAX_TRACE_WIDTH)

    def __getstate__(self) -> Dict[str, Any]:
        return {"length": self.length, "modes": self.modes, "raw": self._raw}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.length, self.modes, self._raw = state["length"], state["modes"], state["raw"]
        self._views()

    def start(self, width: int) -> None:
        """Empty the ring for command vectors of ``width`` values (the writer, before its first row)."""
        if not 1 <= width <= MAX_TRACE_WIDTH:
            raise ArmConfigError(f"the arm's command has {width} values; the control loop's trace holds 1 ... "
                                 f"{MAX_TRACE_WIDTH}")
        self._raw["count"].value = 0
        self._raw["used"].value = width

    def write(self, now: float, mode: int, command: Optional[np.ndarray], measured: Optional[np.ndarray]) -> None:
        """One tick's row (None: nothing sent / nothing measured, stored as NaN)."""
        count = self._raw["count"].value
        i, w = count % self.length, self._raw["used"].value
        self._time[i] = now
        self._mode[i] = mode
        self._command[i, :w] = np.nan if command is None else command
        self._measured[i, :w] = np.nan if measured is None else measured
        self._raw["count"].value = count + 1

    def read(self) -> Dict[str, Any]:
        """The rows held, oldest first: ``time`` [K], ``mode`` [K] (names), ``command`` and ``measured`` [K, used]."""
        before = self._raw["count"].value
        w = self._raw["used"].value
        time, mode = self._time.copy(), self._mode.copy()
        command, measured = self._command[:, :w].copy(), self._measured[:, :w].copy()
        after = self._raw["count"].value
        newest = before - 1  # complete when the counter was read; the one before it surely visible
        order = np.arange(max(after - self.length + 1, 0), max(newest, 0)) % self.length
        return {"time": time[order], "mode": [self.modes[m] for m in mode[order]],
                "command": command[order], "measured": measured[order]}
