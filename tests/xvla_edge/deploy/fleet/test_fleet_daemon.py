"""A fleet flash to a robot whose daemon is running (tiny bundle, xvla-serial emulator on a pty): the daemon is
restarted by a stand-in for systemd, holds the arm meanwhile, and reports the new bundle in /healthz and
/metrics; a daemon that cannot come up on the new bundle is rolled back to the previous one."""

from __future__ import annotations

import json
import shlex
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from runtime.manifest import Manifest
from xvla_edge.deploy.fleet.rollout import Daemon, rollout

from tests.support.bundle_variant import variant

# what systemd's `restart` does, in a script run on the robot over ssh: SIGTERM, wait for the exit, start again
RESTART = '''
import os, signal, subprocess, sys, time
pidfile, config, log = sys.argv[1:4]
if os.path.exists(pidfile):
    pid = int(open(pidfile).read())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    for _ in range(300):  # until it is gone (or a zombie: exited)
        try:
            if open(f"/proc/{pid}/stat").read().split()[2] == "Z":
                break
        except OSError:
            break
        time.sleep(0.1)
proc = subprocess.Popen([sys.executable, "-m", "xvla_edge", "run", "--config", config], start_new_session=True,
                        stdin=subprocess.DEVNULL, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
open(pidfile, "w").write(str(proc.pid))
'''


def healthz(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())
    except OSError:
        return {}


@pytest.fixture
def robot_daemon(tiny_bundle, robots, tmp_path, robot_python):
    """(robot, health port, emulator, restart command) with the daemon running on the robot's current bundle."""
    from drivers.xvla_serial import emulator
    from xvla_edge.daemon.robot_toml import robot_toml
    from xvla_edge.deploy.install import flash

    emu = emulator.start(emulator.ControllerConfig(n_arms=1), seed=3)
    robot = robots[0]
    flash(tiny_bundle, robot.path, say=lambda line: None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "robot.toml"
    config.write_text(robot_toml(Path(robot.path) / "current", emu.port, tmp_path / "recordings",
                                 cameras={"width": 96, "height": 64, "max_age_s": 0.3}, arm={"timeout_ms": 300},
                                 control={"rate_hz": 100, "realtime_priority": 0}, health={"port": port},
                                 recorder={"seconds": 5}))
    (tmp_path / "restart.py").write_text(RESTART)
    pidfile = tmp_path / "daemon.pid"
    restart = shlex.join([*robot_python, str(tmp_path / "restart.py"), str(pidfile), str(config),
                          str(tmp_path / "daemon.log")])
    import subprocess

    subprocess.run(restart, shell=True, check=True)
    try:
        yield robot, port, emu, restart
    finally:
        try:
            import os

            os.kill(int(pidfile.read_text()), signal.SIGTERM)
        except (OSError, ValueError):
            pass
        time.sleep(1.0)
        emu.stop()


def wait_for(port: int, bundle_id: str, seconds: float = 90.0) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answer = healthz(port)
        if answer.get("bundle_id") == bundle_id:
            return answer
        time.sleep(0.3)
    raise AssertionError(f"/healthz never named {bundle_id[:12]}: {healthz(port)}")


def test_the_daemon_restarts_on_the_new_bundle_and_the_arm_stays_safe(tiny_bundle, robot_daemon, ssh_options, tmp_path):
    robot, port, emu, restart = robot_daemon
    first = Manifest.load(tiny_bundle).bundle_id
    wait_for(port, first)
    time.sleep(1.0)  # the daemon drives the arm
    before = emu.call("snapshot")
    assert before["accepted"] > 0
    second = variant(tiny_bundle, tmp_path / "second", steps=4)
    modes, done = set(), threading.Event()

    def watch() -> None:  # the controller's mode through the switch
        while not done.is_set():
            modes.add(emu.call("snapshot")["mode"])
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        [r] = rollout(second, [robot], ssh_options, daemon=Daemon(restart, f"http://127.0.0.1:{port}/healthz", 90.0),
                      say=lambda line: None)
    finally:
        done.set()
        watcher.join()
    new = Manifest.load(second).bundle_id
    assert (r.result, r.old, r.new, r.step) == ("ok", first, new, "done"), r.error
    assert healthz(port)["bundle_id"] == new
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as m:
        assert f'bundle_id="{new}"' in m.read().decode()
    from xvla_edge.cli import main

    assert main(["fleet", "status", "--robot", str(robot), "--health-url", f"http://127.0.0.1:{port}/healthz",
                 "--json", str(tmp_path / "status.json"), "--known-hosts", str(ssh_options.known_hosts),
                 "--identity", str(ssh_options.identity), "--remote-xvla-edge", shlex.join(ssh_options.xvla_edge)]) == 0
    status = json.loads((tmp_path / "status.json").read_text())[str(robot)]
    assert status["current"]["bundle_id"] == status["health"]["bundle_id"] == new
    time.sleep(1.0)
    after = emu.call("snapshot")
    assert after["accepted"] > before["accepted"]  # the new daemon drives the arm
    assert (after["faults"], after["nacked"]) == (0, 0)  # nothing the controller refused, before, during or after
    assert "HOLDING" in modes and modes <= {"IDLE", "TRACKING", "HOLDING"}, modes  # held while no daemon ran


def test_a_daemon_that_cannot_start_on_the_new_bundle_is_rolled_back(tiny_bundle, robot_daemon, ssh_options, tmp_path):
    robot, port, emu, restart = robot_daemon
    first = Manifest.load(tiny_bundle).bundle_id
    wait_for(port, first)
    two_arms = variant(tiny_bundle, tmp_path / "two-arms", steps=10)
    raw = json.loads((two_arms / "manifest.json").read_text())
    raw["action"]["arms"] = 2  # the emulated controller has one arm: the daemon refuses to start on it
    (two_arms / "manifest.json").write_text(json.dumps(raw))
    [r] = rollout(two_arms, [robot], ssh_options, daemon=Daemon(restart, f"http://127.0.0.1:{port}/healthz", 20.0),
                  say=lambda line: None)
    assert r.result == "failed" and r.step == "daemon health (new bundle)", (r.step, r.error)
    assert "rolled back to the previous bundle" in r.error and r.new == first
    assert Manifest.load(Path(robot.path) / "current").bundle_id == first
    assert wait_for(port, first, 30.0)["bundle_id"] == first  # the daemon runs the previous bundle again
    assert emu.call("snapshot")["faults"] == 0
