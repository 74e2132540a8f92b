"""Run the app on uvicorn: in the foreground (``xvla-edge serve``) or on a thread (tests, benchmarks).

Exposure rule: a host that is not a loopback address needs a token (the rule of :mod:`xvla_edge.web.auth`), unless
the operator opts into lab mode (``--allow-unauthenticated``), which is announced by a warning naming the address.
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
from xvla_edge.web.auth import TokenError, check_token, is_loopback, token_required


class ServeError(XVLAError, ValueError):
    """The server cannot start as asked (exposure without a token, a port in use)."""


def check_exposure(host: str, token: Optional[str], *, allow_unauthenticated: bool = False) -> None:
    """Refuse a non-loopback ``host`` without a token unless ``allow_unauthenticated`` (lab mode), a token that
    does not follow the token rule, and lab mode where it means nothing (with a token, or on loopback)."""
    if token is not None:
        try:
            check_token(token)
        except TokenError as exc:
            raise ServeError(f"token: {exc}") from None
    if allow_unauthenticated and token is not None:
        raise ServeError("--allow-unauthenticated serves without a token: give it or a token, not both")
    if allow_unauthenticated and is_loopback(host):
        raise ServeError(f"--allow-unauthenticated: --host {host} is a loopback address, served without a token "
                         "anyway; the opt-in is for a non-loopback --host on a trusted lab network")
    if token is None and token_required(host, allow_unauthenticated=allow_unauthenticated):
        raise ServeError(f"--host {host} is reachable from other machines: give --token-file (or --token, or "
                         "XVLA_SERVE_TOKEN) so that every request must carry it, or bind 127.0.0.1 (or, on a "
                         "trusted lab network only, --allow-unauthenticated)")


def lab_mode_warning(host: str, port: int) -> str:
    """The warning ``xvla-edge serve --allow-unauthenticated`` prints at start, naming the address."""
    return (f"--allow-unauthenticated: http://{host}:{port} serves /act, the websocket and /metrics "
            "WITHOUT A TOKEN to every machine that can reach this address. Use it only on a trusted lab network; "
            "otherwise bind 127.0.0.1 and reach it through an SSH tunnel, or put a reverse proxy with TLS and "
            "--token-file in front (docs/serving-and-fleets.md).")


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
