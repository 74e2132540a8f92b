"""``xvla-edge serve`` on Ray Serve (the ``[fleet]`` extra): the same endpoints, for a fleet on shared servers.

One Ray Serve application: an ingress deployment speaking exactly what ``xvla-edge serve`` speaks (the app of
:mod:`xvla_edge.serve.app`: official ``/act``, the msgpack websocket, ``/healthz``, ``/metrics``) and one
deployment per bundle holding a :class:`runtime.policy.Policy`: ``domain-N`` for a robot's bundle of domain N,
``server-<bundle id>`` for a server bundle (``xvla-edge export --domains``), which serves every domain it lists
from one copy of the backbone. The ingress routes each request by its ``domain_id``. A robot cannot tell a
cluster from one process.

- **Batching**: each policy deployment groups requests with ``ray.serve.batch`` (``max_batch_size``, default the
  bundle's largest batch size; ``batch_wait_timeout_s``) and runs them with ``Policy.act_batch``, so a batched
  bundle (``xvla-edge export --batch-sizes``) computes them in one encoder pass and one denoising loop. Each
  request is checked against its bundle before it joins a batch (a bad one is answered 400 alone); requests
  with different ``steps`` run as separate batches; each answer is the row of its own request. A server
  bundle's batch may mix its domains (each row takes its own domain's weights).
- **Replicas**: ``autoscaling`` (``min_replicas``, ``max_replicas``, ``target_ongoing_requests``), ``num_cpus``
  / ``num_gpus`` per replica (``device: cuda`` with ``num_gpus: 1`` on GPU workers).
- **Faults**: a replica that dies with a request in flight answers that request 503 ("retry"): never with
  another request's chunk. Ray Serve restarts the replica.

Run it with ``xvla-edge serve --ray BUNDLE ...`` (a local Ray instance, or ``--address`` of a cluster), or
with Ray's own tools from a config file: ``serve run config.yaml`` / ``serve deploy config.yaml``, whose
application ``import_path`` is ``xvla_edge.serve.ray_app:build_app`` and whose ``args`` are
:class:`FleetOptions`' fields (docs/serving-and-fleets.md, "Fleet serving on Ray Serve").
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.handle import DeploymentHandle

from runtime.manifest import BundleError, Manifest
from runtime.policy import Policy
from runtime.types import Observation
from xvla.errors import InputError
from xvla.realtime_chunking import Prefix
from xvla_edge.serve.app import create_app
from xvla_edge.serve.bundles import (Answer, ServerMetrics, claimed_twice, observation, prefix_of, server_metadata,
                                     unknown_domain)
from xvla_edge.serve.request import ActRequest, Limits, RequestError
from xvla_edge.web import auth

log = logging.getLogger("xvla_edge.serve.ray")
LOST = (ActorDiedError, ActorUnavailableError, RayActorError)
MAX_ACTIVE = 64  # the ingress's Limits.max_active unless limits name one: batches fill from concurrent requests


@dataclass
class FleetOptions:
    """One application: ``bundles`` (directories: robots' bundles, one per domain, and server bundles, no domain
    claimed twice) and how their deployments run."""

    bundles: list[str]
    backend: str = "auto"
    device: str = "cpu"
    threads: Optional[int] = None  # intra-op threads per replica (default: the backend's)
    max_batch_size: Optional[int] = None  # default: each bundle's largest batch size
    batch_wait_timeout_s: float = 0.01
    num_replicas: int = 1  # without autoscaling
    autoscaling: Optional[dict[str, Any]] = None  # min_replicas, max_replicas, target_ongoing_requests, ...
    num_cpus: float = 1.0  # per policy replica
    num_gpus: float = 0.0
    max_ongoing_requests: int = 32
    token: Optional[str] = None  # kept in Ray's deployment config: in config files prefer token_file
    token_file: Optional[str] = None  # read by the ingress replica (first line; owner-only file)
    allow_unauthenticated: bool = False  # lab mode: no token on a non-loopback host (see xvla_edge.web.auth)
    limits: dict[str, Any] = field(default_factory=dict)  # Limits' fields (max_active: MAX_ACTIVE by default)


@dataclass
class Reply:
    """A policy deployment's answer to one request: ``actions``, or ``error`` = (status, kind, message)."""

    actions: Optional[np.ndarray] = None
    bundle_id: str = ""
    batch: int = 1
    error: Optional[tuple[int, str, str]] = None


@serve.deployment
class PolicyDeployment:
    """One bundle; requests are batched (see the module docstring)."""

    def __init__(self, bundle: str, backend: str, device: str, threads: Optional[int], max_batch_size: Optional[int],
                 batch_wait_timeout_s: float) -> None:
        options = {"threads": threads} if threads else {}
        self.path = Path(bundle)
        self.policy = Policy.load(self.path, backend=backend, device=device, **options)
        self.bundle_id = self.policy.manifest.bundle_id
        self._batched.set_max_batch_size(max_batch_size or self.policy.manifest.batch_sizes[-1])
        self._batched.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def metadata(self) -> dict[str, Any]:
        return {"bundle_id": self.bundle_id, "manifest": self.policy.manifest.raw}

    async def act(self, request: ActRequest) -> Reply:
        try:
            obs = observation(request, self.policy, self.path.name)
            prefix = prefix_of(request, self.policy, self.path.name)
        except RequestError as exc:
            return Reply(error=(exc.status, exc.kind, str(exc)))
        return await self._batched((obs, request.steps, request.domain_id, prefix))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _batched(self, items: list[tuple[Observation, Optional[int], int, Optional[Prefix]]]) -> list[Reply]:
        replies: list[Optional[Reply]] = [None] * len(items)
        by_steps: dict[Optional[int], list[int]] = {}
        for i, item in enumerate(items):
            by_steps.setdefault(item[1], []).append(i)
        for steps, rows in by_steps.items():
            batch = [items[i][0] for i in rows], [items[i][2] for i in rows], [items[i][3] for i in rows]
            for i, reply in zip(rows, await asyncio.to_thread(self._run, *batch, steps)):
                replies[i] = reply
        return replies  # type: ignore[return-value]

    def _run(self, observations: list[Observation], domains: list[int], prefixes: list[Optional[Prefix]],
             steps: Optional[int]) -> list[Reply]:
        """The batch's chunks; when an observation is refused, each runs alone so only it is answered 400."""
        try:
            chunks = self.policy.act_batch(observations, steps=steps, domain_ids=domains, prefixes=prefixes)
            return [Reply(c.actions, self.bundle_id, len(chunks)) for c in chunks]
        except InputError:
            if len(observations) == 1:
                raise
        replies = []
        for obs, domain, prefix in zip(observations, domains, prefixes):
            try:
                replies.append(Reply(self.policy.act(obs, steps=steps, domain_id=domain, prefix=prefix).actions,
                                     self.bundle_id))
            except InputError as exc:
                replies.append(Reply(error=(400, "bad_request", str(exc))))
        return replies


class DeploymentBundles:
    """The ingress's view of the policy deployments: what :func:`xvla_edge.serve.app.create_app` needs."""

    def __init__(self, handles: dict[int, DeploymentHandle], metadata: dict[int, dict[str, Any]]) -> None:
        self.handles = handles
        self._metadata = metadata
        self.metrics = ServerMetrics(sorted(handles))
        for domain, meta in metadata.items():
            m = Manifest.from_dict(meta["manifest"], f"domain {domain}'s deployment")
            self.metrics.bundles.labels(str(domain), meta["bundle_id"], m.domains[domain].embodiment, m.precision,
                                        "ray").set(1)

    @property
    def domains(self) -> list[int]:
        return sorted(self.handles)

    def metadata(self) -> dict[str, Any]:
        return server_metadata(self._metadata, " on Ray Serve")

    async def answer(self, request: ActRequest) -> Answer:
        handle = self.handles.get(request.domain_id)
        if handle is None:
            raise unknown_domain(request.domain_id, self.handles)
        t0 = time.perf_counter()
        try:
            reply: Reply = await handle.act.remote(request)
        except LOST as exc:
            log.warning("domain %d: the replica stopped with a request in flight: %s", request.domain_id, exc)
            raise RequestError(f"domain {request.domain_id}: the replica computing this chunk stopped before it "
                               "answered; retry (a new replica is starting)", 503, "unavailable") from None
        if reply.error is not None:
            raise RequestError(reply.error[2], reply.error[0], reply.error[1])
        self.metrics.inference.labels(str(request.domain_id)).observe(time.perf_counter() - t0)
        return Answer(reply.actions, reply.bundle_id, reply.batch)


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1024)  # it only awaits the policies
@serve.ingress()
class Ingress:
    """The HTTP/websocket front: ``xvla-edge serve``'s app over the policy deployments."""

    def __init__(self, handles: dict[int, DeploymentHandle], limits: dict[str, Any], token: Optional[str],
                 token_file: Optional[str], allow_unauthenticated: bool = False) -> None:
        self.handles = handles
        self.limits = ingress_limits(limits)
        self.token = token if token_file is None else read_token_file(Path(token_file))
        self.allow_unauthenticated = allow_unauthenticated

    async def __serve_build_asgi_app__(self) -> Any:
        metadata = {d: await h.metadata.remote() for d, h in self.handles.items()}  # a server bundle's for each domain
        return create_app(DeploymentBundles(self.handles, metadata), self.limits, self.token,
                          allow_unauthenticated=self.allow_unauthenticated)


def ingress_limits(limits: dict[str, Any]) -> Limits:
    """:class:`Limits` from a config's ``limits`` (``max_active`` :data:`MAX_ACTIVE` unless given); ValueError
    names a bad value."""
    return Limits(**{"max_active": MAX_ACTIVE, **{k: (Path(v) if k == "image_dir" and v else v)
                                                   for k, v in limits.items()}})


def build_app(args: dict[str, Any]) -> serve.Application:
    """The application for ``serve run`` / ``serve deploy`` (``args``: :class:`FleetOptions`' fields) and for
    ``xvla-edge serve --ray``. Reads each bundle's manifest (files checked) for its domains; two bundles claiming
    one domain are refused, naming both."""
    opts = args if isinstance(args, FleetOptions) else FleetOptions(**args)
    if not opts.bundles:
        raise BundleError("serve --ray: no bundles given")
    unknown = set(opts.limits) - set(Limits.__dataclass_fields__)
    if unknown:
        raise BundleError(f"limits: unknown field(s) {sorted(unknown)}; expected {sorted(Limits.__dataclass_fields__)}")
    try:
        ingress_limits(opts.limits)
    except (ValueError, TypeError) as exc:
        raise BundleError(str(exc)) from None
    domains: dict[int, str] = {}
    handles = {}
    for bundle in opts.bundles:
        manifest = Manifest.load(bundle)
        manifest.verify_files(bundle)
        for domain in manifest.domain_ids:
            if domain in domains:
                raise claimed_twice("serve --ray", domain, bundle, domains[domain])
            domains[domain] = bundle
        scaling = ({"autoscaling_config": opts.autoscaling} if opts.autoscaling
                   else {"num_replicas": opts.num_replicas})
        handle = PolicyDeployment.options(
            name=f"server-{manifest.bundle_id[:12]}" if manifest.is_server else f"domain-{manifest.domain_id}",
            max_ongoing_requests=opts.max_ongoing_requests,
            ray_actor_options={"num_cpus": opts.num_cpus, "num_gpus": opts.num_gpus}, **scaling,
        ).bind(str(Path(bundle).resolve()), opts.backend, opts.device, opts.threads, opts.max_batch_size,
               opts.batch_wait_timeout_s)
        handles.update(dict.fromkeys(manifest.domain_ids, handle))
    if opts.token and opts.token_file:
        raise BundleError("give one of token and token_file")
    if opts.allow_unauthenticated and (opts.token or opts.token_file):
        raise BundleError("allow_unauthenticated serves without a token: give it or a token, not both")
    if opts.token is not None:
        try:
            auth.check_token(opts.token)
        except auth.TokenError as exc:
            raise BundleError(f"token: {exc}") from None
    return Ingress.bind(handles, opts.limits, opts.token, opts.token_file, opts.allow_unauthenticated)


def read_token_file(path: Path) -> str:
    """The token in an owner-only file (the rule of :mod:`xvla_edge.web.auth`)."""
    from xvla_edge.serve.server import ServeError

    try:
        return auth.read_token_file(path)
    except auth.TokenError as exc:
        raise ServeError(f"token_file {path}: {exc}") from None
