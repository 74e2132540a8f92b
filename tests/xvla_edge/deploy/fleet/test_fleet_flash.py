"""Fleet flash over a real sshd (conftest): two robots, a canary, content-addressed and resumable transfer,
refusals before anything is sent, and robots that fail keeping their active bundle."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import shlex
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from runtime.manifest import BundleError, Manifest
from xvla_edge.cli import main
from xvla_edge.deploy.fleet.rollout import Daemon, FlashPlan, rollout
from xvla_edge.deploy.fleet.ssh import Agent, Robot

from tests.support.bundle_variant import variant


def active(robot: Robot) -> str | None:
    current = Path(robot.path) / "current"
    return Manifest.load(current).bundle_id if current.is_symlink() else None


def cli_ssh(ssh_options) -> list[str]:
    return ["--known-hosts", str(ssh_options.known_hosts), "--identity", str(ssh_options.identity),
            "--remote-xvla-edge", shlex.join(ssh_options.xvla_edge)]


def test_two_robots_with_a_canary_then_only_what_changed_travels(tiny_bundle, robots, ssh_options, tmp_path, capsys):
    first = Manifest.load(tiny_bundle).bundle_id
    total = sum(n for _, n in FlashPlan.of(tiny_bundle).files.values())
    assert main(["flash", str(tiny_bundle), *[a for r in robots for a in ("--robot", str(r))], "--canary", "1",
                 "--parallel", "2", "--json", str(tmp_path / "flash.json"), *cli_ssh(ssh_options)]) == 0
    results = json.loads((tmp_path / "flash.json").read_text())
    assert [(r["result"], r["old"], r["new"], r["sent_bytes"]) for r in results] == [("ok", None, first, total)] * 2
    assert all(r["engines"] is False and r["smoke_s"] > 0 for r in results)  # no TensorRT here; the smoke test ran
    table = capsys.readouterr().out
    assert table.splitlines()[-3].split()[:2] == ["robot", "result"] and f"{robots[1]}  ok" in table
    for robot in robots:
        assert active(robot) == first
        assert not (Path(robot.path) / ".objects").exists() and not (Path(robot.path) / ".incoming").exists()

    second = variant(tiny_bundle, tmp_path / "second", steps=4)
    [r] = rollout(second, robots[:1], ssh_options, say=lambda line: None)
    assert (r.result, r.old, r.new) == ("ok", first, Manifest.load(second).bundle_id)
    assert r.sent_bytes == (second / "manifest.json").stat().st_size  # every other file was already there

    assert main(["fleet", "status", "--robot", str(robots[0]), "--robot", str(robots[1]),
                 "--json", str(tmp_path / "status.json"), *cli_ssh(ssh_options)]) == 0
    status = json.loads((tmp_path / "status.json").read_text())
    assert status[str(robots[0])]["current"]["bundle_id"] == r.new
    assert status[str(robots[0])]["previous"]["bundle_id"] == first
    assert status[str(robots[1])]["current"]["bundle_id"] == first and status[str(robots[1])]["last"]["action"] == "flash"


def test_a_transfer_killed_midway_resumes_where_it_stopped(tiny_bundle, robots, ssh_options):
    plan = FlashPlan.of(tiny_bundle)
    name = max(plan.files, key=lambda n: plan.files[n][1])
    digest, size = plan.files[name]
    data = (tiny_bundle / name).read_bytes()
    agent = Agent(robots[0], ssh_options)
    agent.call("status", "status")  # creates nothing but proves the connection
    proc = subprocess.Popen(agent.argv("put", digest, str(size), "0"), stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.stdin.write(data[: size // 2])
    proc.stdin.flush()
    partial = Path(robots[0].path) / ".objects" / f"{digest}.partial"
    deadline = time.monotonic() + 20
    while not (partial.is_file() and partial.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()  # the connection drops mid-file
    proc.wait()
    time.sleep(1.0)  # the agent on the robot sees the end of its input and exits
    kept = partial.stat().st_size
    assert 0 < kept < size
    [r] = rollout(tiny_bundle, robots[:1], ssh_options, say=lambda line: None)
    total = sum(n for _, n in plan.files.values())
    assert r.result == "ok" and r.sent_bytes == total - kept  # the rest of that file, and the other files
    assert active(robots[0]) == plan.manifest.bundle_id


def test_a_tampered_bundle_is_refused_before_anything_is_sent(tiny_bundle, robots, ssh_options, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle, bad)
    target = bad / "encoder.onnx.data"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="encoder.onnx.data"):
        rollout(bad, robots, ssh_options, say=lambda line: None)
    assert not any(Path(r.path).exists() for r in robots)  # no robot was even contacted
    assert main(["flash", str(bad), "--robot", str(robots[0]), *cli_ssh(ssh_options)]) == 1


def test_a_failing_robot_keeps_its_bundle_and_a_failed_canary_stops_the_rollout(tiny_bundle, robots, ssh_options,
                                                                                 tmp_path):
    first = Manifest.load(tiny_bundle).bundle_id
    assert [r.result for r in rollout(tiny_bundle, robots, ssh_options, say=lambda line: None)] == ["ok", "ok"]
    second = variant(tiny_bundle, tmp_path / "second", steps=4)
    with open(Path(robots[1].path) / ".lock", "w") as lock:  # arm2 is busy with another flash
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = rollout(second, robots, ssh_options, say=lambda line: None)
        assert [r.result for r in results] == ["ok", "failed"]
        assert results[1].step == "flash" and "another flash or rollback is running" in results[1].error
        assert str(robots[1]) in results[1].error and results[1].new == first
        assert (active(robots[0]), active(robots[1])) == (Manifest.load(second).bundle_id, first)

        third = variant(tiny_bundle, tmp_path / "third", steps=6)
        results = rollout(third, [robots[1], robots[0]], ssh_options, canary=1, say=lambda line: None)
        assert [r.result for r in results] == ["failed", "skipped"]
        assert results[1].error == "not flashed: a canary failed"
        assert (active(robots[0]), active(robots[1])) == (Manifest.load(second).bundle_id, first)

    # a smoke inference that fails (TensorRT asked for on the CPU) refuses the bundle on the robot
    [r] = rollout(variant(tiny_bundle, tmp_path / "fourth", steps=7), robots[:1], ssh_options, backend="tensorrt",
                  device="cpu", say=lambda line: None)
    assert r.result == "failed" and r.step == "flash" and "smoke inference" in r.error
    assert active(robots[0]) == Manifest.load(second).bundle_id


def test_an_unknown_host_key_is_refused_by_name(tiny_bundle, robots, ssh_options, tmp_path):
    (tmp_path / "empty_known_hosts").write_text("")
    options = dataclasses.replace(ssh_options, known_hosts=tmp_path / "empty_known_hosts")
    [r] = rollout(tiny_bundle, robots[:1], options, say=lambda line: None)
    assert r.result == "failed" and r.step == "status"
    assert "the host key of 127.0.0.1 is not in known_hosts" in r.error and "nothing sent" in r.error
    assert not Path(robots[0].path).exists()


@pytest.mark.parametrize("text, message", [
    ("host:relative/path", "expected user@host"),
    ("root@host:99999:/x", "port 99999"),
    ("root@host:/a/../b", "must not contain '..'"),
])
def test_bad_targets_are_refused_by_name(text, message):
    from xvla_edge.deploy.fleet.ssh import RemoteError

    with pytest.raises(RemoteError, match=message):
        Robot.parse(text)


@pytest.mark.parametrize("op, args, stdin, message", [
    ("have", [], b"[" * 100_000, "have: stdin is not JSON"),
    ("have", [], b'{"files": {"a": {"sha256": "../x", "bytes": 1}}}', "expected a sha256 of 64"),
    ("have", [], b'{"files": {"a": {"sha256": "' + b"0" * 64 + b'", "bytes": 1e200}}}', r"files.a.bytes = 1e\+200: expected an integer"),
    ("put", ["0" * 64, "1e9", "0"], b"", "expected SHA256 BYTES OFFSET"),
    ("put", ["0" * 64, "10", "-1"], b"", "offset = -1"),
    ("health", ["http://127.0.0.1:1/healthz", "0" * 64, "nan"], b"", "0 < seconds <= 3600"),
    ("assemble", ["../../etc"], b"", "expected a sha256"),
])
def test_the_agent_refuses_hostile_requests_by_name(tmp_path, op, args, stdin, message):
    import io

    from xvla_edge.deploy.fleet.agent import AgentError, run

    with pytest.raises(AgentError, match=message):
        run(tmp_path / "robot", op, args, io.BytesIO(stdin))
    assert not list((tmp_path / "robot").glob("**/*.partial"))


# the agent, killed right after xvla_edge.deploy.links switched the links for the operation named first: no answer
# comes back
DIE_AFTER_SWITCH = """
import os, sys
from xvla_edge.cli import main
from xvla_edge.deploy import links

op, real_switch = sys.argv.pop(1), links.switch
def switch_then_die(*args):
    real_switch(*args)
    if sys.argv[4] == op:  # [script, fleet, agent, DIR, op, ...]
        os._exit(3)
links.switch = switch_then_die
sys.exit(main(sys.argv[1:]))
"""


def test_a_flash_whose_agent_dies_after_the_switch_counts_as_switched(tiny_bundle, robots, ssh_options, robot_python,
                                                                      tmp_path):
    first = Manifest.load(tiny_bundle).bundle_id
    assert [r.result for r in rollout(tiny_bundle, robots[:1], ssh_options, say=lambda line: None)] == ["ok"]
    (tmp_path / "die.py").write_text(DIE_AFTER_SWITCH)
    dying = dataclasses.replace(ssh_options, xvla_edge=(*robot_python, str(tmp_path / "die.py"), "flash"))
    second = variant(tiny_bundle, tmp_path / "second", steps=4)
    [r] = rollout(second, robots[:1], dying, say=lambda line: None)
    new = Manifest.load(second).bundle_id
    assert (r.result, r.step, r.old, r.new) == ("ok", "done", first, new), r.error
    assert active(robots[0]) == new and any("the robot reports the new bundle active" in m for m in r.messages)


def test_a_rollback_whose_agent_dies_after_the_switch_counts_as_rolled_back(tiny_bundle, robots, ssh_options,
                                                                            robot_python, tmp_path):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    first = Manifest.load(tiny_bundle).bundle_id
    assert [r.result for r in rollout(tiny_bundle, robots[:1], ssh_options, say=lambda line: None)] == ["ok"]

    class Healthz(BaseHTTPRequestHandler):  # a daemon that keeps running the first bundle
        def do_GET(self) -> None:
            body = json.dumps({"status": "ok", "bundle_id": first}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Healthz)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (tmp_path / "die.py").write_text(DIE_AFTER_SWITCH)
        dying = dataclasses.replace(ssh_options, xvla_edge=(*robot_python, str(tmp_path / "die.py"), "rollback"))
        daemon = Daemon(health_url=f"http://127.0.0.1:{server.server_port}/healthz", timeout_s=2.0)
        [r] = rollout(variant(tiny_bundle, tmp_path / "second", steps=4), robots[:1], dying, daemon=daemon,
                      say=lambda line: None)
    finally:
        server.shutdown()
    assert (r.result, r.step, r.new) == ("failed", "daemon health (new bundle)", first), r.error
    assert "rolled back to the previous bundle" in r.error and "rollback failed" not in r.error
    assert active(robots[0]) == first
