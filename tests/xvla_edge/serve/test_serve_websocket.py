"""The websocket protocol and ``RemotePolicy`` against a real server: chunks equal ``Policy.act``, refusals keep
the connection, timeouts and a killed server never yield a stale chunk."""

from __future__ import annotations

import json
import shutil
import signal
import time

import numpy as np
import pytest

websockets_sync = pytest.importorskip("websockets.sync.client")

from runtime.backends.base import BackendError  # noqa: E402
from runtime.policy import Policy  # noqa: E402
from runtime.remote.client import BundleChanged, RemotePolicy, RemoteUnavailable  # noqa: E402
from runtime.types import Observation  # noqa: E402
from runtime.remote.wire import pack, unpack  # noqa: E402
from xvla.errors import InputError  # noqa: E402
from xvla_edge.serve.app import create_app  # noqa: E402
from xvla_edge.serve.request import Limits  # noqa: E402
from xvla_edge.serve.server import ServerThread  # noqa: E402

RNG = np.random.default_rng(9)
IMG = RNG.integers(0, 256, (224, 224, 3), dtype=np.uint8)
WRIST = RNG.integers(0, 256, (224, 224, 3), dtype=np.uint8)
TOKEN = "websocket-token-0123456789"


def observation(seed: int, images=(IMG,), proprio_dim: int = 20, timestamp: float = 100.0,
                action_dim: int = 20) -> Observation:
    rng = np.random.default_rng(seed)
    return Observation(list(images), f"task {seed}", rng.standard_normal(proprio_dim).astype(np.float32),
                       timestamp=timestamp, noise=rng.standard_normal((30, action_dim)).astype(np.float32))


@pytest.fixture
def server(bundles):
    with ServerThread(create_app(bundles, Limits(), token=TOKEN)) as srv:
        yield srv


def ws_url(srv, path: str = "/ws") -> str:
    return f"ws://{srv.host}:{srv.port}{path}"


def test_remote_policy_chunks_equal_local_policy_act(server, tiny_bundle, joint_bundle):
    local = Policy.load(tiny_bundle)
    with RemotePolicy(ws_url(server, ""), domain_id=3, token=TOKEN) as remote:
        assert remote.manifest.bundle_id == local.manifest.bundle_id and remote.state_dim == 20
        for seed in range(3):
            obs = observation(seed, timestamp=1000.0 + seed)
            got, want = remote.act(obs, steps=4), local.act(obs, steps=4)
            np.testing.assert_array_equal(got.actions, want.actions)
            np.testing.assert_array_equal(got.timestamps, want.timestamps)  # anchored to the observation time
            np.testing.assert_array_equal(got.arms[0].quaternion, want.arms[0].quaternion)
        future = remote.act_async(observation(7))
        np.testing.assert_array_equal(future.result(timeout=30).actions, local.act(observation(7)).actions)
    joint = Policy.load(joint_bundle)
    with RemotePolicy(ws_url(server), domain_id=5, token=TOKEN) as remote:
        obs = observation(4, images=(None, WRIST), proprio_dim=14, action_dim=14)  # view slot 1 only: slots are kept
        np.testing.assert_array_equal(remote.act(obs).actions, joint.act(obs).actions)
        np.testing.assert_array_equal(remote.act(obs).arms[0].joints, joint.act(obs).arms[0].joints)


def test_metadata_first_then_one_reply_per_frame_and_refusals_keep_the_connection(server, bundles):
    openpi_auth = {"Authorization": f"Api-Key {TOKEN}"}  # how openpi's client sends its key
    with websockets_sync.connect(ws_url(server, "/"), additional_headers=openpi_auth) as ws:
        meta = unpack(ws.recv(timeout=10))
        assert meta["protocol"] == "xvla-edge/1" and sorted(meta["domains"]) == ["3", "5"]
        assert meta["domains"]["3"]["bundle_id"] == bundles.served[3].manifest.bundle_id
        good = {"image0": IMG, "language_instruction": "x", "proprio": np.zeros(20, np.float32), "domain_id": 3}
        ws.send(pack(good))
        reply = unpack(ws.recv(timeout=30))
        assert reply["action"].shape == (30, 20) and reply["action"].dtype == np.float32
        assert reply["domain_id"] == 3 and reply["server_timing"]["infer_ms"] > 0
        for bad, expected in [(pack({**good, "domain_id": 8}), "400 domain_id: 8 is not served here"),
                              (pack({**good, "proprio": np.zeros(3)}), "400 proprio: domain 3 takes 20 values"),
                              (pack({**good, "image0": IMG.astype(np.int16)}), "400 image0: expected an HxWx3 uint8"),
                              (b"\xc1garbage", "400 not a valid msgpack message"),
                              ("hello", "400 expected a binary msgpack frame")]:
            ws.send(bad)
            answer = ws.recv(timeout=10)
            assert isinstance(answer, str) and answer.startswith(expected), answer
        ws.send(pack(good))  # still the same connection, still serving
        assert unpack(ws.recv(timeout=30))["action"].shape == (30, 20)


def test_a_refused_token_is_an_error_not_an_outage(server):
    with pytest.raises(BackendError, match="HTTP 403") as err:
        RemotePolicy(ws_url(server), token="wrong-token-0123456789")
    assert not isinstance(err.value, RemoteUnavailable)
    with pytest.raises(BackendError, match=r"serves domains \['3', '5'\]; give domain_id"):
        RemotePolicy(ws_url(server), token=TOKEN)
    with pytest.raises(BackendError, match="domain 4 is not served"):
        RemotePolicy(ws_url(server), token=TOKEN, domain_id=4)
    with pytest.raises(BackendError, match="expected ws://"):
        RemotePolicy(f"http://127.0.0.1:{server.port}", token=TOKEN)


def test_a_bad_observation_is_an_input_error_and_the_next_one_works(server, tiny_bundle):
    with RemotePolicy(ws_url(server), domain_id=3, token=TOKEN) as remote:
        with pytest.raises(InputError, match="proprio: domain 3 takes 20 values, got 5"):
            remote.act(observation(1, proprio_dim=5))
        with pytest.raises(InputError, match="this bundle takes views 0 ... 0, got view 1"):
            remote.act(observation(1, images=(IMG, WRIST)))
        with pytest.raises(InputError, match="got none"):
            remote.act(observation(1, images=(None, None, None)))
        obs = observation(2)
        np.testing.assert_array_equal(remote.act(obs).actions, Policy.load(tiny_bundle).act(obs).actions)


def test_a_late_reply_is_never_taken_for_the_next_observation(server, bundles, tiny_bundle, monkeypatch):
    policy = bundles.served[3].policy
    real_act = policy.act

    def slow_act(obs, **options):
        time.sleep(1.0)
        return real_act(obs, **options)

    with RemotePolicy(ws_url(server), domain_id=3, token=TOKEN, timeout_s=0.3) as remote:
        monkeypatch.setattr(policy, "act", slow_act)
        with pytest.raises(RemoteUnavailable, match="no chunk within 0.3 s"):
            remote.act(observation(1))
        monkeypatch.setattr(policy, "act", real_act)
        time.sleep(1.0)  # the late chunk of observation 1 is sent meanwhile, to a closed connection
        obs = observation(2)
        np.testing.assert_array_equal(remote.act(obs).actions, Policy.load(tiny_bundle).act(obs).actions)


def rebuilt(bundle, tmp_path):
    """The same graphs under another bundle id (the manifest names another source checkpoint)."""
    out = tmp_path / "rebuilt"
    shutil.copytree(bundle, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["source"]["checkpoint"] += "-retrained"
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_a_killed_server_is_an_outage_and_its_return_is_picked_up(tiny_bundle, tmp_path, spawn_server, free_port):
    port = free_port
    proc = spawn_server(tiny_bundle, port)
    local = Policy.load(tiny_bundle)
    remote = RemotePolicy(f"ws://127.0.0.1:{port}", timeout_s=5.0)
    obs = observation(3)
    np.testing.assert_array_equal(remote.act(obs).actions, local.act(obs).actions)
    future = remote.act_async(observation(4), steps=100)  # in flight while the server dies
    time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    with pytest.raises(RemoteUnavailable):
        future.result(timeout=10)
    with pytest.raises(RemoteUnavailable, match="cannot connect"):
        remote.act(obs)
    proc = spawn_server(tiny_bundle, port)  # back, with the same bundle
    np.testing.assert_array_equal(remote.act(obs).actions, local.act(obs).actions)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    with pytest.raises(RemoteUnavailable):
        remote.act(obs)
    spawn_server(rebuilt(tiny_bundle, tmp_path), port)  # back with another bundle: refused, never used
    with pytest.raises(BundleChanged, match="now serves bundle"):
        remote.act(obs)
    remote.close()


def test_remote_policy_needs_a_server_to_start(free_port):
    with pytest.raises(RemoteUnavailable, match="cannot connect"):
        RemotePolicy(f"ws://127.0.0.1:{free_port}", connect_timeout_s=1.0)


@pytest.mark.server
def test_frames_over_the_frame_limit_are_refused_by_the_client_and_the_server(bundles):
    """The server announces its frame limit; RemotePolicy refuses a larger observation by name before sending, and
    a raw client sending one anyway is cut off by the server (close 1009) without it being read whole."""
    with ServerThread(create_app(bundles, Limits(max_frame_bytes=200_000), token=TOKEN)) as srv:
        with RemotePolicy(ws_url(srv), domain_id=3, token=TOKEN) as remote:
            assert remote.max_frame_bytes == 200_000
            big = RNG.integers(0, 256, (300, 300, 3), dtype=np.uint8)  # 270 kB of pixels
            with pytest.raises(InputError, match=r"observation: \d+ bytes as a frame; .* takes at most 200000 "
                                                 r"\(its --max-frame-mb\)"):
                remote.act(observation(1, images=(big,)))
            remote.act(observation(2))  # the connection is still good
        from websockets.exceptions import ConnectionClosed

        with websockets_sync.connect(ws_url(srv), additional_headers={"Authorization": f"Bearer {TOKEN}"},
                                     max_size=None) as ws:
            assert unpack(ws.recv())["max_frame_bytes"] == 200_000
            ws.send(b"\x00" * 300_000)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=10)
            assert info.value.rcvd.code == 1009  # message too big


def test_a_busy_server_is_an_outage_to_retry_not_a_failure(server, bundles, monkeypatch):
    """A 503 frame (every decoding slot taken) is RemoteUnavailable: the daemon holds and retries, as for an outage."""
    with RemotePolicy(ws_url(server), domain_id=3, token=TOKEN) as remote:
        monkeypatch.setattr(remote._conn, "recv", lambda timeout=None: "503 busy: every slot is taken; retry")
        with pytest.raises(RemoteUnavailable, match="503|busy"):
            remote.act(observation(1))
        assert remote._conn is None  # dropped: the next call connects afresh
        remote.act(observation(2))
