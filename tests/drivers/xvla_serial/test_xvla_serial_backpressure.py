"""The control tick's calls into XvlaSerialArm (poll_state, send_target) never wait on the controller.

The emulated controller runs in-process behind :class:`drivers.emulation.virtual_port.VirtualPort` on a virtual clock,
so "never blocks" is checked exactly (a read that would wait is counted), independent of machine load.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pytest
import serial

from drivers.arm import ArmLinkError, Target
from drivers.emulation.virtual_port import VirtualClock, VirtualPort
from drivers.xvla_serial import emulator
from drivers.xvla_serial.arm import XvlaSerialArm

CONFIG = emulator.ControllerConfig(n_joints=6, n_arms=1)
PERIOD = 0.005  # 200 Hz
PORT_TIMEOUT_S = 0.002  # what XvlaSerialArm opens the port with


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[XvlaSerialArm, VirtualPort, VirtualClock]]:
    clock = VirtualClock()
    controller = emulator.ControllerEmulator(CONFIG, seed=1)
    port = VirtualPort(controller, clock, timeout_s=PORT_TIMEOUT_S)
    monkeypatch.setattr(serial, "serial_for_url", lambda *args, **kwargs: port)
    arm = XvlaSerialArm("emulated", space="joint", clock=clock)
    arm.connect()
    arm.read_state()
    yield arm, port, clock


def joint(value: float) -> Target:
    return Target.joint(np.full(CONFIG.n_joints, value), [0.5])


def tick(arm: XvlaSerialArm, port: VirtualPort, clock: VirtualClock, target: Target) -> None:
    """One control tick; asserts it did not wait on the port."""
    clock.now += PERIOD
    start, reads = clock.now, port.blocking_reads
    arm.poll_state()
    arm.send_target(target)
    assert (clock.now, port.blocking_reads) == (start, reads), "the tick waited on the controller"


def test_slow_controller_never_blocks_the_tick(rig: tuple[XvlaSerialArm, VirtualPort, VirtualClock]) -> None:
    arm, port, clock = rig
    port.device.control("latency", {"ms": 12.0})  # replies arrive 2-3 ticks late
    ages = []
    for i in range(400):
        tick(arm, port, clock, joint(0.001 * i))
        ages.append(clock.now - arm.poll_state().timestamp)
    assert arm.stats.targets_skipped == 0 and arm.stats.states_lost == 0 and arm.stats.replies_lost == 0
    assert arm.stats.targets_sent == 400 and arm.stats.targets_acked >= 400 - 3
    assert max(ages[10:]) <= 0.012 + 2 * PERIOD  # the state is as old as the controller's latency, no older
    seqs = list(port.device.accepted_seqs)
    assert seqs == sorted(seqs)


def test_backpressure_skips_targets_and_the_newest_is_sent_when_a_slot_frees(
    rig: tuple[XvlaSerialArm, VirtualPort, VirtualClock],
) -> None:
    arm, port, clock = rig
    arm.reply_timeout_s = 0.1
    port.device.control("latency", {"ms": 60.0})  # 12 ticks per ACK: the 8-frame window fills
    for i in range(200):
        tick(arm, port, clock, joint(0.001 * i))
        assert arm.in_flight <= 8
    skipped = arm.stats.targets_skipped
    assert skipped > 0 and arm.stats.targets_sent + skipped == 200
    assert arm.stats.targets_nacked == arm.stats.replies_lost == 0  # nothing was refused or lost
    final = joint(0.25)
    for _ in range(20):  # the loop goes on sending its newest target every tick
        tick(arm, port, clock, final)
    assert port.device.last_target == pytest.approx(list(final.to_vector()), abs=1e-6)
    seqs = list(port.device.accepted_seqs)
    assert seqs == sorted(seqs) and list(port.device.nacks) == []


def test_silent_controller_is_a_link_error_after_the_ack_timeout_without_waiting(
    rig: tuple[XvlaSerialArm, VirtualPort, VirtualClock],
) -> None:
    arm, port, clock = rig
    tick(arm, port, clock, joint(0.1))
    port.device.control("silence", {"on": True})
    first_unacked = clock.now + PERIOD
    with pytest.raises(ArmLinkError, match=r"TARGETs unacknowledged; .* was sent 10[0-5] ms ago \(ack_timeout_s 100 ms\)"):
        for i in range(100):
            tick(arm, port, clock, joint(0.1))
    assert 0.100 < clock.now - first_unacked <= 0.100 + PERIOD  # raised on the first tick past the timeout
    assert arm.stats.targets_skipped > 0  # the window filled meanwhile: later targets were not sent


def test_no_state_for_the_link_timeout_is_a_link_error(rig: tuple[XvlaSerialArm, VirtualPort, VirtualClock]) -> None:
    arm, port, clock = rig
    arm.ack_timeout_s = 10.0  # let the STATE bound, not the ACK bound, decide
    tick(arm, port, clock, joint(0.1))
    port.device.control("drop_tx", {"n": 10_000})  # the controller hears us but its replies are lost
    last_state = arm.poll_state().timestamp
    with pytest.raises(ArmLinkError, match=r"no STATE for 15[0-5] ms \(limit 3 x 50 ms\)"):
        for _ in range(100):
            tick(arm, port, clock, joint(0.1))
    assert 0.150 < clock.now - last_state <= 0.150 + PERIOD
    assert arm.stats.states_lost >= 2  # each HEARTBEAT was given reply_timeout_s, then replaced
