"""Watchdog decisions, and the control loop's reaction to them, in-process with a fake clock."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from drivers.arm import ArmConfigError, ArmFault, FaultFlag, JointLimit
from drivers.control.control_loop import ControlLoop, LoopConfig
from drivers.control.trajectory import Trajectory
from drivers.control.watchdog import Mode, Watchdog
from drivers.emulation.sim_arm import SimArm

IDENTITY = [0.0, 0.0, 0.0, 1.0]
DT = 0.01


def test_watchdog_priorities_and_latches():
    wd = Watchdog()
    assert wd.update(now=0.0, faults=FaultFlag(0), trajectory_end=None) is Mode.IDLE
    assert wd.update(now=0.0, faults=FaultFlag(0), trajectory_end=1.0) is Mode.TRACKING
    assert wd.update(now=1.5, faults=FaultFlag(0), trajectory_end=1.0) is Mode.HOLDING
    assert wd.update(now=1.5, faults=FaultFlag.OVER_CURRENT, trajectory_end=1.0) is Mode.FAULT
    assert wd.update(now=1.5, faults=FaultFlag.HOST_TIMEOUT, trajectory_end=1.0) is Mode.FAULT
    assert wd.update(now=1.5, faults=FaultFlag.AT_LIMIT, trajectory_end=2.0) is Mode.TRACKING  # a warning only
    wd.estop()
    assert wd.update(now=2.0, faults=FaultFlag(0), trajectory_end=3.0) is Mode.ESTOPPED
    assert wd.update(now=2.0, faults=FaultFlag(0), trajectory_end=3.0) is Mode.ESTOPPED  # latched
    wd.clear_estop()
    assert wd.update(now=2.0, faults=FaultFlag.ESTOP, trajectory_end=3.0) is Mode.ESTOPPED  # controller's latch
    wd.clear_estop()
    wd.link_lost()
    assert wd.update(now=2.0, faults=FaultFlag(0), trajectory_end=3.0) is Mode.LINK_LOST
    wd.link_restored()
    assert wd.update(now=2.0, faults=FaultFlag(0), trajectory_end=3.0) is Mode.TRACKING
    assert wd.report() == {"estopped": 1, "fault": 1, "holding": 1, "link_lost": 1, "tracking": 3}


class Rig:
    """A ControlLoop on a SimArm sharing one fake clock."""

    def __init__(self, **arm_kw) -> None:
        self.t = 0.0
        self.link_down = threading.Event()
        self.arm = SimArm(clock=lambda: self.t, time_constant=0.02, link_down=self.link_down, **arm_kw)
        self.loop = ControlLoop(self.arm, LoopConfig(rate_hz=1 / DT))
        self.loop.start()
        self.sent = 0
        original = self.arm.send_target

        def counting(target):
            self.sent += 1
            original(target)

        self.arm.send_target = counting

    def run(self, seconds: float) -> Mode:
        mode = self.loop.watchdog.mode
        for _ in range(round(seconds / DT)):
            self.t += DT
            mode = self.loop.tick(self.t)
        return mode

    def chunk(self, end=(0.35, 0.05, 0.3), span=0.5) -> bool:
        pos = np.linspace(self.loop.command.position[0], end, 31)[1:]
        rot = np.tile(IDENTITY, (30, 1))
        traj = Trajectory.from_chunk(self.t, span, position=pos, rotation=rot, gripper=np.ones(30))
        return self.loop.submit(traj, self.t, self.t)


def test_tracks_then_holds_the_last_safe_pose_when_stale():
    rig = Rig()
    assert rig.run(0.05) is Mode.IDLE
    assert rig.chunk()
    assert rig.run(0.2) is Mode.TRACKING
    assert rig.run(0.5) is Mode.HOLDING
    held = rig.loop.command.to_vector()
    np.testing.assert_allclose(held[:3], [0.35, 0.05, 0.3], atol=1e-9)
    rig.run(0.5)
    np.testing.assert_array_equal(rig.loop.command.to_vector(), held)  # keeps sending the same pose...
    np.testing.assert_allclose(rig.arm.read_state().position[0], held[:3], atol=1e-6)  # ...and the arm is there
    assert rig.loop.watchdog.mode is Mode.HOLDING and rig.sent == 125  # hold is not torque-off: it still commands


def test_link_loss_stops_commanding_until_reconnect():
    rig = Rig()
    rig.chunk()
    rig.run(0.1)
    rig.link_down.set()
    assert rig.run(0.05) is Mode.LINK_LOST
    sent = rig.sent
    rig.run(0.2)
    assert rig.sent == sent  # nothing is sent while the link is lost
    assert not rig.chunk()
    rig.loop.reconnect()  # still down: stays lost
    assert rig.run(0.01) is Mode.LINK_LOST
    rig.link_down.clear()
    rig.loop.reconnect()
    assert rig.run(0.05) is Mode.IDLE  # holding where the arm is; the old chunk is gone
    assert rig.chunk() and rig.run(0.05) is Mode.TRACKING
    events = rig.loop.stats({}, "").events
    assert events["link_lost"] == 1 and events["chunk_rejected_link_lost"] == 1


def test_estop_latches_until_cleared():
    rig = Rig()
    rig.chunk()
    rig.run(0.1)
    rig.loop.estop()
    assert rig.arm.read_state().faults & FaultFlag.ESTOP
    sent = rig.sent
    assert rig.run(0.3) is Mode.ESTOPPED and rig.sent == sent
    assert not rig.chunk()
    assert rig.run(0.3) is Mode.ESTOPPED  # latched: time alone does not release it
    rig.loop.clear_estop()
    assert rig.run(0.02) is Mode.IDLE
    np.testing.assert_allclose(rig.loop.command.position, rig.arm.read_state().position, atol=1e-9)
    assert rig.chunk() and rig.run(0.02) is Mode.TRACKING



def test_the_estop_latch_is_reported_while_a_lost_link_decides_the_mode():
    """The daemon learns of an e-stop from the loop's stats: a link lost after it must not hide the latch."""
    rig = Rig()
    rig.chunk()
    rig.run(0.1)
    rig.loop.estop()
    rig.link_down.set()
    assert rig.run(0.05) is Mode.LINK_LOST
    assert rig.loop.stats({}, "").estop_latched
    rig.link_down.clear()
    rig.loop.reconnect()
    assert rig.run(0.05) is Mode.ESTOPPED  # still latched once the link is back
    rig.loop.clear_estop()
    assert not rig.loop.stats({}, "").estop_latched and rig.run(0.02) is Mode.IDLE

def test_controller_fault_holds_and_recovers_to_idle():
    rig = Rig()
    rig.chunk()
    rig.run(0.1)
    rig.arm.inject_faults(FaultFlag.OVER_TEMPERATURE)
    assert rig.run(0.05) is Mode.FAULT
    assert rig.loop.streamer.trajectory is None
    rig.arm.clear_faults()
    assert rig.run(0.02) is Mode.IDLE


def test_refused_command_holds_and_drops_the_trajectory():
    rig = Rig()
    rig.chunk()
    rig.run(0.05)
    original = rig.arm.send_target

    def refuse(target):
        raise ArmFault("out of limits", reason="out_of_limits")

    rig.arm.send_target = refuse
    assert rig.run(0.01) is Mode.TRACKING
    assert rig.loop.events["refused"] == 1 and rig.loop.streamer.trajectory is None
    rig.arm.send_target = original
    assert rig.run(0.02) is Mode.IDLE


def test_safety_counts_and_trace():
    rig = Rig()
    rig.chunk(end=(0.9, 0.0, 0.3))  # outside the sim's default workspace (x <= 0.6)
    rig.run(2.0)
    assert rig.loop.command.position[0, 0] == pytest.approx(0.6)
    stats = rig.loop.stats({"ticks": 0}, "SCHED_OTHER")
    assert stats.interventions["workspace"] > 0 and stats.mode == "holding"
    trace = rig.loop.trace()
    assert trace["command"].shape == (len(trace["time"]), 8)
    assert trace["mode"][0] == "tracking" and trace["mode"][-1] == "holding"
    assert np.all(np.diff(trace["time"]) > 0)


def test_joint_space_loop():
    rig = Rig(space="joint", joint_limits=(JointLimit(-1, 1, 1.0),) * 3)
    traj = Trajectory.from_chunk(0.0, 0.3, joints=np.linspace([0, 0, 0], [0.2, -0.2, 0.1], 31)[1:],
                                 gripper=np.zeros(30))
    assert rig.loop.submit(traj, 0.0, 0.0)
    rig.run(1.0)
    np.testing.assert_allclose(rig.arm.read_state().joint_positions, [0.2, -0.2, 0.1], atol=1e-6)
    assert rig.loop.command.gripper[0] == 0.0


def test_ee_arm_without_measured_pose_cannot_start():
    arm = SimArm(initial_position=(np.nan, 0.0, 0.0))
    with pytest.raises(ArmConfigError, match="no finite measured ee pose"):
        ControlLoop(arm, LoopConfig()).start()


def test_loop_config_validation():
    with pytest.raises(ArmConfigError, match=r"rate_hz \(1000\) must be in 50..500"):
        LoopConfig(rate_hz=1000)
    with pytest.raises(ArmConfigError, match="realtime_priority"):
        LoopConfig(realtime_priority=120)
