"""What benchmarks read about the machine (CPU model and flags) and about the processes they start (memory,
threads, children), and a free port for the servers they start."""

from __future__ import annotations

import platform
import socket
from pathlib import Path
from typing import Dict


def cpu_model() -> str:
    """The CPU model as the kernel names it (``model name``; ``Hardware``/``Model`` on some ARM boards)."""
    try:
        with open("/proc/cpuinfo") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return platform.processor() or platform.machine()
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    return fields.get("model name") or fields.get("Model") or fields.get("Hardware") or platform.machine()


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":")[0].strip() in ("flags", "Features"):
                    return line.split(":", 1)[1].split()
    except OSError:
        pass
    return []


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"process {pid} has no {field} (a zombie?)")


def rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` in kB (``VmRSS`` of ``/proc/<pid>/status``)."""
    return _status(pid, "VmRSS")


def threads(pid: int) -> int:
    """Threads of ``pid`` (``Threads`` of ``/proc/<pid>/status``)."""
    return _status(pid, "Threads")


def children(pid: int) -> Dict[str, int]:
    """The daemon's child processes by role: the control loop (``spawn_main``) and the resource tracker."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            role = "control-loop" if "spawn_main" in cmdline else "resource-tracker" if "resource_tracker" in cmdline \
                else f"child {child}"
            found[role] = int(child)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
