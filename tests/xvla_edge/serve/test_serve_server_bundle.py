"""``xvla-edge serve`` of a server bundle: two domains from one bundle, each answered as the robot's bundle of that
domain answers, an unknown domain a named 400, the metrics labelled by domain, and a domain claimed by two
bundles refused."""

from __future__ import annotations

import numpy as np
import pytest

json_numpy = pytest.importorskip("json_numpy")
requests = pytest.importorskip("requests")

from runtime.manifest import BundleError  # noqa: E402
from runtime.policy import Policy  # noqa: E402
from runtime.remote.client import RemotePolicy  # noqa: E402
from runtime.types import Observation  # noqa: E402
from xvla_edge.serve.app import create_app  # noqa: E402
from xvla_edge.serve.bundles import BundleSet  # noqa: E402
from xvla_edge.serve.request import Limits  # noqa: E402
from xvla_edge.serve.server import ServerThread  # noqa: E402


def payload(seed: int, domain_id: int) -> dict:
    """An official-style request (two views, json_numpy strings) with a seed."""
    rng = np.random.default_rng(seed)
    return {"image0": json_numpy.dumps(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)),
            "image1": json_numpy.dumps(rng.integers(0, 256, (80, 120, 3), dtype=np.uint8)),
            "language_instruction": f"fold towel {seed}", "domain_id": domain_id,
            "proprio": json_numpy.dumps(rng.standard_normal(20)), "seed": seed, "steps": 5}


def folded_chunk(bundle, body: dict) -> np.ndarray:
    """``Policy.act`` of the robot's bundle for the request's observation and the noise its seed names."""
    policy = Policy.load(bundle)
    obs = Observation([json_numpy.loads(body["image0"]), json_numpy.loads(body["image1"])],
                      body["language_instruction"], json_numpy.loads(body["proprio"]).astype(np.float32),
                      noise=np.random.default_rng(body["seed"]).standard_normal((30, 20), dtype=np.float32))
    return policy.act(obs, steps=body["steps"]).actions


def test_serve_answers_two_domains_from_one_bundle(tiny_server_bundle, tiny_folded_bundles, spawn_server, free_port):
    spawn_server(tiny_server_bundle, free_port)
    url = f"http://127.0.0.1:{free_port}"
    assert requests.get(f"{url}/healthz", timeout=10).json() == {"status": "ok", "domains": [0, 6, 17],
                                                                 "allow_unauthenticated": False}
    for domain, seed in ((0, 1), (17, 2), (0, 3)):
        body = payload(seed, domain)
        reply = requests.post(f"{url}/act", json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        np.testing.assert_allclose(np.asarray(reply.json()["action"], np.float32),
                                   folded_chunk(tiny_folded_bundles[domain], body), rtol=0, atol=1e-5)
    unknown = requests.post(f"{url}/act", json=payload(4, 3), timeout=60)
    assert unknown.status_code == 400
    assert unknown.json() == {"error": "domain_id: 3 is not served here; domains served: 0, 6, 17"}
    metrics = requests.get(f"{url}/metrics", timeout=10).text
    assert 'xvla_serve_errors_total{kind="unknown_domain"} 1.0' in metrics
    for domain, count in ((0, 2), (17, 1), (6, 0)):
        assert f'xvla_serve_inference_seconds_count{{domain="{domain}"}} {count}.0' in metrics
    assert 'domain="17",embodiment="robomind-franka-dual"' in metrics


@pytest.mark.server
def test_a_robot_served_one_domain_of_a_server_bundle_reads_it_as_its_own(tiny_server_bundle, tiny_folded_bundles):
    bundles = BundleSet.load([tiny_server_bundle])
    try:
        with ServerThread(create_app(bundles, Limits())) as server, \
                RemotePolicy(f"ws://127.0.0.1:{server.port}/ws", domain_id=6) as remote:
            assert remote.manifest.domain_id == 6 and remote.manifest.action["arms"] == 2
            assert remote.manifest.bundle_id == bundles.served[6].manifest.bundle_id
            body = payload(7, 6)
            obs = Observation([json_numpy.loads(body["image0"]), json_numpy.loads(body["image1"])],
                              body["language_instruction"], json_numpy.loads(body["proprio"]).astype(np.float32),
                              timestamp=50.0,
                              noise=np.random.default_rng(7).standard_normal((30, 20), dtype=np.float32))
            chunk = remote.act(obs, steps=5)
            np.testing.assert_allclose(chunk.actions, folded_chunk(tiny_folded_bundles[6], body), rtol=0, atol=1e-5)
            assert chunk.timestamps[-1] == pytest.approx(51.0) and len(chunk.arms) == 2  # domain 6: 1 s, two arms
    finally:
        bundles.close()


def test_one_domain_claimed_by_two_bundles_is_refused(tiny_server_bundle, tiny_folded_bundles, tiny_bundle):
    with pytest.raises(BundleError, match=rf"serve: {tiny_folded_bundles[17]} and {tiny_server_bundle} both serve "
                                          r"domain 17; give one bundle per domain"):
        BundleSet.load([tiny_server_bundle, tiny_folded_bundles[17]])
    both = BundleSet.load([tiny_server_bundle, tiny_bundle])  # domain 3 beside the server bundle's
    try:
        assert both.domains == [0, 3, 6, 17] and both.served[0] is both.served[17]
    finally:
        both.close()
