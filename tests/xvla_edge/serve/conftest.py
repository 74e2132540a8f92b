"""Fixtures of the server tests: the session's tiny bundle (domain 3, ee6d) and a joint-mode one (domain 5),
loaded once into a :class:`BundleSet`; each test serves them from its own app on a free port."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the [serve] extra (fastapi, uvicorn) is not installed")


@pytest.fixture(scope="session")
def joint_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny joint-mode fp32 bundle for domain 5 (two views)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from export.bundle import ExportOptions, export_bundle
    from xvla.random_checkpoint import write_random_checkpoint

    ckpt = write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "joint", "tiny", seed=2, action_mode="joint")
    out = tmp_path_factory.mktemp("bundle") / "tiny-joint"
    export_bundle(ckpt, out, ExportOptions(domain_id=5, views=2), progress=lambda line: None)
    return out


@pytest.fixture(scope="session")
def bundles(tiny_bundle, joint_bundle):
    from xvla_edge.serve.bundles import BundleSet

    served = BundleSet.load([tiny_bundle, joint_bundle])
    yield served
    served.close()
