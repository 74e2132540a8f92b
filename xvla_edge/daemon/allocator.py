"""The daemon's memory allocator: glibc's per-thread arenas limited to two.

The daemon answers on many threads (32 for HTTP, the control socket's, the cameras'); glibc gives each new thread
an arena of its own up to eight per core, and under a flood of clients every arena's heap fragments on its own. In
the e-stop flood benchmark (``benchmarks/test_estop_flood.py``, AMD EPYC, 2 cores) the daemon's RSS kept growing
after warm-up with glibc's defaults (+1.5 % in 10 minutes, 45 threads throughout); with two arenas it started
20 MiB lower and grew +0.4 % in 6 minutes, flattening. Set with ``mallopt`` before the threads start, so it holds
for every later thread; ``MALLOC_ARENA_MAX`` in the environment (glibc reads it itself) wins. Not glibc (musl):
nothing to do.
"""

from __future__ import annotations

import ctypes
import os

ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Limit glibc's malloc to ``arenas`` arenas for threads started from now on; False when nothing was set (not
    glibc, or ``MALLOC_ARENA_MAX`` given in the environment)."""
    if os.environ.get("MALLOC_ARENA_MAX") or not _glibc():
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    return mallopt is not None and mallopt(_M_ARENA_MAX, arenas) == 1


def _glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError):  # the name is unknown where the C library is not glibc
        return False
