"""``RemotePolicy``: :class:`runtime.policy.Policy`'s API for a bundle served by another machine.

    policy = RemotePolicy("ws://gpu-box:8000/ws", domain_id=3, token=token)
    chunk = policy.act(Observation(images=[rgb], instruction="...", proprio=state, timestamp=t_capture))

It speaks the websocket protocol of ``xvla-edge serve`` (:mod:`runtime.remote.wire` frames; the server sends its
metadata on connect, then one reply per observation), with ``websockets``' synchronous client (the
``[remote]`` extra). The manifest comes from the server and is validated like a local one; chunk time
stamps are computed here from the observation's own time stamp, so they stay anchored to when the images
were taken however long the network took.

Failures never yield a stale chunk: a reply that does not come within ``timeout_s`` drops the connection
(a late reply dies with it) and :meth:`act` raises :class:`RemoteUnavailable`, as it does when the server
cannot be reached or goes away; the next :meth:`act` connects again. A server that comes back with a
different bundle for the domain is refused (:class:`BundleChanged`): the caller checked the arm against
the first one.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Optional
from urllib.parse import urlsplit

import numpy as np

from runtime.backends.base import BackendError
from runtime.decode import chunk_timestamps, decode_arms
from runtime.manifest import BundleError, Manifest, canonical_sha256
from runtime.remote.wire import MAX_MESSAGE_BYTES, PROTOCOL, WireError, pack, unpack
from runtime.types import ActionChunk, Observation, PrefixUnsupported, check_timestamp, checked_proprio
from xvla.constants import MAX_STEPS
from xvla.errors import InputError
from xvla.instruction import check_instruction
from xvla.realtime_chunking import Prefix, check_prefix



class RemoteUnavailable(BackendError):
    """The server cannot be reached, did not answer in time, or went away; the next call reconnects."""


class BundleChanged(BackendError):
    """The server now serves another bundle for this domain than the one this policy started with."""


class RemotePolicy:
    """Observation → action chunk from ``xvla-edge serve`` at ``url`` (ws:// or wss://). Connects on creation
    (:class:`RemoteUnavailable` if it cannot); one chunk at a time, like :class:`~runtime.policy.Policy`."""

    def __init__(self, url: str, *, domain_id: Optional[int] = None, token: Optional[str] = None,
                 timeout_s: float = 2.0, connect_timeout_s: float = 2.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise BackendError(f"RemotePolicy url {url!r}: expected ws://HOST:PORT[/ws] or wss://...")
        for name, value in (("timeout_s", timeout_s), ("connect_timeout_s", connect_timeout_s)):
            if not (isinstance(value, (int, float)) and 0 < value <= 600):
                raise BackendError(f"RemotePolicy {name} = {value!r}: expected seconds in (0, 600]")
        self.url = url
        self.domain_id = domain_id
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._conn: Any = None
        self._lock = threading.Lock()
        self._executor: Optional[ThreadPoolExecutor] = None
        self.manifest: Manifest = self._connect()
        self.bundle_id = self.manifest.bundle_id
        self.views = int(self.manifest.inputs["views"])
        self.chunk_shape = (1, int(self.manifest.action["chunk_length"]), int(self.manifest.action["dim"]))
        self._output_shape = tuple(self.manifest.denoise.outputs[0].shape[1:])

    @property
    def state_dim(self) -> int:
        inputs = self.manifest.inputs
        return int(inputs.get("state_dim", inputs["proprio_dim"]))

    # -- connection ------------------------------------------------------------------------------------
    def _connect(self) -> Manifest:
        from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
        from websockets.sync.client import connect

        try:
            conn = connect(self.url, additional_headers=self._headers, open_timeout=self.connect_timeout_s,
                           close_timeout=0.5, max_size=MAX_MESSAGE_BYTES, compression=None)
        except InvalidURI as exc:
            raise BackendError(f"RemotePolicy url {self.url!r}: {exc}") from None
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise BackendError(f"{self.url} refused the connection (HTTP {status}): a missing or wrong "
                                   "token?") from None
            raise RemoteUnavailable(f"cannot connect to {self.url} (HTTP {status})") from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise RemoteUnavailable(f"cannot connect to {self.url} ({type(exc).__name__}: {exc})") from None
        try:
            manifest = self._manifest(self._receive(conn, self.connect_timeout_s, "metadata"))
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return manifest

    def _manifest(self, meta: Any) -> Manifest:
        where = f"{self.url} metadata"
        if not isinstance(meta, dict) or meta.get("protocol") != PROTOCOL or not isinstance(meta.get("domains"), dict):
            raise BackendError(f"{where}: not an xvla-edge server (protocol {PROTOCOL} expected)")
        domains = meta["domains"]
        if self.domain_id is None:
            if len(domains) != 1:
                raise BackendError(f"{where}: the server serves domains {sorted(domains)}; give domain_id")
            self.domain_id = int(next(iter(domains)))
        entry = domains.get(str(self.domain_id))
        if not isinstance(entry, dict):
            raise BackendError(f"{where}: domain {self.domain_id} is not served; domains served: {sorted(domains)}")
        frame = meta.get("max_frame_bytes")  # absent from servers before it was announced
        self.max_frame_bytes = frame if isinstance(frame, int) and not isinstance(frame, bool) and frame > 0 else None
        manifest = Manifest.from_dict(entry.get("manifest"), where)
        if self.domain_id not in manifest.domain_ids or canonical_sha256(manifest.raw) != entry.get("bundle_id"):
            raise BundleError(f"{where}: the manifest for domain {self.domain_id} does not match its bundle id")
        if getattr(self, "bundle_id", manifest.bundle_id) != manifest.bundle_id:
            raise BundleChanged(f"{self.url} now serves bundle {manifest.bundle_id[:12]} for domain {self.domain_id}, "
                                f"not {self.bundle_id[:12]}: restart with the new bundle")
        return manifest.for_domain(self.domain_id)  # a server bundle: as a robot's bundle of this domain reads

    def _receive(self, conn: Any, timeout: float, what: str) -> Any:
        from websockets.exceptions import ConnectionClosed

        try:
            frame = conn.recv(timeout=timeout)
        except TimeoutError:
            raise RemoteUnavailable(f"{self.url}: no {what} within {timeout} s") from None
        except (ConnectionClosed, OSError) as exc:
            raise RemoteUnavailable(f"{self.url}: connection lost waiting for the {what} ({exc})") from None
        if isinstance(frame, str):
            status, _, message = frame.partition(" ")
            error = InputError if status.startswith("4") else RemoteUnavailable if status == "503" else BackendError
            raise error(f"{self.url}: {message or frame}")
        try:
            return unpack(frame)
        except WireError as exc:
            raise BackendError(f"{self.url}: {what}: {exc}") from None

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- the Policy API --------------------------------------------------------------------------------
    def act(self, obs: Observation, *, steps: Optional[int] = None, prefix: Optional[Prefix] = None) -> ActionChunk:
        """One chunk for ``obs`` from the server (``prefix``: real-time chunking's committed prefix, checked here
        against the served bundle as ``Policy.act`` checks it); raises :class:`RemoteUnavailable` (reconnect on
        the next call), :class:`BundleChanged`, :class:`InputError` (the server refused the observation, or a
        prefix :class:`~runtime.types.PrefixUnsupported` by its bundle) or :class:`BackendError`."""
        if steps is not None and (not isinstance(steps, (int, np.integer)) or isinstance(steps, bool)
                                  or not 1 <= steps <= MAX_STEPS):
            raise InputError(f"steps = {steps!r}: expected an integer 1 ... {MAX_STEPS}")
        message = self._message(obs, steps, prefix)
        with self._lock:
            t0 = time.perf_counter()
            if self._conn is None:
                self._connect()
            try:
                self._conn.send(message)
                reply = self._receive(self._conn, self.timeout_s, "chunk")
            except InputError:  # the server refused this observation; the connection is fine
                raise
            except BackendError:  # unavailable, or a reply that cannot be trusted: start afresh next time
                self._drop()
                raise
            except Exception as exc:  # noqa: BLE001 - a send on a dead socket: reconnect next time
                self._drop()
                raise RemoteUnavailable(f"{self.url}: sending the observation failed ({exc})") from None
            total = time.perf_counter() - t0
        actions = self._actions(reply)
        timing = reply.get("server_timing") if isinstance(reply.get("server_timing"), dict) else {}
        return ActionChunk(
            actions=actions, observation_timestamp=obs.timestamp,
            timestamps=chunk_timestamps(obs.timestamp, float(self.manifest.action["chunk_seconds"]), len(actions)),
            arms=decode_arms(actions, self.manifest.action),
            timings={"total_s": total, "server_s": float(timing.get("infer_ms", np.nan)) / 1e3})

    def _message(self, obs: Observation, steps: Optional[int], prefix: Optional[Prefix]) -> bytes:
        images = list(obs.images)
        while images and images[-1] is None:  # absent trailing views, as Policy takes them
            images.pop()
        if not 1 <= len(images) <= self.views:
            raise InputError(f"observation.images: this bundle takes views 0 ... {self.views - 1}, got "
                             f"{'none' if not images else f'view {len(images) - 1}'}")
        message: dict[str, Any] = {f"image{i}": None if img is None else np.ascontiguousarray(img, np.uint8)
                                   for i, img in enumerate(images)}
        check_timestamp(obs.timestamp)
        message.update(language_instruction=check_instruction(obs.instruction, "observation.instruction"),
                       domain_id=self.domain_id, proprio=checked_proprio(obs.proprio))
        if steps is not None:
            message["steps"] = int(steps)
        if obs.noise is not None:
            noise = np.asarray(obs.noise, np.float32)
            if noise.shape not in (self.chunk_shape, self.chunk_shape[1:]):
                raise InputError(f"observation.noise: expected shape {self.chunk_shape[1:]}, got {noise.shape}")
            message["noise"] = noise.reshape(self.chunk_shape[1:])
        if prefix is not None:
            prefix = self._prefix(prefix)
            message["prefix"] = {"rows": prefix.rows, "weights": prefix.weights}
        packed = pack(message)
        if self.max_frame_bytes is not None and len(packed) > self.max_frame_bytes:
            raise InputError(f"observation: {len(packed)} bytes as a frame; {self.url} takes at most "
                             f"{self.max_frame_bytes} (its --max-frame-mb): send smaller camera images")
        return packed

    def _prefix(self, prefix: Any) -> Prefix:
        """``prefix`` re-checked against the served bundle (it may be hand-built), before anything is sent."""
        if not isinstance(prefix, Prefix):
            raise InputError(f"prefix: expected an xvla.realtime_chunking.Prefix (scheduled_prefix / check_prefix), "
                             f"got {type(prefix).__name__}")
        if not self.manifest.supports_prefix:
            raise PrefixUnsupported(f"prefix: {self.url} serves bundle {self.bundle_id[:12]} for domain "
                                    f"{self.domain_id}, exported before real-time chunking; re-export it with "
                                    "xvla-edge export, or call act() without a prefix")
        return check_prefix(prefix.rows, prefix.weights, length=self.chunk_shape[1], dim=self.chunk_shape[2])

    def _actions(self, reply: Any) -> np.ndarray:
        actions = reply.get("action") if isinstance(reply, dict) else None
        if (not isinstance(actions, np.ndarray) or actions.shape != self._output_shape
                or actions.dtype != np.float32 or not np.isfinite(actions).all()
                or reply.get("bundle_id") != self.bundle_id):
            raise BackendError(f"{self.url}: the reply is not a finite float32 chunk of shape {self._output_shape} "
                               f"from bundle {self.bundle_id[:12]}")
        return np.array(actions)

    def act_async(self, obs: Observation, *, steps: Optional[int] = None,
                  prefix: Optional[Prefix] = None) -> Future[ActionChunk]:
        """Start :meth:`act` on a worker thread."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xvla-remote")
        return self._executor.submit(self.act, obs, steps=steps, prefix=prefix)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        with self._lock:
            self._drop()

    def __enter__(self) -> RemotePolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
