"""What serving adds: ``POST /act`` (the official contract) and the websocket (``RemotePolicy``) against a local
``Policy.act`` on the same machine, for 1 and 4 concurrent clients.

Not part of the test suite. Run (needs the ``[serve]`` extra)::

    .venv/bin/python -m pytest benchmarks/test_serve_latency.py -s \
        --benchmark-json=benchmarks/results/<machine>/serve-latency.json

Per size (``tiny``, ``small``: the cached random-weight fp32 bundles of :mod:`benchmarks.harness`, 3 views)
one server on loopback serves the bundle on ONNX Runtime; every request carries three 224×224 RGB views,
20 proprio values and an instruction, 10 denoising steps. A client's time covers what an X-VLA client pays:
encoding (json_numpy or msgpack), the request, the chunk, decoding. One benchmark round is one request per
client, all clients at once; each request's own latency is recorded, and ``extra_info`` has its p50/p99.

The floor of a served request is the local ``Policy.act`` measured in the same run (the server runs exactly
that). One domain computes one chunk at a time, so ``n`` simultaneous clients wait for each other: the floor
of their mean latency is ``(n + 1) / 2`` local chunks and of the slowest ``n``. ``added_p50_s`` is p50 minus
the single-client floor.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from benchmarks import harness

json_numpy = pytest.importorskip("json_numpy", reason="the [serve] extra is not installed")
requests = pytest.importorskip("requests")

SIDE = 224
ROUNDS = {"tiny": 40, "small": 15}
CASES = [(size, path, clients) for size in ("tiny", "small")
         for path, clients in (("local", 1), ("act", 1), ("websocket", 1), ("act", 4), ("websocket", 4))]
LOCAL_P50: dict[str, float] = {}  # size → the local Policy.act p50 of this run (the floor)


@pytest.fixture(scope="module")
def servers():
    """size → (server thread, bundle path), started on first use."""
    from xvla_edge.serve.app import create_app
    from xvla_edge.serve.bundles import BundleSet
    from xvla_edge.serve.server import ServerThread

    started: dict[str, tuple] = {}

    def get(size: str):
        if size not in started:
            path = harness.bundle(size, "fp32")
            bundles = BundleSet.load([path], backend="onnxruntime")
            started[size] = (ServerThread(create_app(bundles)), path, bundles)
        return started[size][:2]

    yield get
    for srv, _, bundles in started.values():
        srv.stop()
        bundles.close()


def _inputs(seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8) for _ in range(3)], rng.standard_normal(20)


def _client(size: str, path: str, server, bundle, seed: int):
    """A callable doing one request as a client of ``path`` would."""
    from runtime.policy import Policy
    from runtime.remote.client import RemotePolicy
    from runtime.types import Observation

    images, proprio = _inputs(seed)
    instruction = "put the spoon on the towel"
    if path == "local":
        policy = Policy.load(bundle, backend="onnxruntime")
        return lambda: policy.act(Observation(images, instruction, proprio.astype(np.float32))).actions
    if path == "websocket":
        remote = RemotePolicy(f"ws://{server.host}:{server.port}/ws", timeout_s=60)
        return lambda: remote.act(Observation(images, instruction, proprio.astype(np.float32))).actions
    session = requests.Session()

    def post() -> np.ndarray:
        payload = {"proprio": json_numpy.dumps(proprio), "language_instruction": instruction,
                   "domain_id": harness.DOMAIN_ID,
                   **{f"image{i}": json_numpy.dumps(img) for i, img in enumerate(images)}}
        r = session.post(server.url + "/act", json=payload, timeout=60)
        r.raise_for_status()
        return np.array(r.json()["action"])

    return post


@pytest.mark.parametrize("size, path, clients", CASES, ids=[f"{s}-{p}-{c}" for s, p, c in CASES])
def test_serve_latency(benchmark, servers, size, path, clients):
    server, bundle = servers(size)
    calls = [_client(size, path, server, bundle, seed) for seed in range(clients)]
    latencies: list[float] = []

    def one(call) -> None:
        t0 = time.perf_counter()
        out = call()
        latencies.append(time.perf_counter() - t0)
        assert out.shape == (30, 20)

    def round_() -> None:
        threads = [threading.Thread(target=one, args=(call,)) for call in calls]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    benchmark.pedantic(round_, rounds=ROUNDS[size], iterations=1, warmup_rounds=2)
    lat = np.array(latencies[2 * clients:])  # without the warm-up rounds
    p50, p99 = float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
    if path == "local":
        LOCAL_P50[size] = p50
    local = LOCAL_P50.get(size, float("nan"))
    floor_mean = local * (clients + 1) / 2
    benchmark.extra_info.update(
        size=size, path=path, clients=clients, views=3, image_side=SIDE, requests=len(lat),
        p50_s=round(p50, 5), p99_s=round(p99, 5), local_p50_s=round(local, 5),
        added_p50_s=round(p50 - local, 5), floor_mean_s=round(floor_mean, 5),
        floor_max_s=round(local * clients, 5), ratio_mean_to_floor=round(float(lat.mean()) / floor_mean, 3))
    print(f"\n{size} {path} ×{clients}: p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms; local p50 {local * 1e3:.1f} ms, "
          f"added p50 {(p50 - local) * 1e3:+.1f} ms; mean {lat.mean() * 1e3:.1f} ms vs floor {floor_mean * 1e3:.1f} ms "
          f"({lat.mean() / floor_mean:.2f}×)")
