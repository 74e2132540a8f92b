"""The bundles one ``xvla-edge serve`` process serves, by domain, and the server's metrics.

A robot's bundle serves its one domain; a server bundle (``xvla-edge export --domains``) every domain it lists,
from one copy of the backbone. Each bundle is a :class:`runtime.policy.Policy` with a lock: ``Policy`` computes
one chunk at a time, so requests for one bundle (for one domain, or for any domain of one server bundle) queue
on it (in arrival order, as threads take a lock) while other bundles run in parallel. A request becomes an
:class:`~runtime.types.Observation` with the same preprocessing, sampler and
post-processing as ``Policy.act`` — it *is* ``Policy.act`` — so a response equals a local call with the
same inputs and noise.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from starlette.concurrency import run_in_threadpool

from runtime.manifest import BundleError
from runtime.policy import Policy
from runtime.types import ActionChunk, Observation, PrefixUnsupported
from runtime.remote.wire import PROTOCOL
from xvla.errors import InputError
from xvla.realtime_chunking import Prefix, check_prefix
from xvla_edge.serve.request import ActRequest, RequestError
from xvla_edge.web.metrics import new_registry, package_version

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ERROR_KINDS = ("bad_request", "unauthorized", "forbidden", "not_found", "too_large", "unknown_domain",
               "unavailable", "busy", "internal")


@dataclass(frozen=True)
class Answer:
    """What a server sends back for one request: the chunk's actions [T, out] and the bundle that made them."""

    actions: np.ndarray
    bundle_id: str
    batch: int = 1  # requests computed together with this one (itself included)


@dataclass
class Served:
    """One bundle behind its domain ids (a server bundle's ``Served`` stands behind each of them)."""

    path: Path
    policy: Policy
    lock: threading.Lock

    @property
    def manifest(self) -> Any:
        return self.policy.manifest


class ServerMetrics:
    """Requests by endpoint and status, latency, errors by kind, inference time per domain (own registry)."""

    def __init__(self, domains: Sequence[int]) -> None:
        self.registry = new_registry("Versions of this server.")
        self.requests = Counter("xvla_serve_requests", "Requests answered, by endpoint and HTTP status "
                                "(websocket: one per observation).", ["endpoint", "status"], registry=self.registry)
        self.errors = Counter("xvla_serve_errors", "Requests refused or failed, by kind.", ["kind"],
                              registry=self.registry)
        self.latency = Histogram("xvla_serve_request_seconds", "Time from a request's arrival to its response, by "
                                 "endpoint.", ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.inference = Histogram("xvla_serve_inference_seconds", "Policy.act time (preprocessing, encoder, "
                                   "denoising), by domain.", ["domain"], buckets=LATENCY_BUCKETS,
                                   registry=self.registry)
        self.connections = Gauge("xvla_serve_websocket_connections", "Open websocket connections.",
                                 registry=self.registry)
        self.active = Gauge("xvla_serve_active_requests", "Requests being read, decoded or computed (at most "
                            "max_active; others wait for a slot).", registry=self.registry)
        self.unauthenticated = Gauge("xvla_serve_unauthenticated", "1: requests from other machines are served "
                                     "without a token (lab mode, --allow-unauthenticated); 0: they need one.",
                                     registry=self.registry)
        self.bundles = Gauge("xvla_serve_bundle_info", "The bundles served (value 1).",
                             ["domain", "bundle_id", "embodiment", "precision", "backend"], registry=self.registry)
        for kind in ERROR_KINDS:
            self.errors.labels(kind)
        for endpoint in ("act", "websocket"):
            self.latency.labels(endpoint)
        for domain in domains:
            self.inference.labels(str(domain))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class BundleSet:
    """Policies by domain id; :meth:`act` answers a checked request."""

    def __init__(self, served: dict[int, Served], backend: str = "auto") -> None:
        if not served:
            raise BundleError("serve: no bundles given")
        self.served = served
        self.metrics = ServerMetrics(sorted(served))
        for domain, s in served.items():
            m = s.manifest
            self.metrics.bundles.labels(str(domain), m.bundle_id, m.domains[domain].embodiment, m.precision,
                                        backend).set(1)

    @classmethod
    def load(cls, paths: Sequence[Path], backend: str = "auto", device: str = "cpu") -> BundleSet:
        """Load every bundle (files verified); two bundles claiming one domain are refused, naming both."""
        served: dict[int, Served] = {}
        try:
            for path in paths:
                one = Served(Path(path), Policy.load(path, backend=backend, device=device), threading.Lock())
                for domain in one.manifest.domain_ids:
                    if domain in served:
                        one.policy.close()
                        raise claimed_twice("serve", domain, path, served[domain].path)
                    served[domain] = one
        except BaseException:
            for s in {id(s): s for s in served.values()}.values():
                s.policy.close()
            raise
        return cls(served, backend)

    @property
    def domains(self) -> list[int]:
        return sorted(self.served)

    def get(self, domain_id: int) -> Served:
        try:
            return self.served[domain_id]
        except KeyError:
            raise unknown_domain(domain_id, self.served) from None

    def observation(self, request: ActRequest, served: Served) -> Observation:
        """The request as a checked ``Policy`` observation (errors name the request field)."""
        return observation(request, served.policy, served.path.name)

    def act(self, request: ActRequest) -> tuple[ActionChunk, Served]:
        """One chunk for ``request`` (blocking; requests for one domain run one at a time)."""
        served = self.get(request.domain_id)
        obs = self.observation(request, served)
        prefix = prefix_of(request, served.policy, served.path.name)
        with served.lock:
            t0 = time.perf_counter()
            chunk = served.policy.act(obs, steps=request.steps, domain_id=request.domain_id, prefix=prefix)
            self.metrics.inference.labels(str(request.domain_id)).observe(time.perf_counter() - t0)
        return chunk, served

    async def answer(self, request: ActRequest) -> Answer:
        """:meth:`act` on a worker thread (requests for other domains go on meanwhile)."""
        chunk, served = await run_in_threadpool(self.act, request)
        return Answer(chunk.actions, served.manifest.bundle_id)

    def metadata(self) -> dict[str, Any]:
        """What a websocket client learns on connect: each domain's bundle id and manifest."""
        return server_metadata({d: {"bundle_id": s.manifest.bundle_id, "manifest": s.manifest.raw}
                                for d, s in self.served.items()})

    def close(self) -> None:
        for s in {id(s): s for s in self.served.values()}.values():  # a server bundle once
            s.policy.close()


def server_metadata(domains: dict[int, dict[str, Any]], runs_on: str = "") -> dict[str, Any]:
    """What a websocket client learns on connect: the protocol, this server (``runs_on``: where, if not in its
    own process) and each domain's bundle id and manifest (``domains``: domain id → those two)."""
    return {"protocol": PROTOCOL, "server": f"xvla-edge {package_version()}{runs_on}",
            "domains": {str(d): domains[d] for d in sorted(domains)}}


def claimed_twice(command: str, domain: int, path: Any, other: Any) -> BundleError:
    """Two bundles given for one domain: refused, naming both."""
    return BundleError(f"{command}: {path} and {other} both serve domain {domain}; give one bundle per domain (a "
                       "server bundle serves each domain it lists)")


def unknown_domain(domain_id: int, served: Iterable[int]) -> RequestError:
    return RequestError(f"domain_id: {domain_id} is not served here; domains served: "
                        f"{', '.join(str(d) for d in sorted(served))}", 400, "unknown_domain")


def observation(request: ActRequest, policy: Policy, bundle_name: str) -> Observation:
    """``request`` as an observation for ``policy``, checked against its bundle once, here: a
    :class:`~runtime.types.CheckedObservation`, which ``Policy.act`` runs without checking again. The parser checked
    the fields' kinds; the refusals below name the request fields, :meth:`Policy.check` the rest (an image side
    beyond the model's: :class:`~xvla.errors.InputError`, answered 400 as from ``Policy.act``). ``seed`` becomes the
    noise ``Policy.act`` would be given."""
    images = list(request.images)
    used = [i for i, img in enumerate(images) if img is not None]
    if used and used[-1] >= policy.views:
        raise RequestError(f"image{used[-1]}: domain {request.domain_id} (bundle {bundle_name}) takes "
                           f"{policy.views} view(s); send image0" + (f" ... image{policy.views - 1}"
                                                                    if policy.views > 1 else ""))
    if request.proprio.shape != (policy.state_dim,):
        raise RequestError(f"proprio: domain {request.domain_id} takes {policy.state_dim} values, got "
                           f"{request.proprio.size}")
    noise = request.noise
    shape = policy.chunk_shape[1:]
    if noise is None and request.seed is not None:
        noise = np.random.default_rng(request.seed).standard_normal(shape, dtype=np.float32)
    elif noise is not None and noise.shape != shape:
        raise RequestError(f"noise: domain {request.domain_id} takes shape {list(shape)}, got {list(noise.shape)}")
    return policy.check(Observation(images=images, instruction=request.instruction, proprio=request.proprio,
                                    timestamp=0.0, noise=noise))


def prefix_of(request: ActRequest, policy: Policy, bundle_name: str) -> Prefix | None:
    """``request.prefix`` checked against the domain's bundle (:func:`xvla.realtime_chunking.check_prefix`: the
    action width, at most the chunk's rows, weights in [0, 1] not increasing), or a :class:`RequestError` naming
    the field; a bundle exported before real-time chunking refuses one by name."""
    if request.prefix is None:
        return None
    if not policy.manifest.supports_prefix:
        raise RequestError(f"prefix: domain {request.domain_id} (bundle {bundle_name}) was exported before real-time "
                           "chunking and takes no prefix; re-export it with xvla-edge export, or send none",
                           400, "bad_request")
    T, A = policy.chunk_shape[1:]
    try:
        return check_prefix(*request.prefix, length=T, dim=A, where="prefix")
    except InputError as exc:
        raise RequestError(str(exc)) from None
