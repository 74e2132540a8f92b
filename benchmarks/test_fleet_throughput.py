"""Fleet serving throughput (issue 21): requests/s and latency for 1, 4 and 8 concurrent clients, the plain
``xvla-edge serve`` (one chunk at a time per domain) against Ray Serve with batching, same machine, same run.

Not part of the test suite. Run (needs the ``[fleet]`` extra)::

    .venv/bin/python -m pytest benchmarks/test_fleet_throughput.py -s \
        --benchmark-json=benchmarks/results/<machine>/fleet-throughput.json

Per size (``tiny``, ``small``: the cached random-weight fp32 bundles of :mod:`benchmarks.harness`, 3 views,
ONNX Runtime): ``serve`` is ``xvla-edge serve`` on the batch-1 bundle (the server of the serving issue, in this
process on a uvicorn thread); ``ray`` is the Ray Serve application on the same checkpoint exported with
``--batch-sizes 1 2 4 8`` (a local Ray instance with the machine's CPUs, one policy replica, batches of up to 8
waiting at most 10 ms). Every request is an official ``/act`` POST: three 224×224 views, 20 proprio values, an
instruction, 10 steps. One round is one request per client, all clients at once (a closed loop, as robots
ask); ``requests_per_s`` = clients / the round's time.

Floors, measured in the same run: a server that computes one chunk at a time answers at most
1 / ``Policy.act`` requests per second whatever the number of clients; one that batches B requests at most
B / ``Policy.act_batch(B)``. ``extra_info`` has both and the ratio to them.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time

import numpy as np
import pytest

from benchmarks import harness

json_numpy = pytest.importorskip("json_numpy", reason="the [serve] extra is not installed")
requests = pytest.importorskip("requests")
ray = pytest.importorskip("ray", reason="the [fleet] extra is not installed")
serve = pytest.importorskip("ray.serve")

SIDE = 224
BATCHES = (1, 2, 4, 8)
ROUNDS = {"tiny": 30, "small": 10}
CASES = [(size, server, clients) for size in ("tiny", "small") for server in ("serve", "ray") for clients in (1, 4, 8)]
FLOORS: dict[str, dict[str, float]] = {}  # size → {"act_s", "batch8_s"}


def _payload(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"proprio": json_numpy.dumps(rng.standard_normal(20)), "language_instruction": "put the spoon on the towel",
            "domain_id": harness.DOMAIN_ID, "steps": 10,
            **{f"image{i}": json_numpy.dumps(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)) for i in range(3)}}


def _floors(size: str) -> dict[str, float]:
    """Policy.act and Policy.act_batch of 8 on the batched bundle, medians of a few runs, in this process."""
    if size not in FLOORS:
        from runtime.policy import Policy
        from runtime.types import Observation

        rng = np.random.default_rng(0)
        obs = [Observation([rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8) for _ in range(3)], "lift it",
                           rng.standard_normal(20).astype(np.float32)) for _ in range(8)]
        with Policy.load(harness.bundle(size, "fp32", BATCHES)) as policy:
            policy.act(obs[0])
            policy.act_batch(obs)
            act, batch = [], []
            for _ in range(3 if size == "small" else 10):
                t0 = time.perf_counter()
                policy.act(obs[0])
                act.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                policy.act_batch(obs)
                batch.append(time.perf_counter() - t0)
        FLOORS[size] = {"act_s": statistics.median(act), "batch8_s": statistics.median(batch)}
    return FLOORS[size]


@pytest.fixture(scope="module")
def servers():
    """(size, kind) → base URL, started on first use; Ray is started once for the module."""
    from xvla_edge.serve.app import create_app
    from xvla_edge.serve.bundles import BundleSet
    from xvla_edge.serve.ray_app import build_app
    from xvla_edge.serve.server import ServerThread

    started: dict[tuple[str, str], str] = {}
    plain: list = []

    def get(size: str, kind: str) -> str:
        key = (size, kind)
        if key not in started:
            if kind == "serve":
                bundles = BundleSet.load([harness.bundle(size, "fp32")], backend="onnxruntime")
                srv = ServerThread(create_app(bundles))
                plain.append((srv, bundles))
                started[key] = srv.url
            else:
                if not ray.is_initialized():
                    with socket.socket() as s:
                        s.bind(("127.0.0.1", 0))
                        port = s.getsockname()[1]
                    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
                    serve.start(http_options={"host": "127.0.0.1", "port": port})
                    get.port = port
                serve.run(build_app({"bundles": [str(harness.bundle(size, "fp32", BATCHES))], "backend": "onnxruntime",
                                     "num_cpus": 1, "max_batch_size": 8, "batch_wait_timeout_s": 0.01}),
                          name=f"xvla-{size}", route_prefix=f"/{size}")
                started[key] = f"http://127.0.0.1:{get.port}/{size}"
        return started[key]

    yield get
    for srv, bundles in plain:
        srv.stop()
        bundles.close()
    if ray.is_initialized():
        serve.shutdown()
        ray.shutdown()


@pytest.mark.parametrize("size, kind, clients", CASES, ids=[f"{s}-{k}-{c}" for s, k, c in CASES])
def test_fleet_throughput(benchmark, servers, size, kind, clients):
    floors = _floors(size)
    url = servers(size, kind)
    sessions = [requests.Session() for _ in range(clients)]
    bodies = [_payload(seed) for seed in range(clients)]
    latencies: list[float] = []
    batches: list[int] = []

    def one(i: int) -> None:
        t0 = time.perf_counter()
        r = sessions[i].post(url + "/act", json=bodies[i], timeout=120)
        latencies.append(time.perf_counter() - t0)
        r.raise_for_status()
        batches.append(int(r.headers.get("X-XVLA-Batch", "1")))

    def round_() -> None:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    benchmark.pedantic(round_, rounds=ROUNDS[size], iterations=1, warmup_rounds=2)
    lat = np.array(latencies[2 * clients:])
    rps = clients / benchmark.stats.stats.median
    unbatched_floor = 1 / floors["act_s"]
    batched_floor = 8 / floors["batch8_s"]
    benchmark.extra_info.update(
        size=size, server=kind, clients=clients, views=3, image_side=SIDE, steps=10, requests=len(lat),
        requests_per_s=round(rps, 3), p50_s=round(float(np.percentile(lat, 50)), 5),
        p99_s=round(float(np.percentile(lat, 99)), 5), mean_batch=round(float(np.mean(batches[2 * clients:])), 2),
        local_act_s=round(floors["act_s"], 5), local_act_batch8_s=round(floors["batch8_s"], 5),
        floor_unbatched_rps=round(unbatched_floor, 3), floor_batched8_rps=round(batched_floor, 3))
    print(f"\n{size} {kind} ×{clients}: {rps:.2f} req/s (p50 {np.percentile(lat, 50) * 1e3:.0f} ms, p99 "
          f"{np.percentile(lat, 99) * 1e3:.0f} ms, mean batch {np.mean(batches[2 * clients:]):.1f}); floors: one at a "
          f"time {unbatched_floor:.2f} req/s, batches of 8 {batched_floor:.2f} req/s")
