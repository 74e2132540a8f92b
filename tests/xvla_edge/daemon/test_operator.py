"""Operating a running daemon over its control socket (``xvla-edge ctl``), on the xvla-serial emulator: a new
task mid-run, hold / resume / stop / start, e-stop reaching the controller, refusals by name, who may connect."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from xvla_edge.cli import main
from xvla_edge.daemon.config import load_config
from xvla_edge.daemon.robot_toml import robot_toml
from xvla_edge.daemon.service import Daemon

from tests.support.daemon_driving import RATE_HZ, accepted, ctl, drive, free_port, http

REPO = Path(__file__).resolve().parents[3]


def sent_speed_within_envelope(daemon: Daemon) -> None:
    trace = daemon.loop.trace()
    sent = ~np.isnan(trace["command"][:, 0])
    pos, t = trace["command"][sent, :3], trace["time"][sent]
    step = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    limit = daemon.config.loop_config().limits.max_linear_speed
    assert len(pos) > 10 and (step <= limit * np.maximum(np.diff(t), 1 / RATE_HZ) * 1.001 + 1e-12).all()


def test_a_new_instruction_takes_over_from_the_next_chunk(daemon):
    assert drive(daemon, 20.0, until=lambda d: accepted(d) >= 2)
    reply = ctl(daemon, "instruction", text="wave at the camera")
    assert reply["ok"] and reply["state"]["instruction"] == "wave at the camera"
    assert reply["result"]["previous"] == daemon.config.instruction
    before = accepted(daemon)
    assert drive(daemon, 20.0, until=lambda d: accepted(d) >= before + 3)
    recording = Path(ctl(daemon, "record")["result"]["path"])
    tasks = list(np.load(recording / "observations.npz")["instruction"])
    switch = tasks.index("wave at the camera")
    assert switch > 0 and set(tasks[:switch]) == {daemon.config.instruction}
    assert set(tasks[switch:]) == {"wave at the camera"}  # every observation after the switch carries it
    assert json.loads((recording / "meta.json").read_text())["instruction"] == "wave at the camera"
    sent_speed_within_envelope(daemon)  # no jump at the switch: the envelope held throughout


def test_estop_reaches_the_controller_and_only_clear_then_resume_moves_again(daemon, emu):
    assert drive(daemon, 20.0, until=lambda d: d.stats.mode == "tracking")
    t0 = time.monotonic()
    reply = ctl(daemon, "estop")
    while emu.call("snapshot")["mode"] != "ESTOPPED":
        assert time.monotonic() - t0 < 1.0, "the e-stop did not reach the controller"
    print(f"\ne-stop: command sent → controller ESTOPPED seen after {(time.monotonic() - t0) * 1e3:.1f} ms")
    assert reply["ok"] and reply["state"]["operator"] == "estopped"
    for command, why in [("resume", "clear-estop first"), ("start", "clear-estop first"),
                         ("hold", "nothing is running")]:
        refused = ctl(daemon, command)
        assert not refused["ok"] and why in refused["error"], refused
    before = accepted(daemon)
    drive(daemon, 1.0)
    assert accepted(daemon) == before and emu.call("snapshot")["mode"] == "ESTOPPED"
    assert daemon.health()[0] == "degraded"
    cleared = ctl(daemon, "clear-estop")
    assert cleared["ok"] and cleared["state"]["operator"] == "held", cleared
    drive(daemon, 0.5)
    assert accepted(daemon) == before and daemon.stats.mode in ("idle", "holding")
    assert ctl(daemon, "resume")["ok"]
    assert drive(daemon, 20.0, until=lambda d: accepted(d) > before and d.stats.mode == "tracking")


def test_the_arms_own_estop_cannot_be_cleared_from_here(daemon, emu):
    assert drive(daemon, 20.0, until=lambda d: d.stats.mode == "tracking")
    assert ctl(daemon, "estop")["ok"]
    emu.call("press_estop", held=True)  # the controller's own button, still pressed
    refused = ctl(daemon, "clear-estop")
    assert not refused["ok"] and "the arm still reports its e-stop" in refused["error"], refused
    assert refused["state"]["operator"] == "estopped" and emu.call("snapshot")["mode"] == "ESTOPPED"
    emu.call("release_estop")  # let go: now the operator's clear works
    cleared = ctl(daemon, "clear-estop")
    assert cleared["ok"] and cleared["state"]["operator"] == "held", cleared


def test_hold_stop_and_start_with_a_time_limit(daemon):
    assert drive(daemon, 20.0, until=lambda d: accepted(d) >= 1)
    assert ctl(daemon, "hold")["state"]["operator"] == "held"
    before = accepted(daemon)
    drive(daemon, 1.5)
    assert accepted(daemon) == before
    assert ctl(daemon, "resume")["ok"]
    assert drive(daemon, 20.0, until=lambda d: accepted(d) > before)
    stopped = ctl(daemon, "stop")
    assert stopped["ok"] and stopped["state"]["operator"] == "stopped"
    for command, why in [("stop", "no episode is running"), ("resume", "start an episode"),
                         ("instruction", "instruction: expected text (a string), got NoneType")]:
        assert why in ctl(daemon, command)["error"]
    assert "control character U+000A" in ctl(daemon, "instruction", text="a\nb")["error"]
    assert "seconds = -1" in ctl(daemon, "start", seconds=-1)["error"]
    assert "unknown command 'jump'" in ctl(daemon, "jump")["error"]
    started = ctl(daemon, "start", seconds=2.0)
    assert started["ok"] and started["state"]["episode"]["number"] == 2
    assert "stop it first" in ctl(daemon, "start")["error"]
    assert drive(daemon, 10.0, until=lambda d: d.status()["operator"] == "stopped")  # the time limit


def test_ctl_prints_and_exits_by_outcome(daemon, capsys, tmp_path):
    assert drive(daemon, 20.0, until=lambda d: accepted(d) >= 1)
    sock = ["--socket", str(daemon.sock)]
    assert main(["ctl", "status", *sock]) == 0
    out = capsys.readouterr().out
    assert "operator running" in out and f"instruction: {daemon.config.instruction!r}" in out
    assert main(["ctl", "resume", *sock]) == 1
    assert "refused: resume: nothing is held" in capsys.readouterr().err
    assert main(["ctl", "hold", "--json", *sock]) == 0
    assert json.loads(capsys.readouterr().out)["state"]["operator"] == "held"
    assert main(["ctl", "status", "--socket", str(tmp_path / "none.sock")]) == 3
    assert "no daemon listens" in capsys.readouterr().err
    assert main(["ctl", "instruction", *sock]) == 2


SYSTEM_PYTHON = Path("/usr/bin/python3")


@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="needs /usr/bin/python3 to run ctl as another user")
def test_the_socket_refuses_who_has_no_permission(daemon):
    """The socket file is 0660 (owner and group): another user cannot even connect; with the mode opened up,
    the same user can — so it is the socket's permission that refuses, nothing else on the way."""
    assert oct(daemon.sock.stat().st_mode & 0o777) == "0o660"
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); from xvla_edge.cli import main; "
            f"sys.exit(main(['ctl', 'status', '--socket', {str(daemon.sock)!r}]))")

    def as_nobody() -> subprocess.CompletedProcess:
        return subprocess.run([str(SYSTEM_PYTHON), "-c", code], user="nobody", group="nogroup", extra_groups=[],
                              capture_output=True, text=True, timeout=60, cwd="/")

    out = as_nobody()
    assert out.returncode == 4 and "permission denied" in out.stderr, (out.returncode, out.stderr)
    daemon.sock.chmod(0o666)
    out = as_nobody()
    assert out.returncode == 0 and "operator running" in out.stdout, (out.returncode, out.stderr)


def test_the_status_page_and_http_control(tmp_path, bundle, emu):
    """The page, its data, and control over HTTP: open to read, token to act beyond loopback."""
    from PIL import Image

    token = tmp_path / "token"
    token.write_text("operator-token-0123456789\n")
    token.chmod(0o600)
    port = free_port()
    path = tmp_path / "robot.toml"
    path.write_text(robot_toml(bundle, emu.port, tmp_path / "recordings", cameras={"width": 96, "height": 64},
                               arm={"timeout_ms": 300}, control={"rate_hz": RATE_HZ, "realtime_priority": 0},
                               health={"port": port, "host": "0.0.0.0", "token_file": str(token)}))
    d = Daemon(load_config(path))
    d.start()
    base = f"http://127.0.0.1:{port}"
    try:
        assert drive(d, 20.0, until=lambda x: accepted(x) >= 2)
        code, page, kind = http(base + "/")
        assert code == 200 and kind.startswith("text/html") and b'id="estop"' in page
        code, body, _ = http(base + "/status")
        status = json.loads(body)
        assert code == 200 and status["bundle_id"] == d.policy.manifest.bundle_id and status["cameras"] == [0]
        code, body, _ = http(base + "/series")
        series = json.loads(body)
        assert code == 200 and len(series["time"]) == len(series["command"]) > 10
        assert sum(series["chunk_latency"]["counts"]) == len(d.latencies)
        code, png, kind = http(base + "/camera/0.png")
        img = Image.open(__import__("io").BytesIO(png))
        assert code == 200 and kind == "image/png" and img.size == (160, 107)
        assert http(base + "/camera/2.png")[0] == 404
        code, body, _ = http(base + "/control", {"command": "hold"})  # beyond loopback: the token is required
        assert code == 401 and d.status()["operator"] == "running"
        code, body, _ = http(base + "/control", {"command": "hold"}, token="operator-token-0123456789")
        assert code == 200 and json.loads(body)["state"]["operator"] == "held"
        code, body, _ = http(base + "/control", {"command": "hold"}, token="operator-token-0123456789")
        assert code == 409 and "nothing is running" in json.loads(body)["error"]
        code, body, _ = http(base + "/control", {"command": "estop"}, token="operator-token-0123456789")
        assert code == 200
        end = time.monotonic() + 1.0
        while emu.call("snapshot")["mode"] != "ESTOPPED":
            assert time.monotonic() < end, "the e-stop over HTTP did not reach the controller"
        assert http(base + "/control", {"nope": 1}, token="operator-token-0123456789")[0] == 400
    finally:
        d.close()
