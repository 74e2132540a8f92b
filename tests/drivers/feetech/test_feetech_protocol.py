"""Feetech packets against the vendor's own SDK (``feetech-servo-sdk``, module ``scservo_sdk``) as the oracle.

The SDK runs unchanged on a fake port handler: what it writes for ping, read, write, sync read and sync write is
compared byte for byte with this project's builders and with what :class:`FeetechBus` writes for the same
instruction, and the SDK parses the emulator's status packets into the values our bus reads. Without the SDK
(the robot venv, where the Makefile does not install it) these tests skip, naming it.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.emulation.virtual_port import VirtualClock, VirtualPort
from drivers.feetech import protocol as p
from drivers.feetech import tables as t
from drivers.feetech.bus import FeetechBus
from drivers.feetech.emulator import ChainConfig, ServoChain

scs = pytest.importorskip("scservo_sdk", reason="feetech-servo-sdk (the oracle of these tests) is not installed: "
                          "`pip install feetech-servo-sdk==1.0.0` (the Makefile installs it in both venvs)")

IDS = (1, 2, 3, 4, 5, 6)


class FakePort(scs.PortHandler):
    """The SDK's port handler with the serial port replaced: what the SDK writes is recorded and fed to an
    emulated servo chain, whose status packets come back as the bytes the SDK reads."""

    def __init__(self, chain: ServoChain) -> None:
        super().__init__("fake")
        self.chain, self.sent, self.rx = chain, [], bytearray()
        self.is_open, self.baudrate, self.tx_time_per_byte = True, 1_000_000, 0.01

    def clearPort(self) -> None:  # noqa: N802 - the SDK's name
        pass

    def writePort(self, packet) -> int:  # noqa: N802
        data = bytes(packet)
        self.sent.append(data)
        self.chain.feed(data, time.monotonic())
        self.rx += b"".join(wire for _, wire in self.chain.outbox)
        self.chain.outbox.clear()
        return len(data)

    def readPort(self, length: int) -> bytes:  # noqa: N802
        out = bytes(self.rx[:length])
        del self.rx[:length]
        return out

    def getBytesAvailable(self) -> int:  # noqa: N802
        return len(self.rx)


class Recorder(VirtualPort):
    """A virtual port that also records what the host writes."""

    def __init__(self, chain: ServoChain) -> None:
        super().__init__(chain, VirtualClock(), timeout_s=0.002)
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.sent.append(bytes(data))
        return super().write(data)


@pytest.fixture
def sdk():
    """(port handler, packet handler) of the SDK on a fresh emulated chain; little-endian, as for STS servos."""
    chain = ServoChain(ChainConfig(ids=IDS), seed=0)
    return FakePort(chain), scs.PacketHandler(0)


@pytest.fixture
def bus(monkeypatch):
    """Our bus on a recording virtual port in front of its own fresh emulated chain."""
    port = Recorder(ServoChain(ChainConfig(ids=IDS), seed=0))
    monkeypatch.setattr("serial.serial_for_url", lambda *a, **k: port)
    b = FeetechBus("virtual", timeout_s=0.01, retries=0)
    b.open()
    b.port_recorder = port
    return b


def test_ping_is_the_sdks_ping_then_its_model_number_read(sdk, bus):
    port, ph = sdk
    model, result, error = ph.ping(port, 3)
    assert (model, result, error) == (777, scs.COMM_SUCCESS, 0)
    assert port.sent == [p.ping(3).encode(), p.read(3, t.MODEL_NUMBER.address, 2).encode()]
    assert port.sent[0] == bytes.fromhex("FF FF 03 02 01 F9")  # ~(3 + 2 + 1) & 0xFF = 0xF9
    assert bus.ping(3) == 777 and bus.port_recorder.sent == port.sent


@pytest.mark.parametrize("reg", [t.PRESENT_POSITION, t.MODEL_NUMBER, t.TORQUE_ENABLE, t.HOMING_OFFSET, t.LOCK])
def test_read_is_the_sdks_read(sdk, bus, reg):
    port, ph = sdk
    value, result, _ = {1: ph.read1ByteTxRx, 2: ph.read2ByteTxRx}[reg.size](port, 2, reg.address)
    assert result == scs.COMM_SUCCESS and port.sent == [p.read(2, reg.address, reg.size).encode()]
    ours = bus.read(2, reg)
    assert bus.port_recorder.sent == port.sent
    # the SDK gives the raw word; a sign-magnitude register is decoded with the SDK's own SCS_TOHOST
    assert ours == (scs.SCS_TOHOST(value, reg.sign_bit) if reg.sign_bit is not None else value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(motor=st.sampled_from(IDS), value=st.integers(0, 4095))
def test_write_is_the_sdks_write(sdk, bus, motor, value):
    port, ph = sdk
    port.sent.clear()
    bus.port_recorder.sent.clear()
    result, error = ph.write2ByteTxRx(port, motor, t.GOAL_POSITION.address, value)
    assert (result, error) == (scs.COMM_SUCCESS, 0)
    bus.write(motor, t.GOAL_POSITION, value)
    assert port.sent == bus.port_recorder.sent == [p.write(motor, 42, t.GOAL_POSITION.encode(value)).encode()]
    assert port.chain.servos[motor].get(t.GOAL_POSITION) == value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(-2047, 2047))
def test_sign_magnitude_is_the_sdks(offset):
    assert int.from_bytes(t.HOMING_OFFSET.encode(offset), "little") == scs.SCS_TOSCS(offset, 11)
    assert t.HOMING_OFFSET.decode(t.HOMING_OFFSET.encode(offset)) == offset
    raw = scs.SCS_TOSCS(offset * 16, 15)  # a velocity
    assert t.PRESENT_VELOCITY.decode(raw.to_bytes(2, "little")) == scs.SCS_TOHOST(raw, 15) == offset * 16


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.lists(st.sampled_from(IDS), min_size=1, max_size=6, unique=True),
       reg=st.sampled_from([t.PRESENT_POSITION, t.PRESENT_VELOCITY, t.TORQUE_ENABLE, t.HOMING_OFFSET]))
def test_sync_read_is_the_sdks_and_it_parses_our_emulators_statuses(sdk, bus, ids, reg):
    port, ph = sdk
    port.sent.clear()
    bus.port_recorder.sent.clear()
    group = scs.GroupSyncRead(port, ph, t.STATE_ADDRESS, t.STATE_LENGTH)
    for motor in ids:
        assert group.addParam(motor)
    assert group.txRxPacket() == scs.COMM_SUCCESS
    assert port.sent == [p.sync_read(t.STATE_ADDRESS, t.STATE_LENGTH, ids).encode()]
    ours = bus.sync_read_bytes(t.STATE_ADDRESS, t.STATE_LENGTH, ids)
    assert bus.port_recorder.sent == port.sent
    for motor in ids:
        assert group.getData(motor, t.PRESENT_POSITION.address, 2) == t.PRESENT_POSITION.decode(ours[motor][:2])
    port.sent.clear()
    single = scs.GroupSyncRead(port, ph, reg.address, reg.size)
    for motor in ids:
        single.addParam(motor)
    assert single.txRxPacket() == scs.COMM_SUCCESS
    assert port.sent == [p.sync_read(reg.address, reg.size, ids).encode()]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(goals=st.dictionaries(st.sampled_from(IDS), st.integers(0, 4095), min_size=1))
def test_sync_write_is_the_sdks(sdk, bus, goals):
    port, ph = sdk
    port.sent.clear()
    bus.port_recorder.sent.clear()
    group = scs.GroupSyncWrite(port, ph, t.GOAL_POSITION.address, 2)
    for motor, value in goals.items():
        assert group.addParam(motor, [scs.SCS_LOBYTE(value), scs.SCS_HIBYTE(value)])
    assert group.txPacket() == scs.COMM_SUCCESS
    bus.sync_write(t.GOAL_POSITION, goals)
    wire = p.sync_write(t.GOAL_POSITION.address, 2, {m: v.to_bytes(2, "little") for m, v in goals.items()}).encode()
    assert port.sent == bus.port_recorder.sent == [wire]
