"""openpi's own client (``WebsocketClientPolicy`` of ``openpi-client``, from the package index) against the
websocket with a client layout: openpi's LIBERO example observation gets a chunk of the bundle's shape, equal to
``Policy.act`` of the same inputs; a refusal is raised as openpi's client raises a server's error."""

from __future__ import annotations

import numpy as np
import pytest

openpi = pytest.importorskip("openpi_client.websocket_client_policy",
                             reason="openpi-client is not installed (`make` installs it into .venv)")

from runtime.policy import Policy  # noqa: E402
from runtime.remote.client import RemotePolicy  # noqa: E402
from runtime.types import Observation  # noqa: E402
from xvla_edge.serve.app import create_app  # noqa: E402
from xvla_edge.serve.bundles import BundleSet  # noqa: E402
from xvla_edge.serve.client_layouts import PRESETS, for_domain  # noqa: E402
from xvla_edge.serve.request import Limits  # noqa: E402
from xvla_edge.serve.server import ServerThread  # noqa: E402

TOKEN = "openpi-api-key-0123456789"


def libero_observation(rng: np.random.Generator) -> dict:
    """openpi's ``examples/simple_client/main.py`` LIBERO observation (the keys, shapes and dtypes its LIBERO
    example sends)."""
    return {"observation/state": rng.random(8),
            "observation/image": rng.integers(256, size=(224, 224, 3), dtype=np.uint8),
            "observation/wrist_image": rng.integers(256, size=(224, 224, 3), dtype=np.uint8),
            "prompt": "do something"}


@pytest.fixture(scope="module")
def served(tiny_batch_bundle):
    """The two-view domain-3 bundle behind an app reading openpi's LIBERO layout, with a token."""
    bundles = BundleSet.load([tiny_batch_bundle])
    layout = for_domain(PRESETS["openpi-libero"], None, bundles.domains)
    with ServerThread(create_app(bundles, Limits(), TOKEN, layout=layout)) as srv:
        yield srv
    bundles.close()


@pytest.mark.server
def test_openpis_client_gets_chunks_equal_to_policy_act(served, tiny_batch_bundle):
    rng = np.random.default_rng(0)
    client = openpi.WebsocketClientPolicy(host=served.host, port=served.port, api_key=TOKEN)
    assert client.get_server_metadata()["protocol"] == "xvla-edge/1"
    reply = client.infer(libero_observation(rng))  # exactly what the example sends
    assert reply["actions"].shape == (30, 20) and reply["actions"].dtype == np.float32 and "action" not in reply
    obs = {**libero_observation(rng), "seed": 11}
    reply = client.infer(obs)
    local = Policy.load(tiny_batch_bundle)
    state = np.concatenate([obs["observation/state"], np.zeros(12)]).astype(np.float32)  # zero-padded to 20
    want = local.act(Observation([obs["observation/image"], obs["observation/wrist_image"]], "do something", state,
                                 noise=np.random.default_rng(11).standard_normal((30, 20), dtype=np.float32)))
    np.testing.assert_array_equal(reply["actions"], want.actions)
    missing = {k: v for k, v in obs.items() if k != "observation/wrist_image"}
    with pytest.raises(RuntimeError, match="Error in inference server:\n400 observation/wrist_image: missing"):
        client.infer(missing)
    assert client.infer(obs)["actions"].shape == (30, 20)  # the connection stays open after a refusal


def test_remote_policy_still_speaks_the_own_protocol_beside_a_layout(served, tiny_batch_bundle):
    rng = np.random.default_rng(1)
    obs = Observation([rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)] * 2, "open the drawer",
                      rng.standard_normal(20).astype(np.float32),
                      noise=rng.standard_normal((30, 20)).astype(np.float32))
    with RemotePolicy(f"ws://{served.host}:{served.port}", domain_id=3, token=TOKEN) as remote:
        np.testing.assert_array_equal(remote.act(obs).actions, Policy.load(tiny_batch_bundle).act(obs).actions)
