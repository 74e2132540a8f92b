"""``xvla-edge export --domains``: a server bundle whose denoise graph takes the domain as an input, holding the
rows of the listed domains only, stamped with them, verified against PyTorch for each; and the refusals of
what cannot be exported."""

from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from server_domains import SERVER_DOMAINS  # noqa: E402
from export.bundle import ExportError, ExportOptions, export_bundle  # noqa: E402
from export.domains import domain_defaults  # noqa: E402
from runtime.graph_stamp import DOMAIN_KEY, DOMAINS_KEY, read_metadata  # noqa: E402
from xvla.config import load_config  # noqa: E402
from xvla.checkpoint import load_checkpoint  # noqa: E402
from xvla_edge.cli import main  # noqa: E402


def test_the_manifest_lists_each_domain_with_its_own_span_and_arms(tiny_server_bundle):
    manifest = json.loads((tiny_server_bundle / "manifest.json").read_text())
    assert "domain_id" not in manifest and manifest["embodiment"] == "server"
    assert manifest["domains"] == [{"domain_id": d, "embodiment": domain_defaults(d)[0],
                                    "chunk_seconds": domain_defaults(d)[1], "arms": domain_defaults(d)[2]}
                                   for d in SERVER_DOMAINS]
    assert "chunk_seconds" not in manifest["action"] and "arms" not in manifest["action"]
    inputs = {t["name"]: t for t in manifest["graphs"]["denoise"]["inputs"]}
    assert inputs["domain_id"] == {"name": "domain_id", "shape": ["batch"], "dtype": "int64"}
    parity = manifest["parity"]
    assert sorted(parity["domains"]) == sorted(map(str, SERVER_DOMAINS))  # each domain checked against PyTorch
    assert all(v["action"] <= 1e-5 for v in parity["domains"].values()) and parity["passed"]
    assert parity["batch"]["passed"]  # batches of mixed domains against each row alone
    stamp = read_metadata(tiny_server_bundle / "denoise.onnx")
    assert stamp[DOMAINS_KEY] == ",".join(map(str, SERVER_DOMAINS)) and DOMAIN_KEY not in stamp


def test_the_graph_holds_the_listed_domains_rows_and_a_map_to_them(tiny_server_bundle, tiny_checkpoint):
    """Three domains: three rows of soft prompts and action weights, each equal to the checkpoint's row of its
    domain, and a map from domain id to row that sends the others past the last row."""
    cfg = load_config(tiny_checkpoint)
    graph = onnx.load(str(tiny_server_bundle / "denoise.onnx"))
    constants = [onnx.numpy_helper.to_array(t) for t in graph.graph.initializer]
    head = load_checkpoint(tiny_checkpoint).transformer
    prompts = head.soft_prompt_hub.weight.detach().numpy().reshape(cfg.num_domains, -1, cfg.hidden_size)
    stacked = [c for c in constants if c.shape == (len(SERVER_DOMAINS), *prompts.shape[1:])]
    assert len(stacked) == 1 and np.array_equal(stacked[0], prompts[list(SERVER_DOMAINS)])
    assert not [c for c in constants if c.shape[:1] == (cfg.num_domains,) and c.dtype != np.int64]  # no other rows
    maps = [c for c in constants if c.dtype == np.int64 and c.shape == (cfg.num_domains,)]
    assert len(maps) == 1
    expected = np.full(cfg.num_domains, len(SERVER_DOMAINS))
    expected[list(SERVER_DOMAINS)] = np.arange(len(SERVER_DOMAINS))
    assert np.array_equal(maps[0], expected)
    dec = head.action_decoder.fc.weight.detach().numpy().reshape(cfg.num_domains, cfg.hidden_size, -1)
    assert any(c.shape == (3, *dec.shape[1:]) and np.array_equal(c, dec[list(SERVER_DOMAINS)]) for c in constants)


@pytest.mark.parametrize("options, message", [
    (dict(domains=(0, 3, 3)), "--domains: 3 listed twice"),
    (dict(domains=(0, 30)), "--domains: 30 out of range: this checkpoint has domains 0..29"),
    (dict(domains=(-1,)), "--domains: -1 out of range"),
    (dict(domains=()), "--domains (): expected 'all' or at least one domain id"),
    (dict(domains="all", chunk_seconds=2.0), "--chunk-seconds names one robot's value"),
    (dict(domains=(1, 2), arms=2), "--arms names one robot's value"),
    (dict(domains=(1, 2), domain_id=1), "give one of --domain-id N"),
    (dict(), "give one of --domain-id N"),
])
def test_what_cannot_be_exported_is_refused_before_any_work(tiny_checkpoint, tmp_path, options, message):
    with pytest.raises(ExportError) as info:
        export_bundle(tiny_checkpoint, tmp_path / "out", ExportOptions(**options), progress=lambda line: None)
    assert message in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value, message", [("0,x", "expected 'all' or domain ids separated by commas"),
                                            ("", "expected 'all' or domain ids")])
def test_the_domains_option_is_parsed_by_name(tiny_checkpoint, tmp_path, capsys, value, message):
    with pytest.raises(SystemExit) as info:
        main(["export", str(tiny_checkpoint), "--domains", value, "--out", str(tmp_path / "out")])
    assert info.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one of the two, not both
        main(["export", str(tiny_checkpoint), "--domains", "0", "--domain-id", "0", "--out", str(tmp_path / "o")])
    assert "not allowed with argument" in capsys.readouterr().err


def test_info_lists_each_domain_of_a_server_bundle(tiny_server_bundle, capsys):
    assert main(["info", str(tiny_server_bundle)]) == 0
    out = capsys.readouterr().out
    assert "  server:    server, 3 domains (the domain an input of the denoise graph)" in out
    assert "    domain 6: robotwin2-agilex, 2 arm(s), 1 s per chunk" in out
    assert "    domain 0: bridge-widowx, 1 arm(s), 5 s per chunk" in out and "steps over each domain's span" in out
