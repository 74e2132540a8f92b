"""A 30-waypoint chunk through the real control loop (its own process) to the xvla-serial emulator (another
process) over a pty, at 100 and 500 Hz. Checks what the controller received, not timing."""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from drivers.control.control_loop import LoopConfig
from drivers.control.loop_process import ControlLoopClient
from drivers.control.trajectory import Trajectory
from drivers.xvla_serial import emulator
from drivers.xvla_serial.arm import XvlaSerialArm

CONFIG = emulator.ControllerConfig(n_joints=6, n_arms=1, timeout_range_ms=(20, 10_000))  # long deadmans allowed
SPAN_S = 0.6


def chunk(space: str, t_obs: float) -> tuple[Trajectory, np.ndarray]:
    """The chunk and its last waypoint in wire order (joints + gripper, or xyz + quaternion + gripper)."""
    s = np.linspace(0, 1, 31)[1:]
    gripper = s[:, None]
    if space == "joint":
        joints = np.outer(0.6 * np.sin(np.pi / 2 * s), [1, -1, 1, -1, 1, -1])
        return Trajectory.from_chunk(t_obs, SPAN_S, joints=joints, gripper=gripper), np.r_[joints[-1], 1.0]
    position = np.array(CONFIG.home_ee[:3]) + np.outer(s, [0.1, -0.1, 0.1])
    quat = Rotation.from_rotvec(np.outer(0.3 * s, [0, 0, 1])).as_quat()
    return Trajectory.from_chunk(t_obs, SPAN_S, position=position, rotation=quat, gripper=gripper), np.r_[
        position[-1], quat[-1], 1.0
    ]


@pytest.mark.parametrize(("space", "rate_hz"), [("joint", 100), ("joint", 500), ("ee", 100), ("ee", 500)])
@pytest.mark.subprocess
def test_control_loop_streams_a_chunk(space: str, rate_hz: float) -> None:
    """Every frame the loop sent arrived and every TARGET was acknowledged; the arm came to rest on the last
    waypoint. On a loaded machine ticks are missed and the trajectory runs late (never ahead of the
    command, see drivers/control/streamer.py); the generous lag allowance keeps it from being dropped as stale."""
    emu = emulator.start(CONFIG, seed=2)
    factory = functools.partial(XvlaSerialArm, emu.port, space=space, timeout_ms=10_000, reply_timeout_s=0.5)
    try:
        config = LoopConfig(rate_hz=rate_hz, realtime_priority=0, max_trajectory_lag=10.0)
        with ControlLoopClient(factory, config) as loop:
            t_obs = time.monotonic()
            trajectory, last = chunk(space, t_obs)
            loop.submit(trajectory, t_obs)
            deadline = t_obs + 11 * SPAN_S + 3.0
            arrived = False
            while time.monotonic() < deadline and not arrived:  # normally ends within ~0.2 s after the chunk
                arrived = np.abs(loop.stats().last_state.to_vector(space) - last).max() < 2e-3
                time.sleep(0.02)
            final = loop.stop()
        assert arrived, f"the arm did not reach the last waypoint: {final.last_state} vs {last}"
        np.testing.assert_allclose(final.last_command.to_vector(), last, atol=1e-9)  # the command ends on it
        assert final is not None and final.events.get("chunk_accepted") == 1
        assert not {"refused", "link_lost"} & set(final.events), final.events
        snap = emu.call("snapshot")
        assert snap["seq_gaps"] == 0 and snap["nacks"] == [], snap["nacks"]  # every frame arrived, every TARGET acked
        assert snap["accepted"] >= 30  # the loop keeps commanding (holding) after the chunk
        assert np.allclose(snap["last_target"], final.last_command.to_vector(), atol=1e-6)
        assert all(abs(p) <= CONFIG.joint_limit_rad for p in snap["positions"])
    finally:
        emu.stop()
