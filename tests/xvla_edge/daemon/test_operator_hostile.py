"""The operator path under attack and under load (issue 33): an e-stop that gets through whatever else is happening,
instructions no model can take refused at the edge, cross-site requests refused, floods of idle and vanishing
clients bounded, a recorder folder that cannot be written refused by name. All on the xvla-serial emulator."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from xvla.errors import InputError
from xvla_edge.cli import main
from xvla_edge.daemon import control, health
from xvla_edge.daemon import supervisor
from xvla_edge.daemon.config import ConfigError, load_config
from xvla_edge.daemon.control import send
from xvla_edge.daemon.robot_toml import robot_toml
from xvla_edge.daemon.service import Daemon

from tests.support.daemon_driving import RATE_HZ, accepted, ctl, drive, free_port, http

HEALTH_PORT = free_port()


def controller_mode(emu) -> str:
    return emu.call("snapshot")["mode"]


def wait_for(predicate, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.002)
    return True


def block_the_recorder(daemon: Daemon) -> tuple[threading.Event, threading.Event]:
    """Make the recorder's dump wait for ``release`` (``entered`` is set once a dump waits)."""
    entered, release = threading.Event(), threading.Event()
    real = daemon.recorder.dump

    def slow_dump(*args, **kwargs):
        entered.set()
        release.wait(8.0)
        return real(*args, **kwargs)

    daemon.recorder.dump = slow_dump
    return entered, release


# -- 1. the e-stop gets through ---------------------------------------------------------------------------


@pytest.mark.robot(health={"port": HEALTH_PORT})
@pytest.mark.parametrize("path", ["socket", "http"])
def test_the_estop_does_not_wait_behind_a_slow_command(daemon, emu, path):
    """A ``record`` stuck writing to a slow disk holds the command lock; an e-stop sent meanwhile reaches the
    controller and is acknowledged before the record finishes."""
    assert drive(daemon, 20.0, until=lambda d: d.stats is not None and d.stats.mode == "tracking")
    entered, release = block_the_recorder(daemon)
    url = f"http://127.0.0.1:{HEALTH_PORT}/control"
    record = (lambda: ctl(daemon, "record")) if path == "socket" else (lambda: http(url, {"command": "record"}))
    recording = threading.Thread(target=record)
    recording.start()
    try:
        assert entered.wait(5.0)
        if path == "socket":
            reply = send(daemon.sock, {"command": "estop"}, timeout=3.0)
            assert reply["ok"] and reply["state"]["operator"] == "estopped"
        else:
            code, body, _ = http(url, {"command": "estop"})
            assert code == 200 and json.loads(body)["state"]["operator"] == "estopped"
        assert wait_for(lambda: controller_mode(emu) == "ESTOPPED", 3.0)
        assert not release.is_set() and recording.is_alive()  # the record still waits for its disk
    finally:
        release.set()
        recording.join(10.0)


def test_estops_get_through_a_flood_of_clients(daemon, emu):
    """16 clients poll ``status`` over the socket as fast as they can and 200 more hold idle connections: every
    e-stop is accepted (none refused for a full backlog) and reaches the controller; each is cleared again."""
    assert drive(daemon, 20.0, until=lambda d: d.stats is not None and d.stats.mode == "tracking")
    stop = threading.Event()
    failures: list[str] = []

    def flood() -> None:
        while not stop.is_set():
            try:
                send(daemon.sock, {"command": "status"}, timeout=5.0)
            except OSError as exc:
                failures.append(repr(exc))

    idle = []
    for _ in range(200):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(daemon.sock))
        idle.append(s)
    threads = [threading.Thread(target=flood) for _ in range(16)]
    for t in threads:
        t.start()
    seen = []
    try:
        for _ in range(5):
            sent = time.monotonic()
            assert ctl(daemon, "estop")["ok"]
            assert wait_for(lambda: controller_mode(emu) == "ESTOPPED", 1.0), "the e-stop did not reach the controller"
            seen.append(time.monotonic() - sent)
            assert ctl(daemon, "clear-estop")["ok"]
            assert wait_for(lambda: controller_mode(emu) != "ESTOPPED", 2.0)
    finally:
        stop.set()
        for t in threads:
            t.join(10.0)
        for s in idle:
            s.close()
    assert failures == []
    assert daemon.control_server.connections <= control.MAX_CONNECTIONS
    print(f"\ne-stop to controller under the flood: {', '.join(f'{s * 1e3:.1f}' for s in seen)} ms")


def test_the_estop_socket_stops_the_arm_while_the_daemon_cannot_run_a_line_of_python(daemon, emu):
    """The control loop listens on the e-stop socket itself: with the daemon's interpreter held for seconds by one C
    call (nothing else of the daemon runs meanwhile), a client that connects gets the arm e-stopped at once; the
    daemon's state follows when it runs again, and clear-estop works as ever."""
    assert drive(daemon, 20.0, until=lambda d: d.stats is not None and d.stats.mode == "tracking")
    path = control.estop_socket_path(daemon.sock)
    assert path.is_socket() and oct(path.stat().st_mode & 0o777) == "0o660"
    client = subprocess.Popen([sys.executable, "-c", (
        "import socket, sys, time; time.sleep(0.5); t = time.monotonic(); s = socket.socket(socket.AF_UNIX); "
        f"s.connect({str(path)!r}); print(t, s.recv(100).decode().strip())")], stdout=subprocess.PIPE, text=True)
    time.sleep(0.2)
    hog_start = time.monotonic()
    sum(range(150_000_000))  # one C call: this process (the daemon's) runs no other Python until it returns
    hog_end = time.monotonic()
    sent, reply = client.communicate(timeout=30)[0].split(" ", 1)
    arrived = [t for t in emu.call("snapshot")["estop_times"] if t > float(sent)]
    assert json.loads(reply) == {"ok": True, "estopped": True}
    assert hog_end - hog_start > 1.0 and arrived and arrived[0] < hog_end, (hog_start, float(sent), arrived, hog_end)
    assert drive(daemon, 5.0, until=lambda d: d.status()["operator"] == "estopped")
    assert ctl(daemon, "clear-estop")["ok"] and ctl(daemon, "resume")["ok"]
    assert wait_for(lambda: controller_mode(emu) != "ESTOPPED", 2.0)


def test_ctl_estop_takes_the_estop_socket(daemon, emu, capsys):
    assert drive(daemon, 20.0, until=lambda d: d.stats is not None and d.stats.mode == "tracking")
    assert main(["ctl", "estop", "--socket", str(daemon.sock)]) == 0
    assert "ok: estop, latched by the control loop" in capsys.readouterr().out
    assert wait_for(lambda: controller_mode(emu) == "ESTOPPED", 1.0)
    assert drive(daemon, 5.0, until=lambda d: d.status()["operator"] == "estopped")


def test_clear_estop_right_after_ctl_estop_finds_the_latch_in_the_loop(daemon, emu, capsys):
    """`ctl estop` latches the control loop before the daemon has seen it; a clear-estop that comes before the
    supervisor's next pass (none runs here) still finds the latch and clears it (it was refused as "not latched")."""
    assert drive(daemon, 20.0, until=lambda d: d.stats is not None and d.stats.mode == "tracking")
    assert main(["ctl", "estop", "--socket", str(daemon.sock)]) == 0
    assert wait_for(lambda: controller_mode(emu) == "ESTOPPED", 1.0)
    assert daemon.status()["operator"] == "running"  # the supervisor has not run since
    reply = ctl(daemon, "clear-estop")
    assert reply["ok"], reply
    assert reply["state"]["operator"] == "held" and ctl(daemon, "resume")["ok"]
    assert wait_for(lambda: controller_mode(emu) != "ESTOPPED", 2.0)


def test_an_estop_latched_in_the_loop_is_adopted_while_the_link_is_lost(daemon):
    """The loop's mode is link_lost while the link is down, whatever else is latched: the daemon still takes the
    e-stop from the latch (it answered clear-estop with "not latched (operator state running)")."""
    assert drive(daemon, 20.0, until=lambda d: d.stats is not None and d.stats.mode == "tracking")
    stats = dataclasses.replace(daemon.loop.stats(), mode="link_lost", estop_latched=True)
    daemon._adopt_loop_estop(stats)
    assert daemon.status()["operator"] == "estopped"
    daemon._adopt_loop_estop(stats)  # once
    assert daemon._estops == 1


@pytest.mark.server
def test_send_retries_a_full_backlog_until_its_deadline(tmp_path):
    """A listener whose backlog is full refuses connections with EAGAIN: the client tries again and gets through
    once there is room (before this, ``xvla-edge ctl estop`` failed at once)."""
    path = tmp_path / "s.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(0)
    queued = []
    while True:  # fill the backlog
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(str(path))
        except BlockingIOError:
            s.close()
            break
        queued.append(s)

    def serve() -> None:
        time.sleep(0.3)  # the client meets a full backlog meanwhile
        for s in queued:
            s.close()
        while True:
            conn, _ = listener.accept()
            with conn:
                if conn.recv(100):
                    conn.sendall(b'{"ok": true}\n')
                    return

    listener.settimeout(10.0)
    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        assert send(path, {"command": "estop"}, timeout=5.0) == {"ok": True}
    finally:
        server.join(10.0)
        listener.close()


# -- 2. an instruction the model cannot take never reaches it ---------------------------------------------


@pytest.mark.robot(health={"port": HEALTH_PORT})
def test_an_instruction_that_is_not_text_is_refused_at_every_entry(daemon, capsys):
    assert drive(daemon, 20.0, until=lambda d: accepted(d) >= 1)
    before = daemon.instruction
    for text, rule in (("caf\udce9", "lone surrogate U+DCE9"), ("\ud800", "lone surrogate U+D800"),
                       ("a\x1b[2Jb", "control character U+001B"), ("x" * 5000, "5000 characters")):
        reply = ctl(daemon, "instruction", text=text)
        assert not reply["ok"] and rule in reply["error"], reply["error"]
        code, body, _ = http(f"http://127.0.0.1:{HEALTH_PORT}/control", {"command": "instruction", "text": text})
        assert code == 409 and rule in json.loads(body)["error"]
    assert main(["ctl", "instruction", "caf\udce9", "--socket", str(daemon.sock)]) == 2  # a Latin-1 terminal
    assert "not valid Unicode text" in capsys.readouterr().err
    assert daemon.instruction == before
    start = accepted(daemon)
    assert drive(daemon, 20.0, until=lambda d: accepted(d) >= start + 2)  # the model never saw them
    assert daemon._inference_errors == 0


def test_an_observation_the_policy_refuses_holds_without_ending_the_daemon(daemon, monkeypatch):
    """An InputError from inference is the input's fault, not the model's: the arm holds, health says why, the
    daemon retries and keeps running however often it happens (any other error still ends it after five)."""
    monkeypatch.setattr(supervisor, "RECONNECT_S", 0.05)
    assert drive(daemon, 20.0, until=lambda d: accepted(d) >= 1)

    def refuse(obs, *, steps=None):
        raise InputError("observation.proprio: contains NaN or Inf")

    daemon.policy.act = refuse
    assert drive(daemon, 30.0, until=lambda d: d._inference_errors >= 2 * supervisor.MAX_INFERENCE_FAILURES)
    status, reasons = daemon.health()
    assert status == "degraded" and any("observation refused" in r for r in reasons)
    assert daemon.stats.mode == "idle" and daemon.stats.events["hold_requested"] >= 1  # no trajectory: it holds
    trace = daemon.loop.trace()
    recent = trace["command"][trace["time"] >= trace["time"][-1] - 0.3, :3]
    assert len(recent) > 10 and (recent == recent[-1]).all()  # the same command, tick after tick


# -- 3. cross-site requests -------------------------------------------------------------------------------


@pytest.mark.robot(health={"port": HEALTH_PORT})
def test_a_web_page_cannot_act_on_a_loopback_daemon(daemon):
    """A page in the technician's browser can send a ``text/plain`` POST (no preflight) and can point its own
    DNS name at 127.0.0.1; neither acts, neither reads."""
    assert drive(daemon, 20.0, until=lambda d: accepted(d) >= 1)
    base = f"http://127.0.0.1:{HEALTH_PORT}"
    cases = [
        ({"Content-Type": "text/plain", "Origin": "http://evil.example"}, 415),
        ({"Content-Type": "text/plain"}, 415),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ({"Origin": "http://evil.example"}, 403),
        ({"Host": f"evil.example:{HEALTH_PORT}", "Origin": f"http://evil.example:{HEALTH_PORT}"}, 403),
    ]
    for headers, status in cases:
        for command in ("hold", "estop"):
            code, body, _ = http(base + "/control", {"command": command}, headers=headers)
            assert code == status, (headers, code, body)
        assert http(base + "/record", {}, headers=headers)[0] == status
    assert daemon.status()["operator"] == "running" and daemon.control_server is not None
    for page in ("/status", "/camera/0.png", "/"):
        assert http(base + page, headers={"Host": f"evil.example:{HEALTH_PORT}"})[0] == 403  # DNS rebinding
    assert http(base + "/status", headers={"Host": f"localhost:{HEALTH_PORT + 1}"})[0] == 200  # an SSH tunnel
    code, body, _ = http(base + "/control", {"command": "hold"}, headers={"Origin": base})  # the status page
    assert code == 200 and json.loads(body)["state"]["operator"] == "held"


# -- 4. vanishing and idle clients ----------------------------------------------------------------------------


@pytest.mark.robot(health={"port": HEALTH_PORT})
def test_clients_that_vanish_cost_one_log_line_and_idle_ones_no_threads(daemon, emu, caplog, capfd):
    assert drive(daemon, 20.0, until=lambda d: accepted(d) >= 1)
    caplog.set_level(logging.INFO, logger="xvla")
    for _ in range(100):  # ask, then reset the connection before the reply
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(daemon.sock))
        s.sendall(b'{"command": "status"}\n')
        s.close()
        t = socket.create_connection(("127.0.0.1", HEALTH_PORT))
        t.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        t.sendall(f"GET /status HTTP/1.1\r\nHost: 127.0.0.1:{HEALTH_PORT}\r\n\r\n".encode())
        t.close()
    time.sleep(1.0)
    gone = [r for r in caplog.records if getattr(r, "event", "") in ("control_client_gone", "http_client_gone")]
    assert 1 <= len(gone) <= 2, [r.getMessage() for r in gone]
    assert "Traceback" not in capfd.readouterr().err

    threads = threading.active_count()
    idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(300)]
    for s in idle:
        s.connect(str(daemon.sock))
    web = [socket.create_connection(("127.0.0.1", HEALTH_PORT)) for _ in range(60)]
    try:
        time.sleep(0.5)
        assert threading.active_count() == threads  # the HTTP threads were started with the server
        assert daemon.control_server.connections <= control.MAX_CONNECTIONS
        code, body, _ = http(f"http://127.0.0.1:{HEALTH_PORT}/healthz")  # every HTTP slot waits for a request
        assert code == 503 and b"too many connections" in body
        assert ctl(daemon, "estop")["ok"]  # room is made for a new client
        assert wait_for(lambda: controller_mode(emu) == "ESTOPPED", 2.0)
    finally:
        for s in idle + web:
            s.close()
    assert threading.active_count() == threads


def test_idle_control_connections_are_closed(daemon, monkeypatch):
    monkeypatch.setattr(control, "IDLE_TIMEOUT_S", 0.2)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(daemon.sock))
    s.settimeout(5.0)
    assert s.recv(10) == b""  # closed by the daemon after the idle timeout
    s.close()


# -- 5. a recorder folder that cannot be written ------------------------------------------------------------


def test_a_recorder_folder_that_is_a_file_is_refused_by_config_check(tmp_path, bundle, capsys):
    blocker = tmp_path / "recordings"
    blocker.write_text("not a folder")
    path = tmp_path / "robot.toml"
    path.write_text(robot_toml(bundle, "/dev/null", blocker))
    with pytest.raises(ConfigError, match=r"\[recorder\].directory = .*recordings.*: expected a folder this daemon can "
                                          r"write recordings into: .*recordings is not a folder"):
        load_config(path)
    assert main(["config", "check", str(path)]) == 1
    assert "is not a folder" in capsys.readouterr().err


@pytest.mark.robot(health={"port": HEALTH_PORT})
def test_record_into_a_folder_that_became_a_file_is_refused_by_name(daemon, tmp_path):
    assert drive(daemon, 20.0, until=lambda d: accepted(d) >= 1)
    folder = daemon.recorder.directory
    shutil.rmtree(folder, ignore_errors=True)
    folder.write_text("someone put a file here")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # one connection: it survives the refusal
        s.connect(str(daemon.sock))
        f = s.makefile("rwb")
        for command in ("record", "status"):
            f.write(json.dumps({"command": command}).encode() + b"\n")
            f.flush()
            reply = json.loads(f.readline())
            if command == "record":
                assert not reply["ok"] and f"cannot write a recording into {folder}" in reply["error"]
            else:
                assert reply["ok"]
    base = f"http://127.0.0.1:{HEALTH_PORT}"
    code, body, _ = http(base + "/record", {})
    assert code == 409 and "[recorder].directory" in json.loads(body)["error"]
    code, body, _ = http(base + "/control", {"command": "record"})
    assert code == 409 and f"record: cannot write a recording into {folder}" in json.loads(body)["error"]
