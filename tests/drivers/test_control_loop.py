"""The control loop in its own process, with the simulated arm built inside it.

No timing assertions here (see benchmarks/test_control_loop_timing.py): the checks are on what the arm
did. ``ExplodingArm`` lives in this module, so the spawned child imports it by module name; that relies on
pytest's default (prepend) import mode putting this directory on ``sys.path``.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from drivers.arm import Target
from drivers.control_loop import LoopConfig, LoopStats
from drivers.loop_process import ControlLoopClient, ControlLoopError
from drivers.interpolation import TrajectorySampler
from drivers.sim_arm import SimArm
from drivers.trajectory import Trajectory, TrajectoryError

START = np.array([0.3, 0.0, 0.3])


class ExplodingArm(SimArm):
    """Raises an unexpected error after some reads; records that it was told to hold."""

    def __init__(self, marker: str, reads: int) -> None:
        super().__init__()
        self.marker = Path(marker)
        self.reads_left = reads

    def read_state(self):
        self.reads_left -= 1
        if self.reads_left < 0:
            raise RuntimeError("boom: simulated bug")
        return super().read_state()

    def hold(self) -> None:
        self.marker.write_text("held")
        super().hold()


def wait_for(client: ControlLoopClient, predicate, timeout: float = 10.0) -> LoopStats:
    deadline = time.monotonic() + timeout
    stats = client.stats()
    while not predicate(stats):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s; last stats: {stats}")
        time.sleep(0.02)
        stats = client.stats()
    return stats


def chunk(t_obs: float, span: float = 1.0) -> Trajectory:
    pos = np.linspace(START, [0.4, 0.05, 0.35], 31)[1:]
    rot = Rotation.from_rotvec(np.outer(np.linspace(0, 0.4, 31)[1:], [0, 0, 1])).as_quat()
    grip = np.r_[np.ones(20), np.zeros(10)]
    return Trajectory.from_chunk(t_obs, span, position=pos, rotation=rot, gripper=grip)


@pytest.mark.parametrize("rate_hz", [100, 500])
def test_arm_follows_a_30_waypoint_chunk(rate_hz):
    config = LoopConfig(rate_hz=rate_hz, trace_length=5 * rate_hz)
    with ControlLoopClient(functools.partial(SimArm, time_constant=0.02), config) as client:
        assert client.capabilities.space == "ee"
        t_obs = time.monotonic()
        traj = chunk(t_obs)
        client.submit(traj, t_obs)
        wait_for(client, lambda s: s.mode == "holding")
        time.sleep(0.5)  # the gripper command is rate-limited, the sim lags behind it
        stats = client.stats()
        trace = client.trace()
        final = client.stop()
    assert not client.running
    assert stats.events["chunk_accepted"] == 1 and 0 <= stats.last_latency < 1.0
    assert stats.timing["ticks"] > 0 and "SCHED_" in stats.scheduler
    assert final is not None and final.mode == "holding"
    state = stats.last_state
    np.testing.assert_allclose(state.position[0], [0.4, 0.05, 0.35], atol=1e-3)
    assert Rotation.from_quat(state.quaternion).magnitude()[0] == pytest.approx(0.4, abs=0.01)
    assert state.gripper[0] == pytest.approx(0.0, abs=1e-3)
    # while tracking: commanded close to the chunk, measured close to commanded (first-order lag)
    tracking = np.array([m == "tracking" for m in trace["mode"]])
    sampler = TrajectorySampler(traj)
    for t, cmd, meas in zip(trace["time"][tracking], trace["command"][tracking], trace["measured"][tracking]):
        if t >= traj.start:
            # a late tick (loaded CI machine) lets the speed-limited command trail by about one tick
            assert np.linalg.norm(cmd[:3] - sampler.position(t)[0]) < 1e-2
        assert np.linalg.norm(meas[:3] - cmd[:3]) < 1e-2


def test_estop_link_loss_and_reconnect_through_the_client():
    down = mp.get_context("spawn").Event()
    config = LoopConfig(rate_hz=200, realtime_priority=0)
    with ControlLoopClient(functools.partial(SimArm, link_down=down), config) as client:
        client.submit(chunk(time.monotonic(), span=3.0), time.monotonic())
        wait_for(client, lambda s: s.mode == "tracking")
        client.estop()
        stats = wait_for(client, lambda s: s.mode == "estopped")
        assert stats.last_state.faults != 0
        client.submit(chunk(time.monotonic()), time.monotonic())
        wait_for(client, lambda s: s.events.get("chunk_rejected_estopped") == 1)
        time.sleep(0.1)
        assert client.stats().mode == "estopped"  # latched
        client.clear_estop()
        wait_for(client, lambda s: s.mode == "idle")
        down.set()
        stats = wait_for(client, lambda s: s.mode == "link_lost")
        assert "link lost" in stats.last_error
        down.clear()
        client.reconnect()
        wait_for(client, lambda s: s.mode == "idle")
        client.submit(chunk(time.monotonic()), time.monotonic())
        wait_for(client, lambda s: s.mode == "tracking")


def test_failure_to_start_is_reported():
    client = ControlLoopClient(functools.partial(SimArm, initial_position=(np.nan, 0.0, 0.0)))
    with pytest.raises(ControlLoopError, match="no finite measured ee pose"):
        client.start()
    assert not client.running
    with pytest.raises(ControlLoopError, match="is the arm factory picklable"):
        ControlLoopClient(lambda: SimArm()).start()


def test_an_exception_in_the_loop_holds_the_arm(tmp_path):
    marker = tmp_path / "held"
    client = ControlLoopClient(functools.partial(ExplodingArm, str(marker), 20), LoopConfig(realtime_priority=0))
    client.start()
    deadline = time.monotonic() + 10
    while client.running and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(ControlLoopError, match="boom: simulated bug"):
        client.stats()
    assert marker.read_text() == "held"
    client.stop()


def test_submit_is_checked_against_the_arm_before_sending():
    with ControlLoopClient(SimArm, LoopConfig(realtime_priority=0)) as client:
        with pytest.raises(TrajectoryError, match="trajectory is 'joint' with 1 arm\\(s\\) and 6 joint\\(s\\)"):
            client.submit(Trajectory.joint([1.0, 2.0], np.zeros((2, 6)), [1.0, 1.0]), 0.0)
        with pytest.raises(TrajectoryError, match="obs_timestamp must be finite"):
            client.submit(chunk(0.0), float("nan"))
        assert client.stats().events.get("chunk_accepted") is None
        np.testing.assert_allclose(client.stats().last_command.position[0], START)
        assert isinstance(client.stats().last_command, Target)
