"""JSON-lines logs on stdout: one object per line with ``ts``, ``level``, ``logger``, ``msg`` and any
``extra={...}`` fields (``event``, ``latency_s``, ...), exceptions as ``exc``. journald and log shippers
read it as is."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
import threading
import time

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
LEVELS = ("debug", "info", "warning", "error")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "info") -> None:
    """Route the ``xvla`` loggers to stdout as JSON lines at ``level`` (one of :data:`LEVELS`)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("xvla")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


class Throttled:
    """A log line for an event that may come in floods (clients that go away before their reply): the first one
    at once, then at most one line per ``interval_s`` saying how many happened since; never a traceback."""

    def __init__(self, logger: logging.Logger, event: str, interval_s: float = 10.0) -> None:
        self.logger, self.event, self.interval_s = logger, event, interval_s
        self._lock = threading.Lock()
        self._last = -float("inf")
        self._suppressed = 0

    def __call__(self, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.interval_s:
                self._suppressed += 1
                return
            since, self._suppressed, self._last = self._suppressed, 0, now
        more = f" (and {since} more in the last {self.interval_s:g} s)" if since else ""
        self.logger.info(message + more, extra={"event": self.event, "suppressed": since})
