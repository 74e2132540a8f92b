"""Dynamixel Bus: exact bytes on the wire against a scripted pty peer, plus retries and error reporting."""

from __future__ import annotations

import contextlib
import os
import select
import threading
import tty
from typing import Iterator

import pytest

from drivers.dynamixel import tables as t
from drivers.dynamixel.bus import Bus, DynamixelLinkError, ServoError


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# e-Manual Protocol 2.0 examples (CRCs checked in test_dynamixel_protocol.py).
PING_1 = h("FF FF FD 00 01 03 00 01 19 4E")
STATUS_PING_1 = h("FF FF FD 00 01 07 00 55 00 06 04 26 65 5D")  # model 1030, firmware 38
READ_PRESENT_POSITION_1 = h("FF FF FD 00 01 07 00 02 84 00 04 00 1D 15")
STATUS_READ_166_ID1 = h("FF FF FD 00 01 08 00 55 00 A6 00 00 00 8C C0")
STATUS_READ_2079_ID2 = h("FF FF FD 00 02 08 00 55 00 1F 08 00 00 BA BE")
WRITE_GOAL_512_1 = h("FF FF FD 00 01 09 00 03 74 00 00 02 00 00 CA 89")
STATUS_EMPTY_1 = h("FF FF FD 00 01 04 00 55 00 A1 0C")
SYNC_READ_PRESENT_POSITION_1_2 = h("FF FF FD 00 FE 09 00 82 84 00 04 00 01 02 CE FA")
SYNC_WRITE_GOAL_150_170 = h("FF FF FD 00 FE 11 00 83 74 00 04 00 01 96 00 00 00 02 AA 00 00 00 82 87")
REBOOT_1 = h("FF FF FD 00 01 03 00 08 2F 4E")
STATUS_ALERT_1 = h("FF FF FD 00 01 04 00 55 84 B9 0F")  # hardware alert + DATA_RANGE_ERROR


class ScriptedPeer:
    """A pty whose far end expects exact request bytes and answers with canned bytes."""

    def __init__(self, script: list[tuple[bytes, bytes]]) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self.script = script
        self.received: list[bytes] = []
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _read_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            ready, _, _ = select.select([self.master], [], [], 2.0)
            if not ready:
                break
            data += os.read(self.master, n - len(data))
        return data

    def _run(self) -> None:
        for expected, reply in self.script:
            got = self._read_exact(len(expected))
            self.received.append(got)
            if got != expected:
                self.errors.append(f"expected {expected.hex(' ')}, got {got.hex(' ')}")
                return
            if reply:
                os.write(self.master, reply)

    def close(self) -> None:
        self._thread.join(3.0)
        os.close(self.master)
        os.close(self.slave)


@contextlib.contextmanager
def run_script(script: list[tuple[bytes, bytes]], timeout_s: float = 0.5) -> Iterator[Bus]:
    """A bus talking to a scripted peer; the generous default timeout keeps a loaded CI machine from tripping it."""
    peer = ScriptedPeer(script)
    bus = Bus(peer.port, timeout_s=timeout_s)
    bus.open()
    try:
        yield bus
    finally:
        bus.close()
        peer.close()
        assert peer.errors == []


@pytest.fixture
def script(request: pytest.FixtureRequest) -> Iterator[Bus]:
    with run_script(request.param) as bus:
        yield bus


@pytest.mark.parametrize("script", [[(PING_1, STATUS_PING_1)]], indirect=True)
def test_ping(script: Bus) -> None:
    assert script.ping(1) == (1030, 38)


@pytest.mark.parametrize("script", [[(READ_PRESENT_POSITION_1, STATUS_READ_166_ID1)]], indirect=True)
def test_read(script: Bus) -> None:
    assert script.read(1, t.PRESENT_POSITION) == 166


@pytest.mark.parametrize("script", [[(WRITE_GOAL_512_1, STATUS_EMPTY_1)]], indirect=True)
def test_write(script: Bus) -> None:
    script.write(1, t.GOAL_POSITION, 512)


@pytest.mark.parametrize(
    "script", [[(SYNC_READ_PRESENT_POSITION_1_2, STATUS_READ_166_ID1 + STATUS_READ_2079_ID2)]], indirect=True
)
def test_sync_read(script: Bus) -> None:
    assert script.sync_read(t.PRESENT_POSITION, [1, 2]) == {1: 166, 2: 2079}


@pytest.mark.parametrize("script", [[(SYNC_WRITE_GOAL_150_170, b""), (PING_1, STATUS_PING_1)]], indirect=True)
def test_sync_write_expects_no_reply(script: Bus) -> None:
    script.sync_write(t.GOAL_POSITION, {1: 150, 2: 170})
    assert script.ping(1) == (1030, 38)


@pytest.mark.parametrize("script", [[(REBOOT_1, STATUS_EMPTY_1)]], indirect=True)
def test_reboot(script: Bus) -> None:
    script.reboot(1)


@pytest.mark.parametrize(
    "script",
    [[(READ_PRESENT_POSITION_1, b"\x00\xff" + STATUS_READ_166_ID1[:-1] + b"\x00"),  # garbage, then a bad CRC
      (READ_PRESENT_POSITION_1, READ_PRESENT_POSITION_1 + b"\xff\xff\xfd" + STATUS_READ_166_ID1)]],  # echo + noise
    indirect=True,
)
def test_retry_after_corrupt_reply_and_ignore_echo(script: Bus) -> None:
    assert script.read(1, t.PRESENT_POSITION) == 166


def test_no_reply_names_motor_register_and_tries() -> None:
    script = [(READ_PRESENT_POSITION_1, STATUS_READ_2079_ID2)] + [(READ_PRESENT_POSITION_1, b"")] * 2
    expected = (r"read Present_Position \(132, 4 bytes\) from motor 1 .* after 3 tries: "
                r"no status packet from motor\(s\) \[1\] within 50 ms")
    with run_script(script, timeout_s=0.05) as bus:
        with pytest.raises(DynamixelLinkError, match=expected) as info:
            bus.read(1, t.PRESENT_POSITION)
    assert isinstance(info.value, ConnectionError)


@pytest.mark.parametrize("script", [[(WRITE_GOAL_512_1, STATUS_ALERT_1)]], indirect=True)
def test_error_status_is_a_servo_error(script: Bus) -> None:
    with pytest.raises(ServoError, match=r"write Goal_Position \(116\) = 512 to motor 1: motor 1 answered "
                                         r"DATA_RANGE_ERROR \+ hardware alert") as info:
        script.write(1, t.GOAL_POSITION, 512)
    assert info.value.status.alert and script.alerts == {1}


def test_values_are_checked_against_the_register() -> None:
    bus = Bus("loop://")
    with pytest.raises(ValueError, match="Goal_Position: 4294967296 does not fit in 4 signed byte"):
        bus.sync_write(t.GOAL_POSITION, {1: 2**32})


def test_closed_bus_and_bad_port() -> None:
    with pytest.raises(DynamixelLinkError, match="is not open"):
        Bus("loop://").ping(1)
    with pytest.raises(DynamixelLinkError, match="cannot open Dynamixel bus '/dev/no-such-port'"):
        Bus("/dev/no-such-port").open()


def test_loop_url_sees_only_its_echo() -> None:
    with Bus("loop://", timeout_s=0.01, retries=0) as bus:
        with pytest.raises(DynamixelLinkError, match="no status packet"):
            bus.ping(1)
