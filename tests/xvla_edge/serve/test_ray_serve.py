"""Ray Serve (the ``[fleet]`` extra) on a local 2-CPU Ray instance started here: the same ``/act`` and websocket
as ``xvla-edge serve``, concurrent requests batched and each answered with its own chunk, refusals by name, and
a replica killed mid-stream never answering with another request's chunk."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the [fleet] extra (ray[serve]) is not installed")
serve = pytest.importorskip("ray.serve")
requests = pytest.importorskip("requests")
json_numpy = pytest.importorskip("json_numpy")

from runtime.policy import Policy  # noqa: E402
from runtime.remote.client import RemotePolicy  # noqa: E402
from runtime.types import Observation  # noqa: E402
from xvla.realtime_chunking import Prefix, scheduled_prefix  # noqa: E402

CLIENTS = 8


def payload(seed: int, domain_id: int = 3, proprio_dim: int = 20) -> dict:
    """An official-style request: two camera views, an instruction, proprio and a seed, all from ``seed``."""
    rng = np.random.default_rng(seed)
    return {"image0": json_numpy.dumps(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)),
            "image1": json_numpy.dumps(rng.integers(0, 256, (80, 120, 3), dtype=np.uint8)),
            "language_instruction": f"pick up block {seed}", "domain_id": domain_id,
            "proprio": json_numpy.dumps(rng.standard_normal(proprio_dim)), "seed": seed, "steps": 4}


def expected(policy: Policy, seed: int, domain_id: int = 3, prefix: Prefix | None = None) -> np.ndarray:
    """``Policy.act`` of the observation :func:`payload` describes (the server's seed → noise rule)."""
    body = payload(seed, domain_id)
    obs = Observation([json_numpy.loads(body["image0"]), json_numpy.loads(body["image1"])],
                      body["language_instruction"], json_numpy.loads(body["proprio"]).astype(np.float32),
                      noise=np.random.default_rng(seed).standard_normal(policy.chunk_shape[1:], dtype=np.float32))
    return policy.act(obs, steps=4, prefix=prefix).actions


@pytest.fixture(scope="module")
def fleet(tiny_batch_bundle, tiny_server_bundle):
    from xvla_edge.serve.ray_app import build_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app({"bundles": [str(tiny_batch_bundle), str(tiny_server_bundle)], "num_cpus": 1,
                             "batch_wait_timeout_s": 0.05}),
                  name="xvla", route_prefix="/")
        yield f"127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def local(tiny_batch_bundle):
    with Policy.load(tiny_batch_bundle) as policy:
        yield policy


def concurrently(fn, seeds) -> list:
    results: list = [None] * len(seeds)

    def run(i: int) -> None:
        results[i] = fn(seeds[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(seeds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def test_concurrent_clients_get_their_own_chunks_computed_in_batches(fleet, local):
    replies = concurrently(lambda seed: requests.post(f"http://{fleet}/act", json=payload(seed), timeout=60),
                           list(range(100, 100 + CLIENTS)))
    assert [r.status_code for r in replies] == [200] * CLIENTS, [r.text for r in replies]
    for seed, reply in zip(range(100, 100 + CLIENTS), replies):
        np.testing.assert_allclose(np.asarray(reply.json()["action"], np.float32), expected(local, seed),
                                   rtol=0, atol=1e-5)
        assert reply.headers["X-XVLA-Bundle"] == local.manifest.bundle_id
    assert max(int(r.headers["X-XVLA-Batch"]) for r in replies) > 1  # computed together, not one by one


def test_prefixes_in_a_batch_each_reach_their_own_row(fleet, local):
    """Requests with and without a prefix of real-time chunking batched together: each gets its own chunk."""
    seeds = list(range(300, 300 + CLIENTS))
    T, A = local.chunk_shape[1:]
    prefixes = {seed: None if seed % 2 else scheduled_prefix(np.random.default_rng(seed).standard_normal((T, A)),
                                                             length=T, dim=A, delay=3, horizon=15) for seed in seeds}

    def send(seed: int) -> requests.Response:
        p = prefixes[seed]
        body = payload(seed) if p is None else {**payload(seed), "prefix": {"rows": p.rows.tolist(),
                                                                            "weights": p.weights.tolist()}}
        return requests.post(f"http://{fleet}/act", json=body, timeout=60)

    replies = concurrently(send, seeds)
    assert [r.status_code for r in replies] == [200] * CLIENTS, [r.text for r in replies]
    for seed, reply in zip(seeds, replies):
        np.testing.assert_allclose(np.asarray(reply.json()["action"], np.float32),
                                   expected(local, seed, prefix=prefixes[seed]), rtol=0, atol=1e-5)
    assert max(int(r.headers["X-XVLA-Batch"]) for r in replies) > 1


def test_a_bad_request_in_a_batch_is_refused_alone_and_an_unknown_domain_is_named(fleet, local):
    bodies = [payload(1), {**payload(2), "proprio": json_numpy.dumps(np.zeros(7))}, payload(3)]
    replies = concurrently(lambda body: requests.post(f"http://{fleet}/act", json=body, timeout=60), bodies)
    assert [r.status_code for r in replies] == [200, 400, 200]
    assert replies[1].json() == {"error": "proprio: domain 3 takes 20 values, got 7"}
    np.testing.assert_allclose(np.asarray(replies[2].json()["action"], np.float32), expected(local, 3), atol=1e-5)
    unknown = requests.post(f"http://{fleet}/act", json=payload(1, domain_id=7), timeout=60)
    assert unknown.status_code == 400
    assert unknown.json() == {"error": "domain_id: 7 is not served here; domains served: 0, 3, 6, 17"}
    assert requests.get(f"http://{fleet}/healthz", timeout=10).json() == {"status": "ok", "domains": [0, 3, 6, 17],
                                                                          "allow_unauthenticated": False}


def test_a_server_bundle_deployment_routes_each_request_to_its_domain(fleet, tiny_folded_bundles):
    """Concurrent requests for the three domains of one server bundle (one deployment, batches that may mix
    domains): each answered as the robot's bundle of its domain answers."""
    seeds = list(range(200, 200 + CLIENTS))
    domains = {seed: (0, 6, 17)[seed % 3] for seed in seeds}
    replies = concurrently(lambda seed: requests.post(f"http://{fleet}/act", json=payload(seed, domains[seed]),
                                                      timeout=60), seeds)
    assert [r.status_code for r in replies] == [200] * CLIENTS, [r.text for r in replies]
    for seed, reply in zip(seeds, replies):
        with Policy.load(tiny_folded_bundles[domains[seed]]) as folded:
            np.testing.assert_allclose(np.asarray(reply.json()["action"], np.float32),
                                       expected(folded, seed, domains[seed]), rtol=0, atol=1e-5)
    assert len({r.headers["X-XVLA-Bundle"] for r in replies}) == 1  # one bundle served them all
    replicas = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                if a["name"].startswith("SERVE_REPLICA::xvla#server-")]
    assert len(replicas) == 1


def test_remote_policy_over_the_websocket_equals_policy_act(fleet, local):
    body = payload(5)
    obs = Observation([json_numpy.loads(body["image0"]), json_numpy.loads(body["image1"])], "lift it",
                      json_numpy.loads(body["proprio"]).astype(np.float32), timestamp=50.0,
                      noise=np.random.default_rng(5).standard_normal(local.chunk_shape[1:], dtype=np.float32))
    with RemotePolicy(f"ws://{fleet}/ws", domain_id=3) as remote:
        assert remote.manifest.bundle_id == local.manifest.bundle_id
        got = remote.act(obs, steps=3)
    want = local.act(obs, steps=3)
    np.testing.assert_allclose(got.actions, want.actions, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(got.timestamps, want.timestamps)


def test_a_replica_killed_mid_stream_never_answers_with_another_requests_chunk(fleet, local):
    references = {seed: expected(local, seed) for seed in range(200, 204)}
    outcomes: list[tuple[int, int, object]] = []
    stop = time.monotonic() + 15

    def client(seed: int) -> None:
        while time.monotonic() < stop:
            try:
                r = requests.post(f"http://{fleet}/act", json=payload(seed), timeout=30)
            except requests.RequestException as exc:
                outcomes.append((seed, 0, str(exc)))
                continue
            outcomes.append((seed, r.status_code, r.json()))

    threads = [threading.Thread(target=client, args=(seed,)) for seed in references]
    for t in threads:
        t.start()
    time.sleep(2)
    before = len(outcomes)
    replica = next(a for a in ray.util.list_named_actors(all_namespaces=True)
                   if a["name"].startswith("SERVE_REPLICA::xvla#domain-3#"))
    ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=True)
    for t in threads:
        t.join(timeout=60)
    assert before > 0 and len(outcomes) > before
    failed = [(s, code, out) for s, code, out in outcomes if code != 200]
    for seed, code, out in failed:  # a clear refusal, nothing else
        assert code == 503 and "stopped before it answered; retry" in out["error"], (seed, code, out)
    for seed, code, out in outcomes:
        if code == 200:
            np.testing.assert_allclose(np.asarray(out["action"], np.float32), references[seed], rtol=0, atol=1e-5)
    assert outcomes[-1][1] == 200  # a new replica answers
    replicas = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                if a["name"].startswith("SERVE_REPLICA::xvla#domain-3#")]
    assert replicas and replica["name"] not in replicas  # the killed one is gone, its successor served
    print(f"kill mid-stream: {len(outcomes)} requests, {len(failed)} answered 503")


@pytest.mark.parametrize("extra, message", [
    (["--replicas", "3", "--max-replicas", "2"], "--max-replicas 2 is below --replicas 3"),
    (["--num-gpus", "-1"], "--num-gpus -1.0: expected 0 ... 64"),
    (["SECOND"], "both serve domain 3; give one bundle per domain"),
])
def test_serve_ray_refuses_bad_arguments_before_ray_starts(tiny_bundle, tmp_path, capsys, extra, message):
    from xvla_edge.cli import main

    if extra == ["SECOND"]:
        import shutil

        extra = [str(shutil.copytree(tiny_bundle, tmp_path / "again"))]
    was_running = ray.is_initialized()
    assert main(["serve", "--ray", str(tiny_bundle), *extra]) == 1
    assert message in capsys.readouterr().err
    assert ray.is_initialized() == was_running


def test_build_app_refuses_unknown_limits_two_tokens_and_bad_ones(tiny_bundle, tmp_path):
    from runtime.manifest import BundleError
    from xvla_edge.serve.ray_app import build_app, read_token_file
    from xvla_edge.serve.server import ServeError

    for token, message in [("", "token: 0 characters; expected at least 16"), (" " * 16, "character 1 is U\\+0020"),
                           ("x" * 20, "only 1 different")]:  # "" was no token at all: every request authorised
        with pytest.raises(BundleError, match=message):
            build_app({"bundles": [str(tiny_bundle)], "token": token})
    (tmp_path / "token").write_text(" " * 16 + "\n")
    (tmp_path / "token").chmod(0o600)
    with pytest.raises(ServeError, match=f"token_file {tmp_path / 'token'}: the file is empty"):
        read_token_file(tmp_path / "token")
    with pytest.raises(BundleError, match=r"limits: unknown field\(s\) \['max_body'\]"):
        build_app({"bundles": [str(tiny_bundle)], "limits": {"max_body": 1}})
    with pytest.raises(BundleError, match="give one of token and token_file"):
        build_app({"bundles": [str(tiny_bundle)], "token": "x" * 20, "token_file": "/tmp/t"})
    with pytest.raises(BundleError, match="allow_unauthenticated serves without a token: give it or a token"):
        build_app({"bundles": [str(tiny_bundle)], "token": "0123456789abcdef", "allow_unauthenticated": True})
    with pytest.raises(TypeError, match="bundle"):
        build_app({"bundle": [str(tiny_bundle)]})
