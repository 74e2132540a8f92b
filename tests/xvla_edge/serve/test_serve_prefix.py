"""Real-time chunking over the network: a prefix sent on ``/act``, on the websocket or by ``RemotePolicy`` gives
the chunk ``Policy.act`` gives with it; a bad one is refused naming the field, before anything runs; a bundle
exported before real-time chunking refuses one by name."""

from __future__ import annotations

import numpy as np
import pytest

json_numpy = pytest.importorskip("json_numpy")
requests = pytest.importorskip("requests")
pytest.importorskip("websockets.sync.client")

from runtime.policy import Policy  # noqa: E402
from runtime.remote.client import RemotePolicy  # noqa: E402
from runtime.remote.wire import pack, unpack  # noqa: E402
from runtime.types import Observation, PrefixUnsupported  # noqa: E402
from xvla.errors import InputError  # noqa: E402
from xvla.realtime_chunking import Prefix, scheduled_prefix  # noqa: E402
from xvla_edge.serve.app import create_app  # noqa: E402
from xvla_edge.serve.request import Limits  # noqa: E402
from xvla_edge.serve.server import ServerThread  # noqa: E402

RNG = np.random.default_rng(36)
IMG = RNG.integers(0, 256, (224, 224, 3), dtype=np.uint8)
T, A = 30, 20  # the tiny bundle's chunk


def observation(seed: int) -> Observation:
    rng = np.random.default_rng(seed)
    return Observation([IMG], f"task {seed}", rng.standard_normal(20).astype(np.float32), timestamp=100.0,
                       noise=rng.standard_normal((T, A)).astype(np.float32))


def prefix(seed: int, delay: int = 4, horizon: int = 20) -> Prefix:
    """The executing chunk's rows (in the model's representation) from the new chunk's first row on."""
    committed = np.random.default_rng(seed).standard_normal((T, A)).astype(np.float32)
    return scheduled_prefix(committed, length=T, dim=A, delay=delay, horizon=horizon)


@pytest.fixture
def server(bundles):
    with ServerThread(create_app(bundles, Limits())) as srv:
        yield srv


def post(srv, obs: Observation, **fields) -> requests.Response:
    return requests.post(srv.url + "/act", json={
        "image0": json_numpy.dumps(obs.images[0]), "language_instruction": obs.instruction,
        "proprio": json_numpy.dumps(obs.proprio), "domain_id": 3, "steps": 4, "noise": json_numpy.dumps(obs.noise),
        **fields})


def test_a_prefix_gives_the_chunk_policy_act_gives_with_it_on_every_path(server, tiny_bundle):
    local = Policy.load(tiny_bundle)
    obs, p = observation(1), prefix(1)
    want = local.act(obs, steps=4, prefix=p).actions
    free = local.act(obs, steps=4).actions
    assert np.abs(want - free).max() > 1e-2  # the prefix moves the chunk: a path that dropped it would fail below
    with RemotePolicy(f"ws://{server.host}:{server.port}/ws", domain_id=3) as remote:
        np.testing.assert_array_equal(remote.act(obs, steps=4, prefix=p).actions, want)
        np.testing.assert_array_equal(remote.act_async(obs, steps=4, prefix=p).result(timeout=60).actions, want)
        np.testing.assert_array_equal(remote.act(obs, steps=4).actions, free)  # none: as before
    for rows, weights in ((json_numpy.dumps(p.rows), json_numpy.dumps(p.weights)),
                          (p.rows.tolist(), p.weights.tolist())):  # float32 values survive JSON exactly
        r = post(server, obs, prefix={"rows": rows, "weights": weights})
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(np.array(r.json()["action"], np.float32), want)


@pytest.mark.parametrize("rows, weights, message", [
    (np.zeros((4, A + 1)), [1, 1, 0.5, 0], "prefix.rows: expected [rows <= 30, 20]"),
    (np.zeros((T + 1, A)), np.zeros(T + 1), "prefix.rows: expected [rows <= 30, 20]"),
    (np.full((2, A), 1e6), [1, 1], "prefix.rows[0][0] = 1000000.0: expected a finite value within ±10000"),
    (np.zeros((3, A)), [1, 0.5, 0.75], "prefix.weights[2] = 0.75 > weights[1] = 0.5"),
    (np.zeros((3, A)), [1.5, 1, 1], "prefix.weights[0] = 1.5: expected a weight 0 ... 1"),
    (np.zeros((3, A)), [1, 1], "prefix.weights: expected one weight per prefix row (3), got 2"),
])
def test_a_bad_prefix_is_refused_naming_the_field_and_the_connection_goes_on(server, bundles, monkeypatch, rows,
                                                                             weights, message):
    ran = []
    for served in bundles.served.values():
        monkeypatch.setattr(served.policy.backend, "encode", lambda *a, **k: ran.append(1))
    obs = observation(2)
    r = post(server, obs, prefix={"rows": np.asarray(rows, np.float64).tolist(), "weights": list(weights)})
    assert r.status_code == 400 and message in r.json()["error"], r.text
    from websockets.sync.client import connect

    with connect(f"ws://{server.host}:{server.port}/ws") as ws:
        unpack(ws.recv())  # the metadata
        ws.send(pack({"image0": obs.images[0], "language_instruction": obs.instruction, "proprio": obs.proprio,
                      "domain_id": 3, "prefix": {"rows": np.asarray(rows, np.float32),
                                                 "weights": np.asarray(weights, np.float32)}}))
        reply = ws.recv()
        assert isinstance(reply, str) and reply.startswith("400 ") and message in reply, reply
    assert ran == []  # nothing reached the model


def test_remote_policy_checks_a_prefix_before_sending_it(server, monkeypatch):
    with RemotePolicy(f"ws://{server.host}:{server.port}/ws", domain_id=3) as remote:
        sent = []
        monkeypatch.setattr(remote._conn, "send", lambda message: sent.append(message))
        with pytest.raises(InputError, match="prefix: expected an xvla.realtime_chunking.Prefix"):
            remote.act(observation(3), prefix=(np.zeros((2, A)), np.ones(2)))
        hand_built = Prefix(np.zeros((2, A + 3), np.float32), np.ones(2, np.float32))  # skipping check_prefix
        with pytest.raises(InputError, match=r"prefix.rows: expected \[rows <= 30, 20\]"):
            remote.act(observation(3), prefix=hand_built)
        assert sent == []


@pytest.mark.server
def test_a_bundle_exported_before_real_time_chunking_refuses_a_prefix_by_name(tiny_bundle_before_prefix, monkeypatch):
    from xvla_edge.serve.bundles import BundleSet

    old = BundleSet.load([tiny_bundle_before_prefix])
    try:
        with ServerThread(create_app(old, Limits())) as srv:
            obs, p = observation(4), prefix(4)
            r = post(srv, obs, prefix={"rows": p.rows.tolist(), "weights": p.weights.tolist()})
            assert r.status_code == 400 and "prefix: domain 3 (bundle tiny-before-prefix) was exported before " \
                "real-time chunking" in r.json()["error"], r.text
            assert post(srv, obs).status_code == 200  # without one it runs as before
            with RemotePolicy(f"ws://{srv.host}:{srv.port}/ws") as remote:
                sent = []
                monkeypatch.setattr(remote._conn, "send", lambda message: sent.append(message))
                with pytest.raises(PrefixUnsupported, match="exported before real-time chunking; re-export it"):
                    remote.act(obs, prefix=p)
                assert sent == []
    finally:
        old.close()
