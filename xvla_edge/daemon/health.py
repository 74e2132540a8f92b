"""The daemon's HTTP side on a background thread (loopback by default): ``/healthz``, ``/metrics``,
``POST /record``, and for operators the status page ``/`` (``status.html``: plain HTML and JavaScript, no
build step; it polls ``/status`` and ``/series`` and draws with SVG), ``/status`` (what ``xvla-edge ctl
status`` shows), ``/series`` (the commanded and measured path of the last seconds, chunk-latency and
tick-interval histograms), ``/camera/<slot>.png`` (the camera's latest frame, 160 pixels wide, rendered
here) and ``POST /control`` (an operator command, ``{"command": ...}`` as on the control socket: 200 done,
409 refused, with the reply).

What protects it:

- Beyond loopback a token is required (robot.toml's ``[health].token_file``): every ``POST`` must carry
  ``Authorization: Bearer <token>`` (401 otherwise); reading stays open. A browser never adds that header to a
  cross-site request on its own.
- Listening on loopback (the default, where no token is needed), a request must name a loopback host (``Host:
  127.0.0.1:…``, ``localhost``, ``[::1]``; any port, so an SSH tunnel works): a page that points its own DNS name
  at 127.0.0.1 (DNS rebinding) gets 403 for everything, the camera frames included.
- Every ``POST`` must be ``Content-Type: application/json`` (415 otherwise) and, when it has an ``Origin``, come
  from this server's own origin (403 otherwise): a web page in the technician's browser cannot send a form or a
  ``text/plain`` request that acts.
- At most :data:`MAX_CONNECTIONS` requests are served at once, by a fixed set of threads (503 with ``Retry-After``
  beyond that, answered without one); a connection that sends nothing for :data:`TIMEOUT_S` is closed; a client
  that goes away before its reply costs one log line (at most one per ten seconds).

``POST /control`` with ``{"command": "estop"}`` takes the daemon's e-stop path, which never waits for another
command.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import queue
import re
import socket
import sys
import threading
import time
from importlib import resources
from http.server import BaseHTTPRequestHandler, HTTPServer
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from xvla.errors import XVLAError
from xvla_edge.daemon.logs import Throttled
from xvla_edge.web.auth import is_loopback, same_token
from xvla_edge.web.metrics import CONTENT_TYPE

Health = Callable[[], Tuple[str, List[str]]]
MAX_CONTROL_BYTES = 64 * 1024
MAX_CONNECTIONS = 32
READ_CACHE_S = 0.1  # /status, /series, /metrics and camera frames are at most this old
TIMEOUT_S = 10.0
BACKLOG = 128
_CAMERA = re.compile(r"^/camera/([0-2])\.png(\?.*)?$")
_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 1\r\n"
         b"Content-Length: 33\r\nConnection: close\r\n\r\ntoo many connections; try again\r\n")
log = logging.getLogger("xvla.daemon.health")


def _hostname(authority: str) -> str:
    """The host of a ``Host`` header or URL authority, lower case, without port or IPv6 brackets."""
    try:
        return (urlsplit(f"//{authority}").hostname or "").lower()
    except ValueError:
        return ""


class _BoundedServer(HTTPServer):
    """Requests served by ``MAX_CONNECTIONS`` threads started with the server and reused; beyond that a fixed 503
    written by the accepting thread. Clients that go away are one throttled log line, not a traceback.

    Written here rather than with ``ThreadPoolExecutor``: that pool starts a thread whenever none is idle, so under
    a flood the thread count (and the allocator's arenas with it) crept up for minutes (36 → 39 threads, +1.5 %
    RSS in 10 min); a thread per request was worse, and each start waited for the interpreter."""

    request_queue_size = BACKLOG

    def __init__(self, address: Tuple[str, int], handler: Any) -> None:
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.requests: "queue.SimpleQueue[Optional[Tuple[Any, Any]]]" = queue.SimpleQueue()
        self.dropped = Throttled(log, "http_client_gone")
        super().__init__(address, handler)
        for i in range(MAX_CONNECTIONS):
            threading.Thread(target=self._work, name=f"xvla-http-{i}", daemon=True).start()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            try:
                request.settimeout(0.1)
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        self.requests.put((request, client_address))

    def _work(self) -> None:
        while (item := self.requests.get()) is not None:
            self._serve_one(*item)

    def _serve_one(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - as socketserver does: reported by handle_error
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self.slots.release()

    def server_close(self) -> None:
        super().server_close()
        for _ in range(MAX_CONNECTIONS):
            self.requests.put(None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout)):
            self.dropped(f"HTTP client went away before its reply ({type(exc).__name__})")
        else:
            log.error("HTTP request failed", exc_info=True, extra={"event": "http_error"})


def _json(value: Any) -> str:
    """JSON a browser can parse: NaN and infinities become null."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    return json.dumps(clean(value), default=str)


@functools.lru_cache(maxsize=1)
def status_page() -> bytes:
    return resources.files("xvla_edge.daemon").joinpath("status.html").read_bytes()


class _Recent:
    """What the read endpoints answered, reused for ``ttl`` seconds: a flood of readers costs one rendering per
    ``ttl`` (and its allocations), not one each; the status page polls once a second."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._values: Dict[str, Tuple[float, Any]] = {}

    def get(self, key: str, make: Callable[[], Any]) -> Any:
        with self._lock:
            made, value = self._values.get(key, (-math.inf, None))
            if time.monotonic() - made > self.ttl:
                value = make()
                self._values[key] = (time.monotonic(), value)
            return value


@dataclass
class Operator:
    """What the operator side of the server calls (all from its request threads)."""

    status: Callable[[], Dict[str, Any]]
    series: Callable[[], Dict[str, Any]]
    camera: Callable[[int], Optional[bytes]]
    command: Callable[[Dict[str, Any]], Dict[str, Any]]


class HealthError(XVLAError, OSError):
    """The health server cannot listen where robot.toml's ``[health]`` says."""


class HealthServer:
    """Serves until :meth:`close`. ``port`` 0 picks a free port (see :attr:`port`); ``metrics`` renders the
    ``/metrics`` page."""

    def __init__(self, host: str, port: int, health: Health, metrics: Callable[[], bytes],
                 on_record: Optional[Callable[[], str]] = None, *, token: Optional[str] = None,
                 operator: Optional[Operator] = None, bundle_id: Callable[[], Optional[str]] = lambda: None) -> None:
        outer = self
        recent = _Recent(READ_CACHE_S)
        expected = None if token is None else f"Bearer {token}"
        local_only = is_loopback(host.lower())

        class Handler(BaseHTTPRequestHandler):
            timeout = TIMEOUT_S

            def _foreign_host(self) -> bool:
                """Listening on loopback: True (and 403 sent) unless the request names a loopback host."""
                if local_only and not is_loopback(_hostname(self.headers.get("Host", ""))):
                    self._send(403, "text/plain", "this server answers requests for a loopback host only "
                               f"(Host: {self.headers.get('Host', '')!r}); use http://127.0.0.1:{outer.port}/\n")
                    return True
                return False

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self._foreign_host():
                    return
                if self.path == "/healthz":
                    status, reasons = health()
                    body = {"status": status, "reasons": reasons} if reasons else {"status": status}
                    identity = bundle_id()
                    if identity is not None:  # what a fleet flash waits for after a switch
                        body["bundle_id"] = identity
                    self._send(200 if status == "ok" else 503, "application/json", json.dumps(body))
                elif self.path == "/metrics":
                    self._send(200, CONTENT_TYPE, recent.get("metrics", metrics))
                elif operator is not None and self.path in ("/", "/index.html"):
                    self._send(200, "text/html; charset=utf-8", status_page())
                elif operator is not None and self.path == "/status":
                    self._send(200, "application/json", recent.get("status", lambda: _json(operator.status())))
                elif operator is not None and self.path == "/series":
                    self._send(200, "application/json", recent.get("series", lambda: _json(operator.series())))
                elif operator is not None and _CAMERA.match(self.path):
                    slot = int(_CAMERA.match(self.path).group(1))  # type: ignore[union-attr]
                    png = recent.get(f"camera{slot}", lambda: operator.camera(slot))
                    if png is None:
                        self._send(404, "text/plain", "no frame from this camera\n")
                    else:
                        self._send(200, "image/png", png, {"Cache-Control": "no-store"})
                else:
                    self._send(404, "text/plain", "not found\n")

            def do_POST(self) -> None:  # noqa: N802
                given = self.headers.get("Authorization", "")
                kind = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
                origin = self.headers.get("Origin")
                if self._foreign_host():
                    return
                if expected is not None and not same_token(given, expected):
                    self._send(401, "text/plain", "a bearer token is required (robot.toml [health].token_file)\n",
                               {"WWW-Authenticate": "Bearer"})
                elif kind != "application/json":
                    self._send(415, "text/plain", f"expected Content-Type: application/json, got {kind or 'none'!r}\n")
                elif origin is not None and urlsplit(origin).netloc.lower() != self.headers.get("Host", "").lower():
                    self._send(403, "text/plain", f"a request from another site ({origin!r}) may not act here\n")
                elif self.path == "/record" and on_record is not None:
                    try:
                        self._send(200, "application/json", json.dumps({"path": on_record()}))
                    except XVLAError as exc:  # the recorder's folder cannot be written
                        self._send(409, "application/json", _json({"ok": False, "error": str(exc)}))
                elif self.path == "/control" and operator is not None:
                    self._control(operator)
                else:
                    self._send(404, "text/plain", "not found\n")

            def _control(self, op: Operator) -> None:
                length = self.headers.get("Content-Length", "")
                if not length.isdigit() or int(length) > MAX_CONTROL_BYTES:
                    self._send(413 if length.isdigit() else 411, "application/json",
                               _json({"ok": False, "error": f"a JSON body of at most {MAX_CONTROL_BYTES} bytes"}))
                    return
                try:
                    request = json.loads(self.rfile.read(int(length)))
                    if not isinstance(request, dict) or not isinstance(request.get("command"), str):
                        raise ValueError('expected an object with a "command"')
                except (ValueError, RecursionError) as exc:
                    self._send(400, "application/json", _json({"ok": False, "error": f"not a JSON command ({exc})"}))
                    return
                reply = op.command(request)
                self._send(200 if reply.get("ok") else 409, "application/json", _json(reply))

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
            self._server = _BoundedServer((host, port), Handler)
        except OSError as exc:
            raise HealthError(f"[health] cannot listen on {host}:{port}: {exc.strerror or exc} (set [health].port to "
                              "a free port, or 0 to turn the server off)") from exc
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=outer._server.serve_forever, name="xvla-health", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)
