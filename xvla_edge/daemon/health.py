"""The daemon's HTTP side on a background thread (loopback by default): ``/healthz``, ``/metrics``,
``POST /record``, and for operators the status page ``/`` (``status.html``: plain HTML and JavaScript, no
build step; it polls ``/status`` and ``/series`` and draws with SVG), ``/status`` (what ``xvla-edge ctl
status`` shows), ``/series`` (the commanded and measured path of the last seconds, chunk-latency and
tick-interval histograms), ``/camera/<slot>.png`` (the camera's latest frame, 160 pixels wide, rendered
here) and ``POST /control`` (an operator command, ``{"command": ...}`` as on the control socket: 200 done,
409 refused, with the reply).

Reading is open; what changes state (``POST``) needs ``Authorization: Bearer <token>`` when the server has a
token (robot.toml's ``[health].token_file``, required when it listens beyond loopback): 401 otherwise.
"""

from __future__ import annotations

import hmac
import json
import math
import re
import threading
from importlib import resources
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from xvla.errors import XVLAError
from xvla_edge.daemon.metrics import CONTENT_TYPE

Health = Callable[[], Tuple[str, List[str]]]
MAX_CONTROL_BYTES = 64 * 1024
_CAMERA = re.compile(r"^/camera/([0-2])\.png(\?.*)?$")


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


def status_page() -> bytes:
    return resources.files("xvla_edge.daemon").joinpath("status.html").read_bytes()


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
        expected = None if token is None else f"Bearer {token}".encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path == "/healthz":
                    status, reasons = health()
                    body = {"status": status, "reasons": reasons} if reasons else {"status": status}
                    identity = bundle_id()
                    if identity is not None:  # what a fleet flash waits for after a switch
                        body["bundle_id"] = identity
                    self._send(200 if status == "ok" else 503, "application/json", json.dumps(body))
                elif self.path == "/metrics":
                    self._send(200, CONTENT_TYPE, metrics())
                elif operator is not None and self.path in ("/", "/index.html"):
                    self._send(200, "text/html; charset=utf-8", status_page())
                elif operator is not None and self.path == "/status":
                    self._send(200, "application/json", _json(operator.status()))
                elif operator is not None and self.path == "/series":
                    self._send(200, "application/json", _json(operator.series()))
                elif operator is not None and _CAMERA.match(self.path):
                    png = operator.camera(int(_CAMERA.match(self.path).group(1)))  # type: ignore[union-attr]
                    if png is None:
                        self._send(404, "text/plain", "no frame from this camera\n")
                    else:
                        self._send(200, "image/png", png, {"Cache-Control": "no-store"})
                else:
                    self._send(404, "text/plain", "not found\n")

            def do_POST(self) -> None:  # noqa: N802
                given = self.headers.get("Authorization", "").encode()
                if expected is not None and not hmac.compare_digest(given, expected):
                    self._send(401, "text/plain", "a bearer token is required (robot.toml [health].token_file)\n",
                               {"WWW-Authenticate": "Bearer"})
                elif self.path == "/record" and on_record is not None:
                    self._send(200, "application/json", json.dumps({"path": on_record()}))
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
