"""The daemon's malloc arenas (xvla_edge.daemon.allocator), counted by glibc itself (``malloc_stats``) in a fresh
interpreter whose 16 threads each allocate at once."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from xvla_edge.daemon import allocator

pytestmark = [pytest.mark.skipif(not allocator._glibc(), reason="glibc's malloc only"), pytest.mark.subprocess]

PROGRAM = """
import ctypes, sys, threading
from xvla_edge.daemon.allocator import limit_arenas
print(limit_arenas() if sys.argv[1] == "limit" else None, flush=True)
start, kept = threading.Barrier(16), []
def work():
    start.wait()
    kept.append(bytearray(100_000))  # from malloc (under the mmap threshold), in this thread's arena
threads = [threading.Thread(target=work) for _ in range(16)]
for t in threads:
    t.start()
for t in threads:
    t.join()
ctypes.CDLL(None).malloc_stats()
"""


def arenas(mode: str, **env: str) -> tuple[str, int]:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, env=environ,
                         timeout=60, check=True)
    return out.stdout.strip(), sum(line.startswith("Arena ") for line in out.stderr.splitlines())


def test_threads_share_two_arenas():
    assert arenas("limit") == ("True", allocator.ARENAS)
    assert arenas("none")[1] > allocator.ARENAS  # glibc's default: an arena per thread, up to 8 per core


def test_malloc_arena_max_in_the_environment_wins():
    assert arenas("limit", MALLOC_ARENA_MAX="3") == ("False", 3)
