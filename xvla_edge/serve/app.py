"""The HTTP and websocket endpoints of ``xvla-edge serve`` (FastAPI on uvicorn, the ``[serve]`` extra).

- ``POST /act``: the official X-VLA contract (:mod:`xvla_edge.serve.request`); ``{"action": [[...], ...]}``
  ([chunk_length, output_dim], float32 values), or ``{"error": "..."}`` with 400 (bad field, unknown domain),
  401 (token), 403 (file path outside the image directory), 404 (no such image file), 413 (body or image too
  large), 503 with ``Retry-After`` (the server is busy, see below; on Ray Serve also: the replica stopped with
  the request in flight; retry), 500 (the backend failed; details in the server log). Headers
  ``X-XVLA-Bundle``, ``X-XVLA-Inference-Ms`` and ``X-XVLA-Batch`` name the bundle, time the chunk and count the
  requests computed together with it.
- websocket ``/ws`` (and ``/``, where openpi's client connects): binary msgpack frames
  (:mod:`runtime.remote.wire`). On connect the server sends the metadata (protocol, each domain's bundle id and
  manifest); then each client frame is one observation (the ``/act`` fields, arrays as arrays, ``imageK``
  is view slot K) and each reply one map ``{"action", "domain_id", "bundle_id", "server_timing"}``; with a client
  layout (``serve --ws-layout``), a message in that layout is translated first and its reply names the chunk as the
  layout says (openpi: ``actions``). A refused observation is answered with a text frame ``"<status> <message>"``
  and the connection stays open; a server fault sends ``"500 ..."`` and closes (1011).
- ``GET /healthz`` (no token needed: ``{"status": "ok", "domains": [...], "allow_unauthenticated": bool}``) and
  ``GET /metrics`` (Prometheus text; ``xvla_serve_unauthenticated`` is 1 in lab mode).

With a token, every request but ``/healthz`` carries it as ``Authorization: Bearer TOKEN`` (or ``Api-Key
TOKEN``, as openpi's websocket client sends its key) or as the query parameter ``token`` (for clients that only take a URL, such as the official evaluation clients).

Memory: at most ``Limits.max_active`` requests (``/act`` bodies and websocket frames together) are read,
decoded or computed at once; each one holds its body, its parsed fields and its arrays until it is answered. A
request beyond them waits up to ``Limits.max_wait_s`` for a slot (an ``/act`` body stays unread meanwhile), then
is answered 503 with ``Retry-After`` (a ``"503 ..."`` text frame on the websocket).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Mapping, Optional, Protocol

import numpy as np
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from runtime.remote.wire import WireError, pack, unpack
from xvla.errors import InputError
from xvla_edge.serve.bundles import Answer, ServerMetrics
from xvla_edge.serve.client_layouts import ClientLayout, state_dims
from xvla_edge.serve.request import ActRequest, Limits, RequestError, from_message, parse_body
from xvla_edge.web.auth import same_token
from xvla_edge.web.metrics import CONTENT_TYPE

log = logging.getLogger("xvla_edge.serve")


class ChunkSource(Protocol):
    """What the endpoints need of the policies behind them."""

    metrics: ServerMetrics

    @property
    def domains(self) -> list[int]: ...

    def metadata(self) -> dict[str, Any]: ...

    async def answer(self, request: Any) -> Answer: ...


def _authorised(token: Optional[str], headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
    if token is None:
        return True
    given = query.get("token", "")
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() in ("bearer", "api-key"):  # Api-Key: what openpi's websocket client sends
        given = credentials.strip()
    return same_token(given, token)


class Slots:
    """``count`` slots for requests being read, decoded or computed; :meth:`take` waits up to ``wait_s`` for one,
    then refuses (503). ``active``: a gauge of the slots taken."""

    def __init__(self, count: int, wait_s: float, active: Any) -> None:
        self.count, self.wait_s, self.active = count, wait_s, active
        self._free = asyncio.Semaphore(count)

    @contextlib.asynccontextmanager
    async def take(self) -> AsyncIterator[None]:
        if self._free.locked():  # (else acquire returns at once; wait_for(..., 0) would refuse even a free slot)
            try:
                await asyncio.wait_for(self._free.acquire(), self.wait_s)
            except asyncio.TimeoutError:
                raise RequestError(f"the server is busy: {self.count} requests are being read, decoded or computed; "
                                   "retry", 503, "busy") from None
        else:
            await self._free.acquire()
        self.active.inc()
        try:
            yield
        finally:
            self.active.dec()
            self._free.release()


def _error_response(status: int, message: str) -> JSONResponse:
    headers = {401: {"WWW-Authenticate": "Bearer"}, 503: {"Retry-After": "1"}}.get(status)
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to exceed ``limit``: by its Content-Length, or while
    streaming."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(f"request body of {declared} bytes exceeds the limit of {limit}", 413, "too_large")
    parts, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise RequestError(f"request body exceeds the limit of {limit} bytes", 413, "too_large")
        parts.append(part)
    return b"".join(parts)


def create_app(bundles: ChunkSource, limits: Limits = Limits(), token: Optional[str] = None, *,
               allow_unauthenticated: bool = False, layout: Optional[ClientLayout] = None) -> FastAPI:
    """The app serving ``bundles`` (a :class:`BundleSet` in this process, or Ray Serve deployments:
    :mod:`xvla_edge.serve.ray_app`); ``token``: required on every request but ``/healthz`` (None: none);
    ``allow_unauthenticated``: lab mode (no token on a non-loopback address), reported by ``/healthz`` and
    ``/metrics``; ``layout``: websocket messages of another client's layout (:mod:`~xvla_edge.serve.client_layouts`)."""
    if allow_unauthenticated and token is not None:
        raise ValueError("lab mode (allow_unauthenticated) serves without a token: give one or the other")
    app = FastAPI(title="xvla-edge serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.limits = limits  # the server's websocket frame bound (uvicorn_server) is read from here
    metrics = bundles.metrics
    metrics.unauthenticated.set(int(allow_unauthenticated))
    reader = None if layout is None else Reader(layout, state_dims(bundles.metadata()))
    slots = Slots(limits.max_active, limits.max_wait_s, metrics.active)

    def refused(endpoint: str, exc: Exception) -> tuple[int, str]:
        """Count and log a refusal; its status and message. The exception's traceback is dropped: it holds the
        request's frames (its body, its arrays) in a reference cycle (through the future of the worker thread that
        raised it) that only the garbage collector would free — 32 refused 29 MB bodies stayed resident."""
        exc.__traceback__ = None
        error = exc if isinstance(exc, RequestError) else RequestError(str(exc))
        metrics.errors.labels(error.kind).inc()
        log.info("%s refused (%d): %s", endpoint, error.status, error)
        return error.status, str(error)

    @app.post("/act")
    async def act(request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            if not _authorised(token, request.headers, request.query_params):
                raise RequestError("missing or wrong token (Authorization: Bearer TOKEN, or ?token=TOKEN)", 401,
                                   "unauthorized")
            async with slots.take():
                body = await _read_body(request, limits.max_body_bytes)
                parsed = await run_in_threadpool(parse_body, body, limits)
                del body  # held no longer than parsing takes
                t1 = time.perf_counter()
                answer = await bundles.answer(parsed)
                response: Response = JSONResponse(
                    {"action": answer.actions.astype(np.float32).tolist()},
                    headers={"X-XVLA-Bundle": answer.bundle_id, "X-XVLA-Batch": str(answer.batch),
                             "X-XVLA-Inference-Ms": f"{(time.perf_counter() - t1) * 1e3:.2f}"})
        except (RequestError, InputError) as exc:
            response = _error_response(*refused("act", exc))
        except Exception as exc:  # noqa: BLE001 - a backend fault: logged in full, answered in one line
            log.exception("/act failed")
            exc.__traceback__ = None  # (see refused)
            metrics.errors.labels("internal").inc()
            response = JSONResponse({"error": "inference failed on the server (see its log)"}, status_code=500)
        metrics.requests.labels("act", str(response.status_code)).inc()
        metrics.latency.labels("act").observe(time.perf_counter() - t0)
        return response

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "domains": bundles.domains, "allow_unauthenticated": allow_unauthenticated}

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        if not _authorised(token, request.headers, request.query_params):
            metrics.errors.labels("unauthorized").inc()
            return JSONResponse({"error": "missing or wrong token"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def websocket_endpoint(websocket: WebSocket) -> None:
        if not _authorised(token, websocket.headers, websocket.query_params):
            metrics.errors.labels("unauthorized").inc()
            await websocket.close(code=1008, reason="missing or wrong token")
            return
        await websocket.accept()
        metrics.connections.inc()
        try:
            await websocket.send_bytes(pack({**bundles.metadata(), "max_frame_bytes": limits.max_frame_bytes}))
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if not await _observation(websocket, message.pop("bytes", None), bundles, limits, slots, refused,
                                          reader):
                    break
        except WebSocketDisconnect:
            pass
        finally:
            metrics.connections.dec()

    app.add_api_websocket_route("/ws", websocket_endpoint)
    app.add_api_websocket_route("/", websocket_endpoint)
    return app


@dataclass(frozen=True)
class Reader:
    """A client layout with the state width of each domain served (for its ``pad_proprio``)."""

    layout: ClientLayout
    state_dims: dict[int, int]


async def _observation(websocket: WebSocket, data: Optional[bytes], bundles: ChunkSource, limits: Limits,
                       slots: Slots, refused: Callable[[str, Exception], tuple[int, str]],
                       reader: Optional[Reader] = None) -> bool:
    """Answer one websocket frame (through ``reader`` when a client layout is set); False when the connection is
    to be closed."""
    metrics = bundles.metrics
    t0 = time.perf_counter()
    status = "200"
    try:
        if data is None:
            raise RequestError("expected a binary msgpack frame, got text")
        async with slots.take():
            request, key = await run_in_threadpool(lambda: _request(data, limits, reader))
            data = None  # the frame: its arrays were copied out of it
            t1 = time.perf_counter()
            answer = await bundles.answer(request)
            t2 = time.perf_counter()
            reply = {key: answer.actions.astype(np.float32), "domain_id": request.domain_id,
                     "bundle_id": answer.bundle_id,
                     "server_timing": {"infer_ms": (t2 - t1) * 1e3, "total_ms": (t2 - t0) * 1e3}}
            await websocket.send_bytes(pack(reply))
        return True
    except (RequestError, WireError, InputError) as exc:
        code, message = refused("websocket", exc)
        status = str(code)
        await websocket.send_text(f"{code} {message}")
        return True
    except WebSocketDisconnect:
        raise
    except Exception as exc:  # noqa: BLE001 - a backend fault: logged in full, the client told, the connection closed
        log.exception("websocket observation failed")
        exc.__traceback__ = None  # (see refused)
        metrics.errors.labels("internal").inc()
        status = "500"
        await websocket.send_text("500 inference failed on the server (see its log)")
        await websocket.close(code=1011)
        return False
    finally:
        metrics.requests.labels("websocket", status).inc()
        metrics.latency.labels("websocket").observe(time.perf_counter() - t0)


def _request(data: bytes, limits: Limits, reader: Optional[Reader]) -> tuple[ActRequest, str]:
    """A websocket frame → the checked request and the reply's key for the chunk."""
    message = unpack(data, limits.max_frame_bytes, limits.max_list_values)
    if reader is not None and reader.layout.applies_to(message):
        return from_message(reader.layout.native(message, reader.state_dims), limits), reader.layout.actions
    return from_message(message, limits), "action"
