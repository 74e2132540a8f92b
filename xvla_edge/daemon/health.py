"""``/healthz``, ``/metrics`` and ``POST /record`` over HTTP on a background thread (loopback by default).

Reading is open; what changes state (``POST``) needs ``Authorization: Bearer <token>`` when the server has a
token (robot.toml's ``[health].token_file``, required when it listens beyond loopback): 401 otherwise.
"""

from __future__ import annotations

import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, List, Optional, Tuple

from xvla.errors import XVLAError
from xvla_edge.daemon.metrics import CONTENT_TYPE

Health = Callable[[], Tuple[str, List[str]]]


class HealthError(XVLAError, OSError):
    """The health server cannot listen where robot.toml's ``[health]`` says."""


class HealthServer:
    """Serves until :meth:`close`. ``port`` 0 picks a free port (see :attr:`port`); ``metrics`` renders the
    ``/metrics`` page."""

    def __init__(self, host: str, port: int, health: Health, metrics: Callable[[], bytes],
                 on_record: Optional[Callable[[], str]] = None, *, token: Optional[str] = None) -> None:
        outer = self
        expected = None if token is None else f"Bearer {token}".encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path == "/healthz":
                    status, reasons = health()
                    body = {"status": status, "reasons": reasons} if reasons else {"status": status}
                    self._send(200 if status == "ok" else 503, "application/json", json.dumps(body))
                elif self.path == "/metrics":
                    self._send(200, CONTENT_TYPE, metrics())
                else:
                    self._send(404, "text/plain", "not found\n")

            def do_POST(self) -> None:  # noqa: N802
                given = self.headers.get("Authorization", "").encode()
                if expected is not None and not hmac.compare_digest(given, expected):
                    self._send(401, "text/plain", "a bearer token is required (robot.toml [health].token_file)\n",
                               {"WWW-Authenticate": "Bearer"})
                elif self.path == "/record" and on_record is not None:
                    self._send(200, "application/json", json.dumps({"path": on_record()}))
                else:
                    self._send(404, "text/plain", "not found\n")

            def _send(self, code: int, kind: str, text: str | bytes, headers: Optional[dict] = None) -> None:
                data = text if isinstance(text, bytes) else text.encode()
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:  # requests are not worth a log line each
                pass

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise HealthError(f"[health] cannot listen on {host}:{port}: {exc.strerror or exc} (set [health].port to "
                              "a free port, or 0 to turn the server off)") from exc
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=outer._server.serve_forever, name="xvla-health", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)
