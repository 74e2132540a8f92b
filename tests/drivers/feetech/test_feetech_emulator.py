"""The emulated STS3215 chain answers as the servos do: the homing-offset frame, Response_Status_Level, broadcast ping,
the angle-limit clamp and bit, torque dropped on an unloading condition; in-process, packet by packet."""

from __future__ import annotations

from drivers.feetech import protocol as p
from drivers.feetech import tables as t
from drivers.feetech.emulator import GOAL_LOG, ChainConfig, ServoChain


def exchange(chain: ServoChain, packet: p.Packet, now: float = 1.0) -> list[p.Status]:
    """Send ``packet``; the status packets the chain answers with."""
    chain.feed(packet.encode(), now)
    parser = p.PacketParser()
    replies = [s for _, wire in chain.outbox for s in parser.feed(wire)]
    chain.outbox.clear()
    return [p.Status.from_packet(r) for r in replies]


def test_present_position_is_the_encoder_minus_the_homing_offset():
    """LeRobot's half-turn homing (its test: a servo reading 3000 gets offset 3000 − 2047 = 953) makes it read 2047."""
    chain = ServoChain(ChainConfig(ids=(1,), start_ticks=3000))
    [status] = exchange(chain, p.read(1, t.PRESENT_POSITION.address, 2))
    assert t.PRESENT_POSITION.decode(status.data) == 3000
    exchange(chain, p.write(1, t.HOMING_OFFSET.address, t.HOMING_OFFSET.encode(953)))
    chain.tick(1.0)
    [status] = exchange(chain, p.read(1, t.PRESENT_POSITION.address, 2))
    assert t.PRESENT_POSITION.decode(status.data) == 2047 and chain.servos[1].actual == 3000


def test_response_status_level_0_answers_only_ping_and_read():
    chain = ServoChain(ChainConfig(ids=(1, 2)))
    assert [s.id for s in exchange(chain, p.Packet(p.BROADCAST_ID, p.Instruction.PING))] == [1, 2]
    assert exchange(chain, p.write(2, t.RESPONSE_STATUS_LEVEL.address, b"\x00")) == []  # already at level 0
    assert exchange(chain, p.write(2, t.ACCELERATION.address, b"\x10")) == []  # done, not answered
    assert chain.servos[2].get(t.ACCELERATION) == 0x10
    assert [s.data for s in exchange(chain, p.read(2, t.ACCELERATION.address, 1))] == [b"\x10"]


def test_a_goal_outside_the_limits_is_clamped_and_flagged():
    chain = ServoChain(ChainConfig(ids=(3,), calibration={"3": [0, 1000, 3000]}))
    exchange(chain, p.write(3, t.GOAL_POSITION.address, t.GOAL_POSITION.encode(3500)))
    assert chain.servos[3].get(t.GOAL_POSITION) == 3000
    [status] = exchange(chain, p.ping(3))
    assert status.error == p.ErrorBit.ANGLE
    exchange(chain, p.write(3, t.GOAL_POSITION.address, t.GOAL_POSITION.encode(2000)))
    assert exchange(chain, p.ping(3))[0].error == 0


def test_an_overload_drops_torque_and_keeps_it_off_until_cleared():
    chain = ServoChain(ChainConfig(ids=(1,)))
    exchange(chain, p.write(1, t.TORQUE_ENABLE.address, b"\x01"))
    chain.control("hardware_error", {"motor_id": 1, "bits": int(p.ErrorBit.OVERLOAD)})
    assert chain.servos[1].get(t.TORQUE_ENABLE) == 0
    [status] = exchange(chain, p.write(1, t.TORQUE_ENABLE.address, b"\x01"))
    assert status.error == p.ErrorBit.OVERLOAD and chain.servos[1].get(t.TORQUE_ENABLE) == 0
    chain.control("hardware_error", {"motor_id": 1, "bits": 0})
    exchange(chain, p.write(1, t.TORQUE_ENABLE.address, b"\x01"))
    assert chain.servos[1].get(t.TORQUE_ENABLE) == 1


def test_the_goal_log_is_bounded():
    chain = ServoChain(ChainConfig(ids=(1,)))
    for i in range(GOAL_LOG + 10):
        chain.feed(p.sync_write(t.GOAL_POSITION.address, 2, {1: (i % 4096).to_bytes(2, "little")}).encode(), float(i))
    log = chain.control("goal_log", {})
    assert len(log) == GOAL_LOG and log[-1] == (float(GOAL_LOG + 9), 1, (GOAL_LOG + 9) % 4096)
