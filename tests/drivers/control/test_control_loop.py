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
from drivers.control.control_loop import ControlLoop, LoopConfig, LoopStats
from drivers.control.interpolation import TrajectorySampler
from drivers.control.loop_process import ControlLoopClient, ControlLoopError
from drivers.control.splice import SplicePolicy
from drivers.control.trajectory import Trajectory, TrajectoryError
from drivers.emulation.sim_arm import SimArm

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


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


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
    """Tracking geometry, on an injected clock: every tick lands on its deadline, whatever the machine's load
    (tick timing under load is benchmarks/test_tick_under_load.py's business)."""
    clock = FakeClock()
    loop = ControlLoop(SimArm(time_constant=0.02, clock=clock), LoopConfig(rate_hz=rate_hz, trace_length=5 * rate_hz))
    assert loop.start().space == "ee"
    t_obs = clock.now
    traj = chunk(t_obs)
    clock.now += 0.003  # the chunk arrives 3 ms after its observation
    assert loop.submit(traj, t_obs, clock.now)
    for _ in range(int(1.5 * rate_hz)):  # the 1 s chunk, then 0.5 s holding (the gripper is rate-limited)
        clock.now += 1.0 / rate_hz
        loop.tick(clock.now)
    stats = loop.stats({}, "fake clock")
    trace = loop.trace()
    assert stats.mode == "holding" and stats.events["chunk_accepted"] == 1
    assert stats.last_latency == pytest.approx(0.003)
    assert "ticks_late" not in stats.events
    state = stats.last_state
    np.testing.assert_allclose(state.position[0], [0.4, 0.05, 0.35], atol=1e-3)
    assert Rotation.from_quat(state.quaternion).magnitude()[0] == pytest.approx(0.4, abs=0.01)
    assert state.gripper[0] == pytest.approx(0.0, abs=1e-3)
    # while tracking: commanded close to the chunk, measured close to commanded (first-order lag)
    tracking = np.array([m == "tracking" for m in trace["mode"]])
    assert tracking.sum() >= 0.95 * rate_hz
    sampler = TrajectorySampler(traj)
    for t, cmd, meas in zip(trace["time"][tracking], trace["command"][tracking], trace["measured"][tracking]):
        if t >= traj.start:
            assert np.linalg.norm(cmd[:3] - sampler.position(t)[0]) < 1e-2
        assert np.linalg.norm(meas[:3] - cmd[:3]) < 1e-2


def line_chunk(t_obs: float, x0: float, speed: float = 0.1) -> Trajectory:
    """30 waypoints over 1 s along x at ``speed`` from ``x0`` (at ``t_obs``), gripper open."""
    x = x0 + speed * np.arange(1, 31) / 30
    position = np.column_stack([x, np.zeros(30), np.full(30, 0.3)])
    return Trajectory.from_chunk(t_obs, 1.0, position=position, rotation=np.tile([0.0, 0.0, 0.0, 1.0], (30, 1)),
                                 gripper=np.ones(30))


def test_a_chunk_spliced_between_ticks_keeps_the_motion_steady():
    """A chunk continuing the executing motion arrives 3 ms after a tick: the command keeps its speed through
    the splice (the new trajectory starts from the command at the time it was sent), and the envelope changes
    nothing. Splicing from the arrival time instead would stand still for 3 ms and then catch up."""
    clock = FakeClock()
    loop = ControlLoop(SimArm(initial_position=(0.3, 0.0, 0.3), clock=clock), LoopConfig(rate_hz=200))
    loop.start()
    t0 = clock.now
    assert loop.submit(line_chunk(t0, 0.3), t0, t0)
    xs = []
    for k in range(1, 200):
        clock.now = t0 + k * 0.005
        if k == 60:
            clamps_before = loop.interventions.as_dict()["linear_accel"]  # the start from rest is clamped
        if k == 100:  # 3 ms after tick 99: a chunk observed 50 ms ago, on the line the command is moving along
            arrival, t_obs = clock.now - 0.002, clock.now - 0.052
            x_obs = xs[-1] - 0.1 * (clock.now - 0.005 - t_obs)
            assert loop.submit(line_chunk(t_obs, x_obs), t_obs, arrival)
        loop.tick(clock.now)
        xs.append(loop.command.position[0, 0])
    speed = np.diff(xs)[60:] / 0.005  # steady state, the splice included
    np.testing.assert_allclose(speed, 0.1, atol=0.002)
    assert loop.interventions.as_dict()["linear_accel"] == clamps_before


@pytest.mark.subprocess
def test_the_loop_process_runs_a_chunk_to_its_end():
    """The same chunk through the control-loop process at its real rate: where the arm ends, not timing."""
    config = LoopConfig(rate_hz=200, max_trajectory_lag=10.0)  # a loaded machine runs the chunk late, not stale
    with ControlLoopClient(functools.partial(SimArm, time_constant=0.02), config) as client:
        assert client.capabilities.space == "ee"
        t_obs = time.monotonic()
        client.submit(chunk(t_obs), t_obs)
        stats = wait_for(client, lambda s: s.mode == "holding" and s.last_state.gripper[0] < 1e-3)
        final = client.stop()
    assert not client.running
    assert stats.events["chunk_accepted"] == 1 and 0 <= stats.last_latency < 1.0
    assert stats.timing["ticks"] > 0 and "SCHED_" in stats.scheduler
    assert final is not None and final.mode == "holding"
    np.testing.assert_allclose(stats.last_state.position[0], [0.4, 0.05, 0.35], atol=1e-3)
    assert Rotation.from_quat(stats.last_state.quaternion).magnitude()[0] == pytest.approx(0.4, abs=0.01)


@pytest.mark.subprocess
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


@pytest.mark.subprocess
def test_failure_to_start_is_reported():
    client = ControlLoopClient(functools.partial(SimArm, initial_position=(np.nan, 0.0, 0.0)))
    with pytest.raises(ControlLoopError, match="no finite measured ee pose"):
        client.start()
    assert not client.running
    with pytest.raises(ControlLoopError, match="is the arm factory picklable"):
        ControlLoopClient(lambda: SimArm()).start()


@pytest.mark.subprocess
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


@pytest.mark.subprocess
def test_submit_is_checked_against_the_arm_before_sending():
    with ControlLoopClient(SimArm, LoopConfig(realtime_priority=0)) as client:
        with pytest.raises(TrajectoryError, match="trajectory is 'joint' with 1 arm\\(s\\) and 6 joint\\(s\\)"):
            client.submit(Trajectory.joint([1.0, 2.0], np.zeros((2, 6)), [1.0, 1.0]), 0.0)
        with pytest.raises(TrajectoryError, match="obs_timestamp must be finite"):
            client.submit(chunk(0.0), float("nan"))
        assert client.stats().events.get("chunk_accepted") is None
        np.testing.assert_allclose(client.stats().last_command.position[0], START)
        assert isinstance(client.stats().last_command, Target)


@pytest.mark.parametrize("window, at_most", [(0, None), (9, 0.05)])
def test_a_jittery_chunk_is_clamped_on_most_ticks_unless_smoothed(window, at_most):
    """A chunk along a line at 0.1 m/s whose waypoints zig-zag ±1 mm across it (a learnt policy's chunk):
    the interpolator goes through every waypoint, the zig-zag asks for accelerations past the 5 m/s² limit
    and the envelope clamps most ticks. Smoothed over 9 waypoints the same chunk runs nearly unclamped,
    and the arm stays on the line."""
    clock = FakeClock()
    config = LoopConfig(rate_hz=200, splice=SplicePolicy(smooth_window=window))
    loop = ControlLoop(SimArm(initial_position=(0.3, 0.0, 0.3), time_constant=0.02, clock=clock), config)
    loop.start()
    t0 = clock.now
    x = 0.3 + 0.1 * np.arange(1, 31) / 30
    y = 0.001 * (-1.0) ** np.arange(1, 31)
    rough = Trajectory.from_chunk(t0, 1.0, position=np.column_stack([x, y, np.full(30, 0.3)]),
                                  rotation=np.tile([0.0, 0.0, 0.0, 1.0], (30, 1)), gripper=np.ones(30))
    assert loop.submit(rough, t0, t0)
    ys = []
    for k in range(1, 201):
        clock.now = t0 + k * 0.005
        loop.tick(clock.now)
        ys.append(loop.command.position[0, 1])
    clamped = loop.interventions.as_dict()["linear_accel"] / 200
    if at_most is None:
        assert clamped > 0.5
    else:
        assert clamped <= at_most and np.abs(ys).max() < 0.0006  # within 0.6 mm of the line (edges of the fit)
