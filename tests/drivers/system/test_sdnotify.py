"""The notify protocol against a real AF_UNIX datagram socket: exact bytes, and silence outside systemd."""

from __future__ import annotations

import socket

from drivers.system import sdnotify


def test_messages_arrive_byte_exact(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(2.0)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sdnotify.ready() and sdnotify.watchdog_ping() and sdnotify.status("tracking") and sdnotify.stopping()
        got = [server.recv(100) for _ in range(4)]
    assert got == [b"READY=1", b"WATCHDOG=1", b"STATUS=tracking", b"STOPPING=1"]


def test_outside_systemd_nothing_is_sent_and_nothing_raises(tmp_path, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    assert sdnotify.watchdog_ping() is False


def test_watchdog_interval(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    assert sdnotify.watchdog_interval() == 2.0
    for bad in ("", "0", "x"):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert sdnotify.watchdog_interval() is None
