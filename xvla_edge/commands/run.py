"""``xvla-edge run --config robot.toml``: the on-robot daemon (see :mod:`xvla_edge.daemon.service`).

Exit codes: 0 after a clean stop (SIGTERM/SIGINT or ``--duration``), 1 when start-up fails, 2 for an
invalid config. Under systemd use the unit in ``xvla_edge/daemon/xvla-edge.service``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, required=True, help="robot.toml (see xvla_edge/daemon/robot.example.toml)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: run until stopped)")


def run(args: argparse.Namespace) -> int:
    from xvla_edge.daemon.config import ConfigError, load_config
    from xvla_edge.daemon.logs import configure_logging
    from xvla_edge.daemon.service import Daemon

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"xvla-edge run: invalid config\n{exc}", file=sys.stderr)
        return 2
    configure_logging(config.logging.level)
    log = logging.getLogger("xvla.daemon")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    daemon = Daemon(config)
    try:
        daemon.start()
    except Exception as exc:  # noqa: BLE001 - report any start-up failure by name, with the arm left holding
        log.error("start-up failed: %s", exc, extra={"event": "start_failed"})
        daemon.close()
        return 1
    try:
        summary = daemon.run(stop, args.duration)
    finally:
        daemon.close()
    for line in summary.lines():
        log.info(line, extra={"event": "summary"})
    return 0
