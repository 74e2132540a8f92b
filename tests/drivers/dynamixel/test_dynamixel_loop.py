"""A 30-waypoint joint chunk through the real control loop (its own process) to the emulated servo chain
(another process) over a pty. Checks what the servos did, not timing; reaching the last waypoint depends
on the loop keeping its rate, so it is not asserted here (test_dynamixel_arm.py checks following)."""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest

from drivers.control.control_loop import LoopConfig
from drivers.control.loop_process import ControlLoopClient
from drivers.control.trajectory import Trajectory
from drivers.dynamixel import emulator
from drivers.dynamixel.arm import DynamixelArm
from drivers.dynamixel.joint_offsets import ArmCalibration, GripperCalibration, JointCalibration

CAL = ArmCalibration(
    "loop-arm",
    tuple(JointCalibration(f"j{i}", i, lower=-1.5, upper=1.5, max_velocity=3.0) for i in range(1, 6)),
    GripperCalibration(6, closed=1500, open=2500),
)
SPAN_S = 0.6


@pytest.mark.parametrize("rate_hz", [100, 500])
@pytest.mark.subprocess
def test_control_loop_streams_a_joint_chunk(rate_hz: float) -> None:
    emu = emulator.start(emulator.ChainConfig(ids=(1, 2, 3, 4, 5, 6), return_delay=0), seed=3)
    # generous link bounds keep a loaded CI machine from tripping them: 3 x 200 ms without a complete read
    factory = functools.partial(DynamixelArm, emu.port, CAL, watchdog_ms=1000, timeout_s=0.2)
    s = np.linspace(0, 1, 31)[1:]
    joints = np.outer(0.5 * np.sin(np.pi / 2 * s), [1, -1, 1, -1, 1])
    last = np.r_[joints[-1], 1.0]
    try:
        with ControlLoopClient(factory, LoopConfig(rate_hz=rate_hz, realtime_priority=0)) as loop:
            t_obs = time.monotonic()
            loop.submit(Trajectory.from_chunk(t_obs, SPAN_S, joints=joints, gripper=s[:, None]), t_obs)
            deadline = t_obs + SPAN_S + 3.0
            while time.monotonic() < deadline:  # normally ends within ~0.2 s after the chunk
                if np.abs(loop.stats().last_state.to_vector("joint") - last).max() < 3e-3:
                    break
                time.sleep(0.02)
            final = loop.stop()
        assert final is not None and final.events.get("chunk_accepted") == 1
        assert not {"refused", "link_lost"} & set(final.events), final.events
        servos = emu.call("snapshot").values()
        assert all(s["limit_refusals"] == s["watchdog_refusals"] == 0 and s["Torque_Enable"] == 1 for s in servos)
    finally:
        emu.stop()
