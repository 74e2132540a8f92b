"""JSON-lines logs on stdout: one object per line with ``ts``, ``level``, ``logger``, ``msg`` and any
``extra={...}`` fields (``event``, ``latency_s``, ...), exceptions as ``exc``. journald and log shippers
read it as is."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sys

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
