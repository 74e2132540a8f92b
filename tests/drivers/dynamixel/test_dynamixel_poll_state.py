"""The control tick's calls into DynamixelArm (poll_state, send_target) never wait on the bus.

The emulated servo chain runs in-process behind :class:`drivers.emulation.virtual_port.VirtualPort` on a virtual clock,
so "never blocks" is checked exactly (a read that would wait is counted), independent of machine load.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pytest
import serial

from drivers.arm import ArmFault, ArmLinkError, ArmState, FaultFlag, Target
from drivers.dynamixel import emulator
from drivers.dynamixel import tables as t
from drivers.dynamixel.arm import DynamixelArm
from drivers.dynamixel.joint_offsets import ArmCalibration, GripperCalibration, JointCalibration
from drivers.emulation.virtual_port import VirtualClock, VirtualPort

CAL = ArmCalibration(
    "poll-arm",
    tuple(JointCalibration(f"j{i}", i, lower=-1.5, upper=1.5, max_velocity=3.0) for i in range(1, 6)),
    GripperCalibration(6, closed=1500, open=2500),
)
PERIOD = 0.005  # 200 Hz
PORT_TIMEOUT_S = 0.002  # what Bus opens the port with


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[DynamixelArm, VirtualPort, VirtualClock]]:
    clock = VirtualClock()
    chain = emulator.ServoChain(emulator.ChainConfig(ids=(1, 2, 3, 4, 5, 6)), seed=1)
    port = VirtualPort(chain, clock, timeout_s=PORT_TIMEOUT_S)
    monkeypatch.setattr(serial, "serial_for_url", lambda *args, **kwargs: port)
    arm = DynamixelArm("emulated", CAL, watchdog_ms=1000, clock=clock)
    arm.connect()
    arm.poll_state()  # the first tick after connect reads once, waiting
    arm.send_target(target(0.0))
    yield arm, port, clock


def target(q: float) -> Target:
    return Target.joint(np.full(5, q), [0.5])


def tick(arm: DynamixelArm, port: VirtualPort, clock: VirtualClock, goal: Target | None) -> ArmState:
    """One control tick (no target: a stopped mode); asserts it did not wait on the bus."""
    clock.now += PERIOD
    start, reads = clock.now, port.blocking_reads
    state = arm.poll_state()
    if goal is not None:
        arm.send_target(goal)
    assert (clock.now, port.blocking_reads) == (start, reads), "the tick waited on the bus"
    return state


def age(state: ArmState, clock: VirtualClock) -> float:
    return clock.now - state.timestamp


def test_state_advances_over_ticks_without_waiting(rig: tuple[DynamixelArm, VirtualPort, VirtualClock]) -> None:
    arm, port, clock = rig
    port.latency_s = 0.003  # replies arrive within the tick
    ages = [age(tick(arm, port, clock, target(min(0.002 * i, 0.3))), clock) for i in range(300)]
    # each tick collects the previous tick's read, stamped on arrival; every 10th read is Bus_Watchdog instead
    stale = [i for i, a in enumerate(ages) if a]
    assert stale[0] < 10 and stale == list(range(stale[0], 300, 10))
    assert [ages[i] for i in stale] == pytest.approx([PERIOD] * len(stale))
    assert arm.counters() == {"reads_missed": 0, "targets_skipped": 0}
    state = arm.poll_state()
    assert np.abs(state.joint_positions - 0.3).max() < 0.01 and state.mode == "TRACKING"


def test_lost_replies_are_misses_and_the_state_ages(rig: tuple[DynamixelArm, VirtualPort, VirtualClock]) -> None:
    arm, port, clock = rig
    tick(arm, port, clock, target(0.0))
    port.device.control("drop_replies", {"n": 6 * 3 + 2})  # three reads lose all statuses, the fourth two
    ages = [age(tick(arm, port, clock, target(0.0)), clock) for _ in range(6)]
    assert ages == pytest.approx([0.0, PERIOD, 2 * PERIOD, 3 * PERIOD, 4 * PERIOD, 0.0])
    assert arm.counters() == {"reads_missed": 4, "targets_skipped": 0}


def test_silent_bus_is_a_link_error_after_the_link_timeout(rig: tuple[DynamixelArm, VirtualPort, VirtualClock]) -> None:
    arm, port, clock = rig
    assert arm.link_timeout_s == pytest.approx(0.15)  # (retries + 1) * timeout_s, whatever the control rate
    port.device.control("silence", {"motor_id": 4})
    last = tick(arm, port, clock, target(0.0)).timestamp  # collects the read sent before the silence
    ticks = 0
    with pytest.raises(ArmLinkError, match=r"no complete sync read .* for 1[5-9]\d ms .* no status from motor\(s\) \[4\]"):
        while ticks < 1000:
            tick(arm, port, clock, target(0.0))  # tick() asserts that no call waited
            ticks += 1
    assert 0.15 < clock() - last <= 0.15 + 2 * PERIOD  # raised on the first tick past the bound, not later
    assert arm.counters()["reads_missed"] == ticks + 1


def test_hardware_error_is_detected_without_waiting(rig: tuple[DynamixelArm, VirtualPort, VirtualClock]) -> None:
    arm, port, clock = rig
    port.device.control("hardware_error", {"motor_id": 3, "bits": int(t.HardwareError.OVERLOAD)})
    assert not tick(arm, port, clock, target(0.0)).blocked  # collects the read sent before the error
    assert not tick(arm, port, clock, target(0.0)).blocked  # alert bit set: the next read is Hardware_Error_Status
    state = tick(arm, port, clock, None)
    assert state.faults & FaultFlag.OVER_CURRENT and state.blocked and state.mode == "FAULT"
    with pytest.raises(ArmFault, match="motor 3: OVERLOAD"):
        arm.send_target(target(0.0))


def test_tripped_watchdog_is_read_in_the_pipeline(rig: tuple[DynamixelArm, VirtualPort, VirtualClock]) -> None:
    arm, port, clock = rig
    for servo in port.device.servos.values():
        servo.set(t.BUS_WATCHDOG, t.WATCHDOG_TRIPPED)
    for _ in range(10):  # watchdog_check_every
        tick(arm, port, clock, None)
    assert arm.poll_state().faults & FaultFlag.HOST_TIMEOUT
    with pytest.raises(ArmLinkError, match="Bus_Watchdog tripped"):
        arm.send_target(target(0.0))


def test_ticks_without_targets_keep_reading_and_the_first_target_after_them_is_skipped(
    rig: tuple[DynamixelArm, VirtualPort, VirtualClock],
) -> None:
    arm, port, clock = rig
    ages = [age(tick(arm, port, clock, None), clock) for _ in range(5)]  # a stopped mode: poll_state reads
    # the first tick sends no read (a target was expected to carry it), then every tick has a fresh state
    assert ages == pytest.approx([0.0, PERIOD, 0.0, 0.0, 0.0])
    goals = {i: s.get(t.GOAL_POSITION) for i, s in port.device.servos.items()}
    tick(arm, port, clock, target(0.2))  # the read poll_state just sent may be answering: goal not sent
    assert arm.counters() == {"reads_missed": 0, "targets_skipped": 1}
    assert {i: s.get(t.GOAL_POSITION) for i, s in port.device.servos.items()} == goals
    tick(arm, port, clock, target(0.2))
    assert port.device.servos[1].get(t.GOAL_POSITION) == CAL.joints[0].to_ticks(0.2)
    assert arm.counters() == {"reads_missed": 0, "targets_skipped": 1}


def test_the_probe_reads_and_moves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """``xvla-edge arm check``'s probe on a Dynamixel arm: what answers, where it is, its errors; no register
    written (torque, goal and watchdog as they were), and the bus closed again."""
    clock = VirtualClock()
    chain = emulator.ServoChain(emulator.ChainConfig(ids=(1, 2, 3, 4, 5, 6)), seed=1)
    port = VirtualPort(chain, clock, timeout_s=PORT_TIMEOUT_S)
    monkeypatch.setattr(serial, "serial_for_url", lambda *args, **kwargs: port)
    chain.control("hardware_error", {"motor_id": 2, "bits": int(t.HardwareError.OVERLOAD)})
    chain.control("silence", {"motor_id": 5})
    before = chain.control("snapshot", {})
    found = DynamixelArm("emulated", CAL, watchdog_ms=1000, clock=clock).probe()
    assert chain.control("snapshot", {}) == before
    assert found["link"] and [m["id"] for m in found["motors"]] == [1, 2, 3, 4, 5, 6]
    first = found["motors"][0]
    assert first["found"] and first["model"] == "XM430-W350" and first["torque"] is False
    assert first["position"] == pytest.approx(CAL.joints[0].to_rad(first["position_ticks"]), abs=1e-6)
    assert found["motors"][5]["unit"] == "opening" and not found["motors"][4]["found"]
    assert found["problems"] == ["motor 5 (j5) does not answer", "motor 2 (j2) reports OVERLOAD"]
