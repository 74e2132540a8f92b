"""A 30-waypoint joint chunk through the real control loop (its own process) to the emulated Piper (another
process, behind a pty speaking slcan), then an e-stop: the arm gets its hold and nothing more within two
control periods, and stays powered where it was. Reaching the last waypoint depends on the loop keeping its
rate on a loaded machine, so the hold is checked to lie on the chunk's path, not at its end."""

from __future__ import annotations

import functools
import math
import time

import numpy as np
import pytest

from drivers.control.control_loop import LoopConfig
from drivers.control.loop_process import ControlLoopClient
from drivers.control.trajectory import Trajectory
from drivers.piper import emulator
from drivers.piper.arm import PiperArm
from tests.support.piper_bus import NEEDS_CAN

RATE_HZ = 100
SPAN_S = 0.6


@NEEDS_CAN
@pytest.mark.subprocess
def test_a_joint_chunk_streams_through_the_loop_process_and_the_estop_holds_within_two_periods():
    emu = emulator.start(emulator.PiperConfig(rate_hz=100, low_speed_every=5))
    factory = functools.partial(PiperArm, emu.port, interface="slcan", space="joint", timeout_ms=300)
    s = np.linspace(0, 1, 31)[1:]
    offsets = np.outer(np.sin(math.pi / 2 * s), [0.3, 0.3, -0.3, 0.2, -0.2, 0.3])
    joints = np.array(emulator.PiperConfig().joints) + offsets
    try:
        with ControlLoopClient(factory, LoopConfig(rate_hz=RATE_HZ, realtime_priority=0)) as loop:
            t_obs = time.monotonic()
            loop.submit(Trajectory.from_chunk(t_obs, SPAN_S, joints=joints, gripper=s[:, None]), t_obs)
            deadline = t_obs + SPAN_S + 3.0
            while time.monotonic() < deadline:  # normally ends within ~0.2 s after the chunk
                if np.abs(loop.stats().last_state.joint_positions - joints[-1]).max() < 3e-3:
                    break
                time.sleep(0.02)
            sent = time.monotonic()
            loop.estop()
            asked = time.monotonic()
            time.sleep(0.3)
            after = [t for t in emu.call("snapshot")["command_times"] if t > sent]
            final = loop.stop()
        snap = emu.call("snapshot")
        assert final is not None and final.events.get("chunk_accepted") == 1, final
        assert not {"refused", "link_lost"} & set(final.events), final.events
        assert after and after[-1] - asked <= 2 / RATE_HZ, (sent, asked, after[-3:])
        held = np.array(snap["joint_target"])  # the measured pose the e-stop held: on the chunk's path
        assert np.abs(joints - held).max(axis=1).min() < 0.02 and snap["enabled"]
        assert snap["refused"] == snap["garbage"] == 0
        assert snap["gripper_target_mm"] == pytest.approx(snap["gripper_mm"], abs=0.5)  # the gripper held too
    finally:
        emu.stop()
