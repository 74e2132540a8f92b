"""Run the app on uvicorn: in the foreground (``xvla-edge serve``) or on a thread (tests, benchmarks).

Exposure rule: a host that is not a loopback address needs a token (the rule of :mod:`xvla_edge.web.auth`).
The listening socket is bound here, with ``TCP_NODELAY`` (connections accepted from it inherit it): without it
each response waited for the client's delayed ACK — ``/healthz`` took 44 ms on loopback instead of 0.5 ms.
uvicorn's access log is off because it would print query strings, tokens included; refused requests are logged
by the app without them. HTTP is parsed by :class:`~xvla_edge.serve.protocol.HeadLimitedProtocol` (a request
head over 32 KiB is answered 431). A websocket connection reads one frame ahead of the app at most (uvicorn
pauses reading until the app takes it; ``ws_max_queue=1`` for uvicorn's older websockets protocol).
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Optional

from xvla.errors import XVLAError
from xvla_edge.web.auth import TokenError, check_token, is_loopback


class ServeError(XVLAError, ValueError):
    """The server cannot start as asked (exposure without a token, a port in use)."""


def check_exposure(host: str, token: Optional[str]) -> None:
    """Refuse a non-loopback ``host`` without a token, and a token that does not follow the token rule."""
    if token is not None:
        try:
            check_token(token)
        except TokenError as exc:
            raise ServeError(f"token: {exc}") from None
    if not is_loopback(host) and token is None:
        raise ServeError(f"--host {host} is reachable from other machines: give --token-file (or --token, or "
                         "XVLA_SERVE_TOKEN) so that every request must carry it, or bind 127.0.0.1")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (``port`` 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted connections inherit it
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    sock.listen(128)
    return sock


def uvicorn_server(app: Any, log_level: str = "info") -> Any:
    """uvicorn for ``app`` (made by :func:`~xvla_edge.serve.app.create_app`: its limits bound the websocket frames
    uvicorn accepts)."""
    import uvicorn

    from xvla_edge.serve.protocol import HeadLimitedProtocol

    config = uvicorn.Config(app, http=HeadLimitedProtocol, log_level=log_level, access_log=False,
                            ws_max_size=app.state.limits.max_frame_bytes, ws_max_queue=1, lifespan="off")
    return uvicorn.Server(config)


class ServerThread:
    """The app served on a thread from a socket bound here (``port`` 0: a free one); :meth:`stop` ends it."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = bind(host, port)
        self.host, self.port = self.sock.getsockname()[:2]
        self.server = uvicorn_server(app, log_level="warning")
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="xvla-serve")
        self.thread.start()
        end = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > end:
                raise ServeError("the server thread did not start")
            time.sleep(0.01)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
