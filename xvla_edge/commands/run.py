"""``xvla-edge run --config robot.toml``: the on-robot daemon (see :mod:`xvla_edge.daemon.service`).

Exit codes: 0 after a clean stop (SIGTERM/SIGINT, also during start-up, or ``--duration``); 1 when start-up
fails; 2 for an invalid config; 3 when the control-loop process died or stopped answering
(``ControlLoopLost``); 4 when inference failed repeatedly (``InferenceFailing``). Faults 3 and 4 are logged
as JSON lines with their ``event`` (``control_loop_lost``, ``inference_failing``) before the exit. Under
systemd use the unit in ``xvla_edge/daemon/xvla-edge.service``: it restarts the daemon after exit codes 1, 3
and 4, not after 2 (an invalid config does not fix itself).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

# How long a thread of the daemon may keep the interpreter while another waits (Python's default: 5 ms). The
# thread that reads an e-stop waits behind every busy thread of the process (HTTP requests, status pages):
# 5 ms each put it 60-90 ms behind a flood of 16 HTTP clients (benchmarks/test_estop_flood.py).
SWITCH_INTERVAL_S = 0.0005


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, required=True, help="robot.toml (see xvla_edge/daemon/robot.example.toml)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: run until stopped)")


def run(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # first: a stop during the imports and start-up is a clean stop
        signal.signal(sig, lambda signum, frame: stop.set())

    from xvla_edge.daemon.allocator import limit_arenas
    limit_arenas()  # before any thread starts

    from xvla_edge.daemon.config import ConfigError, load_config
    from xvla_edge.daemon.logs import configure_logging
    from xvla_edge.daemon.service import Daemon
    from xvla_edge.daemon.supervisor import DaemonFault, StartupInterrupted

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"xvla-edge run: invalid config\n{exc}", file=sys.stderr)
        return 2
    configure_logging(config.logging.level)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    log = logging.getLogger("xvla.daemon")
    daemon = Daemon(config)
    try:
        daemon.start(stop)
    except StartupInterrupted as exc:
        log.info("start-up stopped: %s", exc, extra={"event": "start_interrupted"})
        daemon.close()
        return 0
    except Exception as exc:  # noqa: BLE001 - report any start-up failure by name, with the arm left holding
        log.error("start-up failed: %s", exc, extra={"event": "start_failed"})
        daemon.close()
        return 1
    fault = None
    try:
        summary = daemon.run(stop, args.duration)
    except DaemonFault as exc:  # already logged by the daemon with its event
        fault, summary = exc, daemon.summary()
    finally:
        daemon.close()
    for line in summary.lines():
        log.info(line, extra={"event": "summary"})
    if fault is None:
        return 0
    log.error("exiting with code %d after %s", fault.exit_code, type(fault).__name__,
              extra={"event": "fault_exit", "fault": fault.event, "exit_code": fault.exit_code})
    return fault.exit_code
