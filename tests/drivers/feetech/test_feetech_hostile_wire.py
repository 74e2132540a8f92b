"""Feetech packets on the wire, and hostile input on it, fuzzed: truncated and corrupted status packets, wrong ids,
wrong lengths, floods, out-of-range values and noise, well over 100,000 of them. The parser never raises and its
buffer stays bounded; the arm never crashes and never takes a corrupt status: every state it reports is the servos'
true one. (The bytes against the vendor's SDK: ``test_feetech_protocol.py``.)"""

from __future__ import annotations

import random

import numpy as np
import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.arm import ArmLinkError, Target
from drivers.emulation.virtual_port import VirtualClock, VirtualPort
from drivers.feetech import emulator
from drivers.feetech import protocol as p
from drivers.feetech import tables as t
from drivers.feetech.arm import FeetechArm

from tests.support.so101 import chain_config, write_calibration

INPUTS = 100_000


def flip(wire: bytes, rng: random.Random) -> bytes:
    """One bit flipped after the header: the checksum cannot match any more."""
    i = rng.randrange(2, len(wire))
    return wire[:i] + bytes([wire[i] ^ 1 << rng.randrange(8)]) + wire[i + 1 :]


def hostile(status: p.Status, rng: random.Random) -> list[bytes]:
    """One hostile variant of a true status (a list: a flood is several)."""
    wire = status.to_packet().encode()
    kind = rng.randrange(8)
    if kind == 0:
        return [wire[: rng.randrange(1, len(wire))]]  # truncated
    if kind == 1:
        return [flip(wire, rng)]  # corrupted
    if kind == 2:  # a well-formed status from an id nobody asked
        return [p.Status(rng.choice([0, 7, 99, 252]), status.error, status.data).to_packet().encode()]
    if kind == 3:  # well-formed, of another length
        data = (status.data + bytes(4))[: rng.choice([0, 1, 2, 3, 5, 6, 8])]
        return [p.Status(status.id, status.error, data).to_packet().encode()]
    if kind == 4:  # a flood of corrupted copies
        return [flip(wire, rng) for _ in range(rng.randrange(2, 12))]
    if kind == 5:  # well-formed, but a position no servo can be at
        data = rng.randrange(t.TICKS_PER_REV, 1 << 16).to_bytes(2, "little") + status.data[2:]
        return [p.Status(status.id, status.error, data).to_packet().encode()]
    if kind == 6:  # noise, headers included
        return [bytes(rng.choice([0xFF, 0xFE, rng.randrange(256)]) for _ in range(rng.randrange(1, 40)))]
    return [b"\xff\xff" + bytes([status.id, 0xFF])]  # a header claiming a huge length


class HostileWire:
    """The emulated servos behind a wire that, for about half of the reads, delivers hostile bytes instead of
    (or before) the true statuses; counts what it sent."""

    def __init__(self, chain: emulator.ServoChain, rng: random.Random) -> None:
        self.chain, self.rng = chain, rng
        self.outbox: list[tuple[float, bytes]] = []
        self.hostile = 0
        self.active = False

    def feed(self, data: bytes, now: float) -> None:
        self.chain.feed(data, now)
        replies, self.chain.outbox[:] = list(self.chain.outbox), []
        attack = self.active and self.rng.random() < 0.5
        for due, wire in replies:
            if attack:
                status = p.Status.from_packet(p.decode_packet(wire))
                bad = hostile(status, self.rng)
                self.hostile += len(bad)
                self.outbox += [(due, b) for b in bad]
                if self.rng.random() < 0.3:
                    self.outbox.append((due, wire))  # the true one after the attack, sometimes
            else:
                self.outbox.append((due, wire))

    def tick(self, now: float) -> None:
        self.chain.tick(now)

    def control(self, command: str, args: dict) -> object:
        return self.chain.control(command, args)


def test_the_parser_never_raises_and_yields_only_checked_packets():
    rng = random.Random(1)
    parser, fed, taken = p.PacketParser(), 0, 0
    truth = [p.Status(rng.randrange(1, 7), 0, bytes(rng.randrange(256) for _ in range(4))) for _ in range(200)]
    while fed < INPUTS:
        for chunk in hostile(rng.choice(truth), rng):
            fed += 1
            for packet in parser.feed(chunk):
                raw = packet.encode()
                assert raw[-1] == p.checksum(raw[2:-1]) and packet.id <= p.BROADCAST_ID
                taken += 1
            assert parser.pending <= p.MAX_PACKET
    print(f"\n{fed} hostile chunks: {taken} frames passed the checksum, {parser.corrupt} heads or sums rejected")
    assert parser.corrupt > INPUTS // 4


def test_the_arm_takes_no_corrupt_status_in_100000_hostile_inputs(monkeypatch, tmp_path):
    """Torque stays off, so the true positions never change: any other state would be a corrupt status taken."""
    rng = random.Random(7)
    clock = VirtualClock()
    wire = HostileWire(emulator.ServoChain(chain_config(), seed=3), rng)
    port = VirtualPort(wire, clock, timeout_s=0.002)
    monkeypatch.setattr(serial, "serial_for_url", lambda *args, **kwargs: port)
    arm = FeetechArm("hostile", write_calibration(tmp_path), max_velocity=3.0, gripper_open="range_max", clock=clock)
    arm.connect()
    for motor in range(1, 7):
        arm.bus.write(motor, t.TORQUE_ENABLE, 0)  # nothing moves: the truth is constant
    truth = arm.read_state()
    hold = Target.joint(truth.joint_positions, truth.gripper)
    wire.active = True
    ticks = states = 0
    while wire.hostile < INPUTS:
        clock.now += 0.005
        try:
            state = arm.poll_state()
            arm.send_target(hold)
        except ArmLinkError as exc:  # only a long run of spoiled reads could do this: then the bus is gone
            pytest.fail(f"link lost after {ticks} ticks: {exc}")
        ticks += 1
        if state.timestamp > truth.timestamp:
            states += 1
            np.testing.assert_array_equal(state.joint_positions, truth.joint_positions)
            np.testing.assert_array_equal(state.gripper, truth.gripper)
            np.testing.assert_array_equal(state.joint_velocities, truth.joint_velocities)
    missed = arm.counters()["reads_missed"]
    print(f"\n{wire.hostile} hostile inputs over {ticks} ticks: {states} true states, {missed} reads missed, "
          f"every state the true one")
    assert wire.hostile >= INPUTS and missed > ticks // 10 and states > ticks // 4


@settings(max_examples=500, deadline=None)
@given(motor=st.integers(0, p.BROADCAST_ID), code=st.integers(0, 0xFF), params=st.binary(max_size=40))
def test_a_packet_survives_the_parser_and_its_checksum_is_the_protocols(motor, code, params):
    wire = p.Packet(motor, code, params).encode()
    body = list(wire[2:-1])
    assert wire[-1] == ~sum(body) & 0xFF  # ~(ID + LEN + INST + params) & 0xFF
    assert p.decode_packet(wire) == p.Packet(motor, code, params)
    parser = p.PacketParser()
    assert parser.feed(b"\x00\xff" + wire + wire[:3]) == [p.Packet(motor, code, params)] and parser.pending == 3


def test_builders_refuse_what_does_not_fit():
    for make, why in ((lambda: p.read(253, 0, 1), "motor id 253"), (lambda: p.read(1, 256, 1), "address 256"),
                      (lambda: p.sync_write(42, 2, {1: b"\x00"}), "expected 2 data bytes"),
                      (lambda: p.write(1, 0, bytes(250)), "over 250 bytes"),
                      (lambda: t.HOMING_OFFSET.encode(2048), "Homing_Offset: 2048 does not fit")):
        with pytest.raises((p.PacketError, ValueError), match=why):
            make()
