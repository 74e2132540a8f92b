"""Property: whatever robot.toml ``config check`` accepts, the control loop lives with.

Hypothesis draws [control], [safety], [splice], [gripper] and [arm.sim] values anywhere in their documented
ranges (the ends included), the config module validates them (so the documented ranges are the accepted ones),
and the control loop built from the result runs the simulated arm for a few chunks on a synthetic clock: no
exception, every splice's output bounded (at most ``MAX_BLEND_SAMPLES`` blend samples plus the chunk, starting
within a bounded delay), and a finite command sent to the arm at every tick.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from drivers.control.control_loop import MAX_RATE_HZ, MAX_TRAJECTORY_LAG, MIN_RATE_HZ, ControlLoop
from drivers.physical_ranges import MAX_ARMS, MAX_JOINT, MAX_JOINT_VELOCITY, SAFETY_LIMIT_MAX, SAFETY_LIMIT_MIN
from drivers.emulation.sim_arm import DEFAULT_WORKSPACE, MAX_TIME_CONSTANT_S
from drivers.control.splice import MAX_BLEND_SAMPLES, POLICY_RANGES
from drivers.control.trajectory import Trajectory
from xvla_edge.daemon.config import RobotConfig

CHUNK = 30  # waypoints per X-VLA chunk
#: The farthest a spliced chunk can start after its splice: speed margin * the longest move (a workspace
#: diagonal, or a joint's whole range) / the slowest speed limit.
MAX_START_DELAY_S = POLICY_RANGES["speed_margin"][1] * max(2 * 10 * 3 ** 0.5, 2 * MAX_JOINT) / SAFETY_LIMIT_MIN


def in_range(lower: float, upper: float) -> st.SearchStrategy[float]:
    return st.floats(lower, upper, allow_nan=False, allow_infinity=False)


@st.composite
def configs(draw) -> dict:
    """A robot.toml (as parsed TOML) with every loop-related key drawn within its documented range."""
    space = draw(st.sampled_from(["ee", "joint"]))
    n_arms = draw(st.integers(1, MAX_ARMS))
    safety = {name: draw(in_range(SAFETY_LIMIT_MIN, maximum)) for name, (maximum, _) in SAFETY_LIMIT_MAX.items()}
    if space == "joint":
        joints = []
        for _ in range(draw(st.integers(1, 6))):
            lower = draw(in_range(-MAX_JOINT, MAX_JOINT - 0.1))
            joints.append({"lower": lower, "upper": draw(in_range(lower + 0.1, MAX_JOINT)),
                           "max_velocity": draw(in_range(SAFETY_LIMIT_MIN, MAX_JOINT_VELOCITY))})
        safety["joint_limits"] = joints
    splice = {name: draw(in_range(lower, upper)) for name, (lower, upper, _) in POLICY_RANGES.items()}
    chunking = draw(st.sampled_from(["rtc", "blend", "replace"]))  # the splice's mode; rtc needs observation anchors
    splice.update(anchor=draw(st.sampled_from(["observation"] + ([] if chunking == "rtc" else ["arrival"]))),
                  smooth_window=draw(st.sampled_from([0, 3, 5, 99])))
    low, high = sorted(draw(st.lists(in_range(0.0, 1.0), min_size=2, max_size=2)))
    closed = draw(in_range(0.0, 0.99))
    gripper = {"mode": draw(st.sampled_from(["binary", "continuous"])), "close_below": low, "open_above": high,
               "closed_value": closed, "open_value": draw(in_range(closed + 0.01, 1.0))}
    sim = {"n_arms": n_arms, "time_constant": draw(in_range(1e-6, MAX_TIME_CONSTANT_S)),
           "initial_position": draw(st.lists(in_range(-10.0, 10.0), min_size=3, max_size=3))}
    return {"instruction": "wave", "bundle": {"path": "bundle"}, "cameras": [{"slot": 0, "source": "synthetic"}],
            "arm": {"driver": "sim", "space": space, "sim": sim},
            "control": {"rate_hz": draw(in_range(MIN_RATE_HZ, MAX_RATE_HZ)), "realtime_priority": 0,
                        "max_trajectory_lag": draw(in_range(*MAX_TRAJECTORY_LAG))},
            "safety": safety, "splice": splice, "gripper": gripper, "inference": {"chunking": chunking}}


def chunk(rng: np.random.Generator, t_obs: float, span: float, space: str, n_arms: int, limits) -> Trajectory:
    """30 random waypoints over ``span``: EE positions anywhere in the sim's workspace with random rotations, or
    a random walk of the joints within their limits."""
    gripper = rng.uniform(0, 1, (CHUNK, n_arms))
    if space == "joint":
        lower = np.array([j.lower for j in limits])
        upper = np.array([j.upper for j in limits])
        walk = np.cumsum(rng.uniform(-1, 1, (CHUNK, len(limits))), axis=0)
        return Trajectory.from_chunk(t_obs, span, joints=np.clip((lower + upper) / 2 + walk, lower, upper),
                                     gripper=gripper)
    box = DEFAULT_WORKSPACE
    position = rng.uniform(box.lower, box.upper, (CHUNK, n_arms, 3))
    rotation = Rotation.from_rotvec(rng.uniform(-1, 1, (CHUNK * n_arms, 3))).as_quat().reshape(CHUNK, n_arms, 4)
    return Trajectory.from_chunk(t_obs, span, position=position, rotation=rotation, gripper=gripper)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=configs(), seed=st.integers(0, 2**32 - 1))
def test_every_accepted_config_runs_the_loop_without_a_crash_or_a_stall(data, seed):
    config = RobotConfig.from_dict(data, Path("/robot/robot.toml"))  # raises if a documented value is refused
    loop_config = config.loop_config()
    assert loop_config.splice.blend_samples <= MAX_BLEND_SAMPLES
    now = [100.0]
    arm = config.arm_factory()(clock=lambda: now[0])
    sent = []
    send = arm.send_target
    arm.send_target = lambda target: (sent.append(target.to_vector()), send(target))[1]
    loop = ControlLoop(arm, loop_config)
    caps = loop.start()
    rng = np.random.default_rng(seed)
    period, ticks = loop_config.period, 0
    for _ in range(3):
        span = rng.uniform(1.0, 10.0)  # X-VLA domains: 1-10 s per chunk
        latency = rng.uniform(0.0, 1.2 * config.splice.max_latency_s)
        new = chunk(rng, now[0] - latency, span, caps.space, caps.n_arms, loop.limits.joint_limits)
        if loop.submit(new, now[0] - latency, now[0]):
            trajectory = loop.streamer.trajectory
            assert trajectory.n_waypoints <= MAX_BLEND_SAMPLES + 1 + CHUNK
            assert np.isfinite(trajectory.times).all() and trajectory.end - now[0] <= MAX_START_DELAY_S + span
        for _ in range(int(rng.integers(20, 120))):
            now[0] += period * (rng.uniform(1.5, 4.0) if rng.random() < 0.05 else 1.0)  # a few late ticks
            loop.tick(now[0])
            ticks += 1
    assert len(sent) == ticks  # a command at every tick (nothing stopped the loop)
    assert np.isfinite(np.array(sent)).all()
    assert set(loop.events) <= {"chunk_accepted", "chunk_delayed", "waypoints_dropped", "ticks_late",
                                "trajectory_expired", "chunk_rejected_too_late", "chunk_rejected_stale"}, loop.events
