"""The Dynamixel servo-chain emulator, driven in-process: status packets, watchdog, limits, faults."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.dynamixel import protocol as p
from drivers.dynamixel import tables as t
from drivers.dynamixel.emulator import ChainConfig, ServoChain

T0 = 100.0


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def exchange(chain: ServoChain, packet: p.Packet | bytes, now: float = T0) -> list[p.Status]:
    chain.feed(packet if isinstance(packet, bytes) else packet.encode(), now)
    out = b"".join(data for _, data in chain.outbox)
    chain.outbox.clear()
    return [p.Status.from_packet(pk) for pk in p.PacketParser().feed(out)]


def write(chain: ServoChain, motor_id: int, reg: t.Register, value: int, now: float = T0) -> int:
    (status,) = exchange(chain, p.write(motor_id, reg.address, reg.encode(value)), now)
    return status.error


@pytest.fixture
def chain() -> ServoChain:
    c = ServoChain(ChainConfig(ids=(1, 2, 3), return_delay=0), seed=0)
    c.tick(T0)
    return c


def test_manual_ping_vector_is_answered(chain: ServoChain) -> None:
    (status,) = exchange(chain, h("FF FF FD 00 01 03 00 01 19 4E"))
    assert (status.id, status.error, status.data) == (1, 0, (1020).to_bytes(2, "little") + bytes([48]))


def test_broadcast_ping_and_sync_read_answer_in_order(chain: ServoChain) -> None:
    assert [s.id for s in exchange(chain, p.ping(p.BROADCAST_ID))] == [1, 2, 3]
    statuses = exchange(chain, p.sync_read(t.PRESENT_POSITION.address, 4, [3, 1, 9]))
    assert [(s.id, t.PRESENT_POSITION.decode(s.data)) for s in statuses] == [(3, 2048), (1, 2048)]


def test_return_delay_schedules_replies() -> None:
    chain = ServoChain(ChainConfig(ids=(1, 2), return_delay=250))
    chain.feed(p.sync_read(132, 4, [1, 2]).encode(), T0)
    assert [due for due, _ in chain.outbox] == [pytest.approx(T0 + 500e-6)] * 2


def test_eeprom_locked_with_torque_and_read_only_registers(chain: ServoChain) -> None:
    assert write(chain, 1, t.OPERATING_MODE, 4) == 0
    assert write(chain, 1, t.TORQUE_ENABLE, 1) == 0
    assert write(chain, 1, t.OPERATING_MODE, 3) == p.ResultError.ACCESS_ERROR
    assert write(chain, 1, t.PRESENT_POSITION, 0) == p.ResultError.ACCESS_ERROR
    (status,) = exchange(chain, p.write(1, t.GOAL_POSITION.address, b"\x00\x01"))  # half a register
    assert status.error == p.ResultError.DATA_LENGTH_ERROR


def test_goal_outside_position_limits_is_refused(chain: ServoChain) -> None:
    write(chain, 1, t.MAX_POSITION_LIMIT, 3000)
    write(chain, 1, t.TORQUE_ENABLE, 1)
    assert write(chain, 1, t.GOAL_POSITION, 3001) == p.ResultError.DATA_LIMIT_ERROR
    assert write(chain, 1, t.GOAL_POSITION, 3000) == 0
    assert chain.servos[1].limit_refusals == 1


def test_motion_toward_goal_needs_torque(chain: ServoChain) -> None:
    exchange(chain, p.sync_write(t.GOAL_POSITION.address, 4, {1: (3000).to_bytes(4, "little")}))
    chain.tick(T0 + 0.2)
    assert chain.servos[1].get(t.PRESENT_POSITION) == 2048  # torque off: no motion
    write(chain, 1, t.TORQUE_ENABLE, 1, T0 + 0.2)
    assert chain.servos[1].get(t.GOAL_POSITION) == 2048  # torque on resets the goal
    write(chain, 1, t.GOAL_POSITION, 3000, T0 + 0.2)
    now = T0 + 0.2
    for _ in range(100):
        now += 0.01
        chain.tick(now)
    assert chain.servos[1].get(t.PRESENT_POSITION) == 3000


def test_bus_watchdog_semantics(chain: ServoChain) -> None:
    write(chain, 1, t.TORQUE_ENABLE, 1)
    write(chain, 1, t.GOAL_POSITION, 4000)
    write(chain, 1, t.BUS_WATCHDOG, 5)  # 100 ms
    chain.tick(T0 + 0.05)
    exchange(chain, p.sync_read(132, 4, [2]), T0 + 0.09)  # another motor's read still counts (broadcast)
    chain.tick(T0 + 0.15)
    assert chain.servos[1].get(t.BUS_WATCHDOG) == 5
    chain.tick(T0 + 0.20)
    chain.tick(T0 + 0.30)  # 210 ms of silence
    servo = chain.servos[1]
    assert servo.get(t.BUS_WATCHDOG) == t.WATCHDOG_TRIPPED
    stopped = servo.get(t.PRESENT_POSITION)
    assert servo.get(t.GOAL_POSITION) == stopped and 2048 < stopped < 4000
    assert write(chain, 1, t.GOAL_POSITION, 4000, T0 + 0.3) == p.ResultError.DATA_RANGE_ERROR
    assert servo.watchdog_refusals == 1
    chain.tick(T0 + 0.5)
    assert servo.get(t.PRESENT_POSITION) == stopped
    assert write(chain, 1, t.BUS_WATCHDOG, 0, T0 + 0.5) == 0
    assert write(chain, 1, t.GOAL_POSITION, 4000, T0 + 0.5) == 0


def test_watchdog_ignores_silence_with_torque_off(chain: ServoChain) -> None:
    write(chain, 2, t.BUS_WATCHDOG, 1)
    chain.tick(T0 + 1.0)
    assert chain.servos[2].get(t.BUS_WATCHDOG) == 1


def test_hardware_error_alert_and_shutdown_until_reboot(chain: ServoChain) -> None:
    write(chain, 1, t.TORQUE_ENABLE, 1)
    chain.control("hardware_error", {"motor_id": 1, "bits": int(t.HardwareError.OVERLOAD)})
    (status,) = exchange(chain, p.read(1, t.PRESENT_POSITION.address, 4))
    assert status.alert and status.result == 0 and not chain.servos[1].torque
    assert write(chain, 1, t.TORQUE_ENABLE, 1) == p.ALERT_BIT | p.ResultError.RESULT_FAIL
    (status,) = exchange(chain, p.reboot(1))
    assert status.alert  # answered before rebooting
    assert write(chain, 1, t.TORQUE_ENABLE, 1) == 0


def test_status_return_level(chain: ServoChain) -> None:
    exchange(chain, p.write(1, t.STATUS_RETURN_LEVEL.address, b"\x01"))
    assert exchange(chain, p.write(1, t.LED.address, b"\x01")) == []
    assert len(exchange(chain, p.read(1, t.LED.address, 1))) == 1
    assert len(exchange(chain, p.ping(1))) == 1


def test_unknown_instruction_and_silence(chain: ServoChain) -> None:
    (status,) = exchange(chain, p.Packet(2, 0x42))
    assert status.result == p.ResultError.INSTRUCTION_ERROR
    chain.control("silence", {"motor_id": 2, "on": True})
    assert exchange(chain, p.ping(2)) == []


@given(st.binary(max_size=200))
@settings(derandomize=True, max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_bytes_never_crash_the_emulator(data: bytes) -> None:
    chain = ServoChain(ChainConfig(ids=(1, 2)))
    chain.feed(data, T0)
    chain.tick(T0 + 0.01)


@given(st.sampled_from(list(p.Instruction)), st.sampled_from([1, 2, p.BROADCAST_ID]), st.binary(max_size=24))
@settings(derandomize=True, max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_instructions_never_crash_the_emulator(inst: int, motor_id: int, params: bytes) -> None:
    chain = ServoChain(ChainConfig(ids=(1, 2)))
    chain.feed(p.Packet(motor_id, inst, params).encode(), T0)
    chain.tick(T0 + 0.01)
    for _, data in chain.outbox:
        assert p.PacketParser().feed(data)  # every reply is a valid packet
