"""A server bundle (``xvla-edge export --domains``) run by ``Policy``: each domain's chunk equals the robot's
bundle of that domain (same noise) on ONNX Runtime and torch, a batch may mix domains, a domain the bundle
lacks is refused by name, and manifests that lie about their domains are refused."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest

from server_domains import SERVER_DOMAINS
from runtime.backends.base import BackendError
from runtime.manifest import BundleError, Manifest
from runtime.policy import Policy
from runtime.types import Observation, UnknownDomain
from xvla.errors import InputError

pytest.importorskip("onnx")


def observation(seed: int, views: int = 2) -> Observation:
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (48 + 8 * v, 64, 3), dtype=np.uint8) for v in range(views)]
    return Observation(images=images, instruction=f"stack block {seed}",
                       proprio=rng.normal(0, 0.3, 20).astype(np.float32), timestamp=100.0 + seed,
                       noise=rng.standard_normal((30, 20)).astype(np.float32))


@pytest.fixture(scope="module")
def server(tiny_server_bundle):
    with Policy.load(tiny_server_bundle, backend="onnxruntime") as policy:
        yield policy


@pytest.mark.parametrize("domain", SERVER_DOMAINS)
def test_each_domain_equals_the_robots_bundle_of_that_domain(server, tiny_folded_bundles, domain):
    folded = Policy.load(tiny_folded_bundles[domain], backend="onnxruntime")
    spec = server.manifest.domains[domain]
    for seed in range(3):
        obs = observation(seed)
        ours, theirs = server.act(obs, domain_id=domain), folded.act(obs)
        np.testing.assert_allclose(ours.actions, theirs.actions, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(ours.timestamps, theirs.timestamps)  # the domain's own chunk span
        assert ours.timestamps[-1] == pytest.approx(obs.timestamp + spec.chunk_seconds)
        assert len(ours.arms) == len(theirs.arms) == spec.arms
    assert folded.act(observation(0), domain_id=domain).actions.shape == (30, 20)  # its own domain, named


def test_the_torch_backend_runs_the_domain_asked_for(tiny_server_bundle, tiny_folded_bundles):
    pytest.importorskip("torch")
    policy = Policy.load(tiny_server_bundle, backend="torch")
    for domain in (17, 0):
        obs = observation(domain)
        expected = Policy.load(tiny_folded_bundles[domain], backend="onnxruntime").act(obs).actions
        np.testing.assert_allclose(policy.act(obs, domain_id=domain).actions, expected, rtol=0, atol=1e-5)


def test_a_batch_may_mix_domains_and_each_row_equals_its_domain_alone(server):
    observations = [observation(10 + i) for i in range(5)]
    domains = [17, 0, 6, 17, 0]
    together = server.act_batch(observations, domain_ids=domains)  # a batch of 4, then one of 1
    for obs, domain, chunk in zip(observations, domains, together):
        np.testing.assert_allclose(chunk.actions, server.act(obs, domain_id=domain).actions, rtol=0, atol=1e-5)
        assert len(chunk.arms) == server.manifest.domains[domain].arms
    same = server.act_batch(observations[:2], domain_ids=6)  # one domain for all
    np.testing.assert_allclose(same[1].actions, server.act(observations[1], domain_id=6).actions, rtol=0, atol=1e-5)


def test_a_domain_the_bundle_lacks_is_refused_by_name(server, tiny_folded_bundles):
    obs = observation(0)
    with pytest.raises(UnknownDomain, match=r"domain_id = 3: bundle tiny-server does not serve it; domains served: "
                                            r"0, 6, 17"):
        server.act(obs, domain_id=3)
    for bad in (True, "0", 0.0, -1):
        with pytest.raises(UnknownDomain):
            server.act(obs, domain_id=bad)
    with pytest.raises(InputError, match="tiny-server is a server bundle; name one of the domains it serves: 0, 6, 17"):
        server.act(obs)
    with pytest.raises(UnknownDomain, match=r"observations\[1\]: domain_id = 5: .* domains served: 0, 6, 17"):
        server.act_batch([obs, obs], domain_ids=[0, 5])
    with pytest.raises(InputError, match="domain_ids: 1 for 2 observations"):
        server.act_batch([obs, obs], domain_ids=[0])
    with pytest.raises(UnknownDomain, match="domain_id = 6: bundle d0 does not serve it; domains served: 0"):
        Policy.load(tiny_folded_bundles[0]).act(obs, domain_id=6)
    with pytest.raises(BackendError, match="needs domain_ids, one per row"):  # the backend seam checks it too
        server.backend.denoise(obs.noise[None], obs.proprio[None], 2)


def test_a_robot_reads_one_domain_of_a_server_bundle_as_its_own_bundle(server):
    manifest = server.manifest
    with pytest.raises(BundleError, match=r"server bundle \(domains \[0, 6, 17\]\): it has no single domain"):
        manifest.domain_id
    view = manifest.for_domain(6)
    assert view.domain_id == 6 and view.embodiment == "robotwin2-agilex" and view.bundle_id == manifest.bundle_id
    assert view.action["arms"] == 2 and view.action["chunk_seconds"] == 1.0 and not view.is_server


# -- manifests that lie about their domains ------------------------------------------------------------------
@pytest.fixture()
def raw(tiny_server_bundle) -> dict:
    return json.loads((tiny_server_bundle / "manifest.json").read_text())


def refused(d: dict) -> str:
    with pytest.raises(BundleError) as info:
        Manifest.from_dict(d)
    return str(info.value)


def domain_input(d: dict) -> dict:
    """The denoise graph's ``domain_id`` input in manifest ``d``."""
    return next(i for i in d["graphs"]["denoise"]["inputs"] if i["name"] == "domain_id")


def _with(raw: dict, change) -> dict:
    d = copy.deepcopy(raw)
    change(d)
    return d


@pytest.mark.parametrize("change, named", [
    (lambda d: d["domains"].append(dict(d["domains"][0])), "domains[3].domain_id = 0: listed twice (also domains[0])"),
    (lambda d: d["domains"][1].update(domain_id=1024), "domains[1].domain_id = 1024: expected an integer 0 ... 1023"),
    (lambda d: d["domains"][1].update(domain_id=-1), "domains[1].domain_id = -1: expected an integer 0 ... 1023"),
    (lambda d: d["domains"][1].update(domain_id="6"), 'domains[1].domain_id = "6": expected an integer'),
    (lambda d: d["domains"][0].update(chunk_seconds=float("nan")), "domains[0].chunk_seconds = nan: expected a finite"),
    (lambda d: d["domains"][2].update(arms=3), "domains[2].arms = 3: expected one of 1, 2"),
    (lambda d: d["domains"][2].update(embodiment="../x"), "domains[2].embodiment"),
    (lambda d: d["domains"][2].pop("chunk_seconds"), "domains[2].chunk_seconds: missing"),
    (lambda d: d.update(domains=[]), "domains = []: expected a list of 1 ... 1024 objects"),
    (lambda d: d.update(domains={"0": {}}), "domains = "),
    (lambda d: d.update(domain_id=0), "domain_id = 0: a server bundle names its domains in domains"),
    (lambda d: d["action"].update(arms=1), "action.arms = 1: a server bundle gives it per domain"),
    (lambda d: d["graphs"]["denoise"]["inputs"].remove(domain_input(d)), "graphs.denoise.inputs names"),
    (lambda d: domain_input(d).update(dtype="float32"),
     "graphs.denoise.inputs domain_id dtype = \"float32\": expected 'int64'"),
    (lambda d: domain_input(d).update(shape=[1]), "graphs.denoise.inputs domain_id shape = [1]"),
])
def test_every_domain_field_is_validated_by_name(raw, change, named):
    assert domain_input(raw)["shape"] == ["batch"]
    assert named in refused(_with(raw, change))


def test_a_robots_manifest_must_not_name_a_domain_input(tiny_bundle):
    d = json.loads((tiny_bundle / "manifest.json").read_text())
    d["graphs"]["denoise"]["inputs"].append({"name": "domain_id", "shape": [1], "dtype": "int64"})
    assert "graphs.denoise.inputs names" in refused(d)


@pytest.mark.parametrize("change, named", [
    (lambda d: d["domains"].append({"domain_id": 3, "embodiment": "x", "chunk_seconds": 1.0, "arms": 1}),
     r"domains = 0,3,6,17, but denoise.onnx was exported for domains 0,6,17 \(its xvla_edge.domains\)"),
    (lambda d: d["domains"].pop(0), r"domains = 6,17, but denoise.onnx was exported for domains 0,6,17"),
    (lambda d: d["domains"][0].update(domain_id=1),
     r"domains = 1,6,17, but denoise.onnx was exported for domains 0,6,17"),
])
def test_a_manifest_whose_domains_differ_from_the_graphs_is_refused(tiny_server_bundle, tmp_path, change, named):
    bundle = shutil.copytree(tiny_server_bundle, tmp_path / "b")
    (bundle / "manifest.json").write_text(json.dumps(_with(json.loads((bundle / "manifest.json").read_text()),
                                                             change)))
    Manifest.load(bundle).verify_files(bundle)  # a valid manifest, every file intact
    with pytest.raises(BundleError, match=named):
        Policy.load(bundle)


def test_a_server_graph_under_a_robots_manifest_is_refused(tiny_server_bundle, tiny_folded_bundles, tmp_path):
    """The graphs of a server bundle, the manifest of a robot's bundle rewritten to list them: refused by the
    stamp before any session is made."""
    bundle = shutil.copytree(tiny_server_bundle, tmp_path / "b")
    robot = json.loads((tiny_folded_bundles[0] / "manifest.json").read_text())
    server = json.loads((bundle / "manifest.json").read_text())
    robot["files"], robot["graphs"] = server["files"], server["graphs"]
    robot["graphs"]["denoise"]["inputs"].remove(domain_input(robot))  # as a robot's graph would declare
    robot["batch_sizes"] = server["batch_sizes"]
    (bundle / "manifest.json").write_text(json.dumps(robot))
    with pytest.raises(BundleError, match=r"domain_id = 0, but denoise.onnx was exported for the domains 0,6,17 of a "
                                          r"server bundle"):
        Policy.load(bundle)
