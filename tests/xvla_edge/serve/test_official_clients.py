"""How the official X-VLA evaluation clients find and reach a server, against ``xvla-edge serve`` in its own
process: the LIBERO client's ``--connection_info`` mode (it waits for the official server's ``info.json``), and a
client that cannot send a token reaching a lab-mode server (``--allow-unauthenticated``) on a non-loopback
address of this machine. The client side follows ``evaluation/libero/libero_client.py`` (X-VLA 6bc2513) step by
step, as the other serve tests send the official clients' requests."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

json_numpy = pytest.importorskip("json_numpy")
requests = pytest.importorskip("requests")

from xvla_edge.cli import main  # noqa: E402
from xvla_edge.serve.connection_info import client_host  # noqa: E402

RNG = np.random.default_rng(35)


def wait_for_connection_info(path: Path, timeout_s: float = 120) -> tuple[str, int]:
    """The LIBERO client's ``--connection_info`` mode: sleep 0.5 s until the path exists, then read it once with
    ``json.load``: ``host, port = infos["host"], int(infos["port"])``."""
    end = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < end, f"no {path} within {timeout_s} s"
        time.sleep(0.5)
    with open(path, "r", encoding="utf-8") as f:
        infos = json.load(f)
    return infos["host"], int(infos["port"])


def libero_act(host: str, port: int) -> np.ndarray:
    """One query as the LIBERO client's ``ClientModel`` sends it: ``http://{host}:{port}/act``, the flipped agent
    view and the wrist view (256x256x3 uint8), proprio = pose (10) + zeros (10) as float64, domain 3, 10 steps,
    all as json_numpy strings; ``raise_for_status``, then ``np.array(data["action"])``."""
    pose = np.concatenate([RNG.standard_normal(3), RNG.standard_normal(6), [0.0]])
    payload = {"proprio": json_numpy.dumps(np.concatenate([pose, np.zeros_like(pose)])),
               "language_instruction": "put the bowl on the plate",
               "image0": json_numpy.dumps(np.flip(RNG.integers(0, 256, (256, 256, 3), dtype=np.uint8), (0, 1))),
               "image1": json_numpy.dumps(RNG.integers(0, 256, (256, 256, 3), dtype=np.uint8)),
               "domain_id": 3, "steps": 10}
    resp = requests.post(f"http://{host}:{port}/act", json=payload)
    resp.raise_for_status()
    return np.array(resp.json()["action"])


@pytest.fixture
def serve_process(tmp_path):
    """``start(*args)``: ``xvla-edge serve ARGS`` in its own process, its output in a file (``log(proc)``);
    every one still running is killed after the test. The child gets SIGINT's default action back: a suite started
    in the background by a non-interactive shell (``make test &``) runs with SIGINT ignored, which children inherit,
    and a server that ignores Ctrl-C cannot show what Ctrl-C does."""
    procs: list[tuple[subprocess.Popen, Path]] = []

    def start(*args: str) -> subprocess.Popen:
        log = tmp_path / f"serve-{len(procs)}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "xvla_edge", "serve", *args], stdout=out,
                                    stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        procs.append((proc, log))
        return proc

    def log(proc: subprocess.Popen) -> str:
        return next(path for p, path in procs if p is proc).read_text()

    start.log = log
    yield start
    for proc, _ in procs:
        proc.kill()
        proc.wait(timeout=10)


def stop(proc: subprocess.Popen, sig: int) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=60)


@pytest.mark.subprocess
def test_the_libero_clients_connection_info_mode_connects(tiny_batch_bundle, tmp_path, serve_process):
    info = tmp_path / "logs" / "info.json"
    with ThreadPoolExecutor(1) as pool:
        client = pool.submit(wait_for_connection_info, info)  # the client starts first and waits, as on SLURM
        server = serve_process(str(tiny_batch_bundle), "--port", "0", "--connection-info", str(info))
        host, port = client.result(timeout=150)
    assert host == "127.0.0.1" and port != 0 and f"serving on http://127.0.0.1:{port} " in serve_process.log(server)
    assert libero_act(host, port).shape == (30, 20)
    second = serve_process(str(tiny_batch_bundle), "--port", "0", "--connection-info", str(info))
    assert second.wait(timeout=60) == 1
    assert f"--connection-info {info} already exists" in serve_process.log(second)
    assert stop(server, signal.SIGTERM) == 128 + signal.SIGTERM and not info.exists()  # uvicorn's graceful stop, then ours
    server = serve_process(str(tiny_batch_bundle), "--port", "0", "--connection-info", str(info))
    assert libero_act(*wait_for_connection_info(info)).shape == (30, 20)
    assert stop(server, signal.SIGINT) == 130 and not info.exists()  # Ctrl-C
    assert "interrupted" in serve_process.log(server)


@pytest.fixture(scope="module")
def network_address() -> str:
    """This machine's address on its default route (what ``--host 0.0.0.0`` writes as its host)."""
    host = client_host("0.0.0.0")
    if ipaddress.ip_address(host).is_loopback:
        pytest.skip("this machine has no non-loopback address (no default route): lab mode on a network address "
                    "is not checked")
    return host


@pytest.mark.subprocess
def test_a_token_less_client_reaches_a_lab_mode_server_on_a_network_address(
        tiny_batch_bundle, network_address, tmp_path, serve_process, capsys):
    assert main(["serve", str(tiny_batch_bundle), "--host", network_address]) == 1  # without the opt-in, as before
    assert f"--host {network_address} is reachable from other machines: give --token-file" in capsys.readouterr().err
    info = tmp_path / "info.json"
    server = serve_process(str(tiny_batch_bundle), "--host", network_address, "--port", "0",
                           "--allow-unauthenticated", "--connection-info", str(info))
    host, port = wait_for_connection_info(info)
    assert host == network_address
    assert libero_act(host, port).shape == (30, 20)
    assert requests.get(f"http://{host}:{port}/healthz").json()["allow_unauthenticated"] is True
    assert "\nxvla_serve_unauthenticated 1.0\n" in requests.get(f"http://{host}:{port}/metrics").text
    assert f"WARNING --allow-unauthenticated: http://{network_address}:{port} serves /act, the websocket and " \
           "/metrics WITHOUT A TOKEN" in serve_process.log(server)
    assert stop(server, signal.SIGTERM) == 128 + signal.SIGTERM and not info.exists()
