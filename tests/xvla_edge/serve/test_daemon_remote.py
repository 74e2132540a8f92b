"""The daemon on a served policy (``[policy] url``): it drives the emulated arm from a server in another
process; killing the server holds the arm — for as long as the outage lasts, never an exit — and the
daemon picks the server up again when it returns."""

from __future__ import annotations

import re
import signal

import numpy as np
import pytest

from drivers.xvla_serial import emulator
from xvla.realtime_chunking import Prefix
from xvla_edge.daemon.config import load_config
from xvla_edge.daemon.robot_toml import robot_toml
from xvla_edge.daemon.service import Daemon
from xvla_edge.daemon.supervisor import MAX_INFERENCE_FAILURES, RECONNECT_S

from tests.support.daemon_driving import accepted, drive

pytest.importorskip("websockets")


def test_a_served_policy_drives_the_arm_and_an_outage_holds_it_until_the_server_returns(
        tiny_bundle, tmp_path, spawn_server, free_port):
    port = free_port
    server = spawn_server(tiny_bundle, port)
    emu = emulator.start(emulator.ControllerConfig(n_arms=1), seed=3)
    text = robot_toml(tiny_bundle, emu.port, tmp_path / "recordings", cameras={"width": 96, "height": 64},
                      control={"rate_hz": 100, "realtime_priority": 0}, arm={"timeout_ms": 300},
                      policy={"url": f"ws://127.0.0.1:{port}", "timeout_s": 1.0})
    text = re.sub(r"\n\[bundle\]\n(?:[^\[\n].*\n)*", "\n", text)  # the served policy instead of the bundle
    (tmp_path / "robot.toml").write_text(text)
    daemon = Daemon(load_config(tmp_path / "robot.toml"))
    try:
        daemon.start()
        assert daemon.policy.bundle_id == daemon.policy.manifest.bundle_id
        assert drive(daemon, 30.0, until=lambda d: accepted(d) >= 3)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        assert drive(daemon, 10.0, until=lambda d: d._outage_since is not None)
        before = accepted(daemon)
        # longer than MAX_INFERENCE_FAILURES retries: an outage is not a fault that ends the daemon
        drive(daemon, (MAX_INFERENCE_FAILURES + 2) * RECONNECT_S)
        assert accepted(daemon) == before and daemon.stats.mode in ("idle", "holding")
        trace = daemon.loop.trace()  # what the loop sent the arm over the last second: one pose, held
        recent = trace["command"][trace["time"] > trace["time"][-1] - 1.0]
        sent = recent[~np.isnan(recent[:, 0])]
        assert len(sent) > 10 and np.ptp(sent[:, :3], axis=0).max() < 1e-9
        status, reasons = daemon.health()
        assert status == "degraded" and any("policy server unavailable" in r for r in reasons), reasons
        assert daemon.summary().inference_errors >= MAX_INFERENCE_FAILURES + 1
        spawn_server(tiny_bundle, port)
        assert drive(daemon, 30.0, until=lambda d: accepted(d) >= before + 2)
        assert daemon._outage_since is None and daemon.stats.mode == "tracking"
    finally:
        daemon.close()
        emu.stop()


def test_real_time_chunking_over_a_policy_server(tiny_bundle, tmp_path, spawn_server, free_port):
    """``[inference] chunking = "rtc"`` with ``[policy]``: every chunk after the first is asked for with the prefix of
    what the loop executes, over the websocket, and arrives (the server checks it against its bundle)."""
    server = spawn_server(tiny_bundle, free_port)
    emu = emulator.start(emulator.ControllerConfig(n_arms=1), seed=4)
    text = robot_toml(tiny_bundle, emu.port, tmp_path / "recordings", cameras={"width": 96, "height": 64},
                      control={"rate_hz": 100, "realtime_priority": 0}, arm={"timeout_ms": 300},
                      inference={"chunking": "rtc"}, splice={"max_latency_s": 5.0},
                      policy={"url": f"ws://127.0.0.1:{free_port}", "timeout_s": 5.0})
    (tmp_path / "robot.toml").write_text(re.sub(r"\n\[bundle\]\n(?:[^\[\n].*\n)*", "\n", text))
    daemon = Daemon(load_config(tmp_path / "robot.toml"))
    try:
        daemon.start()
        asked = []
        act_async = daemon.policy.act_async
        daemon.policy.act_async = lambda obs, **kw: (asked.append(kw.get("prefix")), act_async(obs, **kw))[1]
        assert drive(daemon, 60.0, until=lambda d: accepted(d) >= 4)
        assert asked[0] is None and len(asked) >= 4 and all(isinstance(p, Prefix) for p in asked[1:]), asked
        assert daemon.summary().inference_errors == 0 and daemon.chunking.last.delay >= 1
        assert daemon.status()["chunking"]["text"].startswith("rtc, delay")
    finally:
        daemon.close()
        emu.stop()
        server.kill()
