"""Shared test fixtures: random-weight checkpoints in the official layout, built once per session."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["pytester", "tests.support.tiers"]  # the tiers: tests/support/tiers.py

from server_domains import SERVER_DOMAINS  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("XVLA_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow (full-size) test: set XVLA_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """A tiny ee6d checkpoint directory (official file layout, random weights). Writing one takes torch: on a
    robot install the tests that need it skip, naming it."""
    pytest.importorskip("torch")
    from xvla.random_checkpoint import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", "tiny", seed=1)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint):
    """A tiny fp32 bundle (domain 3, one view) exported from :func:`tiny_checkpoint`; copy it before changing it."""
    pytest.importorskip("onnx")
    from export.bundle import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("bundle") / "tiny-fp32"
    export_bundle(tiny_checkpoint, out, ExportOptions(domain_id=3, views=1), progress=lambda line: None)
    return out


@pytest.fixture(scope="session")
def tiny_bundle_before_prefix(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint):
    """:func:`tiny_bundle` as exported before real-time chunking (a denoise graph without the prefix inputs)."""
    pytest.importorskip("onnx")
    from export.bundle import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("bundle") / "tiny-before-prefix"
    export_bundle(tiny_checkpoint, out, ExportOptions(domain_id=3, views=1, prefix_inputs=False),
                  progress=lambda line: None)
    return out


@pytest.fixture(scope="session")
def tiny_batch_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint):
    """A tiny fp32 bundle (domain 3, two views) exported for batch sizes 1, 2 and 4; copy it before changing it."""
    pytest.importorskip("onnx")
    from export.bundle import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("bundle") / "tiny-batch"
    export_bundle(tiny_checkpoint, out, ExportOptions(domain_id=3, views=2, batch_sizes=(1, 2, 4)),
                  progress=lambda line: None)
    return out



@pytest.fixture(scope="session")
def tiny_server_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint):
    """A tiny fp32 server bundle of :data:`SERVER_DOMAINS` (two views, batch sizes 1, 2 and 4) exported from
    :func:`tiny_checkpoint`; copy it before changing it."""
    pytest.importorskip("onnx")
    from export.bundle import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("bundle") / "tiny-server"
    export_bundle(tiny_checkpoint, out, ExportOptions(domains=SERVER_DOMAINS, views=2, batch_sizes=(1, 2, 4)),
                  progress=lambda line: None)
    return out


@pytest.fixture(scope="session")
def tiny_folded_bundles(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint):
    """Domain id → a robot's tiny fp32 bundle of that domain (two views), for each of :data:`SERVER_DOMAINS`."""
    pytest.importorskip("onnx")
    from export.bundle import ExportOptions, export_bundle

    root = tmp_path_factory.mktemp("folded")
    for d in SERVER_DOMAINS:
        export_bundle(tiny_checkpoint, root / f"d{d}", ExportOptions(domain_id=d, views=2), progress=lambda line: None)
    return {d: root / f"d{d}" for d in SERVER_DOMAINS}
