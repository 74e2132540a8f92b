"""The seam of a hand-over (:mod:`drivers.control.seam`): the command's mean velocity over the 50 ms after minus the
50 ms before, against traces whose velocities are known."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.control.seam import SEAM_WINDOW_S, SeamMeter, seam

RATE = 200.0


def ee_trace(velocity_before, velocity_after, t_switch: float, seconds: float = 1.0, n_arms: int = 1) -> dict:
    """Commands of ``n_arms`` EE arms moving at one velocity [3] until ``t_switch``, another after; quaternion and
    gripper channels (which do not count) changing wildly."""
    t = np.arange(0, seconds, 1 / RATE)
    v0, v1 = np.asarray(velocity_before, float), np.asarray(velocity_after, float)
    position = np.where(t[:, None] < t_switch, t[:, None] * v0, t_switch * v0 + (t - t_switch)[:, None] * v1)
    rng = np.random.default_rng(0)
    rows = []
    for arm in range(n_arms):
        q = rng.normal(size=(len(t), 4))
        rows.append(np.concatenate([position * (arm + 1), q / np.linalg.norm(q, axis=1, keepdims=True),
                                    rng.uniform(0, 1, (len(t), 1))], axis=1))
    return {"time": t, "command": np.concatenate(rows, axis=1)}


def test_a_velocity_step_is_its_size_and_a_constant_velocity_none():
    trace = ee_trace([0.1, 0, 0], [0, 0.1, 0], t_switch=0.5)
    got = seam(trace["time"], trace["command"], 0.5, space="ee", n_arms=1)
    assert got == pytest.approx(np.hypot(0.1, 0.1), rel=1e-9)  # |(0, 0.1, 0) - (0.1, 0, 0)|
    assert seam(trace["time"], trace["command"], 0.25, space="ee", n_arms=1) == pytest.approx(0.0, abs=1e-12)
    # a step 20 ms before the hand-over counts in part: the window's mean velocities share it
    early = seam(trace["time"], trace["command"], 0.52, space="ee", n_arms=1)
    assert early == pytest.approx(np.hypot(0.1, 0.1) * (SEAM_WINDOW_S - 0.02) / SEAM_WINDOW_S, rel=1e-9)


def test_the_largest_arm_counts_and_joints_by_the_largest_joint():
    trace = ee_trace([0.1, 0, 0], [0.0, 0, 0], t_switch=0.5, n_arms=2)  # arm 2 moves twice as fast
    assert seam(trace["time"], trace["command"], 0.5, space="ee", n_arms=2) == pytest.approx(0.2, rel=1e-9)
    t = np.arange(0, 1, 1 / RATE)
    joints = np.stack([0.3 * t, np.where(t < 0.5, 0.0, -(t - 0.5) * 0.7)], axis=1)  # joint 2 starts at -0.7 rad/s
    command = np.concatenate([joints, np.full((len(t), 1), 0.5)], axis=1)  # 2 joints, 1 gripper
    assert seam(t, command, 0.5, space="joint", n_arms=1) == pytest.approx(0.7, rel=1e-9)


def test_no_seam_outside_the_trace_or_where_nothing_was_sent():
    trace = ee_trace([0.1, 0, 0], [0, 0.1, 0], t_switch=0.5)
    t, c = trace["time"], trace["command"].copy()
    assert seam(t, c, 0.02, space="ee", n_arms=1) is None  # the window starts before the trace
    assert seam(t, c, t[-1] - 0.01, space="ee", n_arms=1) is None
    c[np.argmin(np.abs(t - 0.53))] = np.nan  # a tick that sent nothing (held, e-stopped)
    assert seam(t, c, 0.5, space="ee", n_arms=1) is None
    assert seam(t, c, 0.2, space="ee", n_arms=1) == pytest.approx(0.0, abs=1e-12)


def test_the_meter_measures_each_hand_over_once_when_its_window_is_covered():
    full = ee_trace([0.1, 0, 0], [0, 0.1, 0], t_switch=0.5)
    meter = SeamMeter("ee", 1)
    meter.handover(0.5)
    meter.handover(0.01)  # its window starts before the trace: dropped
    part = {key: value[: int(0.52 * RATE)] for key, value in full.items()}
    assert meter.collect(part) == []  # 0.5 + 50 ms not covered yet: waits
    assert meter.collect(full) == [pytest.approx(np.hypot(0.1, 0.1), rel=1e-9)]
    assert meter.collect(full) == []  # measured once
