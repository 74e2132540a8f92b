"""Fixtures of the server tests: the session's tiny bundle (domain 3, ee6d) and a joint-mode one (domain 5),
loaded once into a :class:`BundleSet`; each test serves them from its own app on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
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


@pytest.fixture
def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def spawn_server(tmp_path):
    """``start(bundle, port)``: ``xvla-edge serve`` in its own process, returned once it accepts connections
    (its output in a file); every one still running is killed after the test."""
    procs: list[subprocess.Popen] = []

    def start(bundle: Path, port: int) -> subprocess.Popen:
        log = open(tmp_path / f"serve-{len(procs)}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "xvla_edge", "serve", str(bundle), "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        procs.append(proc)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return proc
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(f"serve exited: {log.name}: {Path(log.name).read_text()}") from None
                time.sleep(0.1)
        raise AssertionError("serve did not start within 60 s")

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)
