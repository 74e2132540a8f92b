"""A CPU hog for the timing benchmarks: what an inference process does to the cores beside a control loop."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any


def _spin(stop: Any) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


class CpuHog:
    """``n`` pure-Python busy processes from ``with`` until its end."""

    def __init__(self, n: int) -> None:
        ctx = mp.get_context("spawn")
        self._stop = ctx.Event()
        self._procs = [ctx.Process(target=_spin, args=(self._stop,), daemon=True) for _ in range(n)]

    def __enter__(self) -> CpuHog:
        for p in self._procs:
            p.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for p in self._procs:
            p.join(5)
