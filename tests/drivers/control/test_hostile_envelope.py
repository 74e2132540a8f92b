"""Hostile input to the safety path (issue 14, section 1), attack first.

The attack: a chunk with one finite but absurd waypoint (x = 1e200 m) passed trajectory validation, the
envelope's arithmetic overflowed and emitted NaN targets without counting a rejection, and every later good
chunk was refused until a restart. What must hold instead: validation refuses the waypoint by name; a chunk
that skipped validation (a Trajectory unpickled in the control-loop process is not re-validated) is refused
and counted at the splice, the arm holds, no NaN reaches it, and the next good chunk is tracked; the envelope
itself never emits a non-finite command, whatever it is given (a property test over 100,000 inputs).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from drivers.arm import ArmConfigError, Box, JointLimit, Target
from drivers.control.control_loop import ControlLoop, LoopConfig
from drivers.control.interpolation import GripperPolicy
from drivers.control.safety import EnvelopeState, InterventionCounter, ReferenceVelocity, SafetyLimits, enforce
from drivers.control.splice import SplicePolicy, SpliceRejected
from drivers.control.streamer import Streamer
from drivers.control.trajectory import Trajectory, TrajectoryError
from drivers.emulation.sim_arm import SimArm

RATE_HZ = 100.0
DT = 1 / RATE_HZ
IDENTITY = np.array([0.0, 0.0, 0.0, 1.0])
BOX = Box((-0.5, -0.5, 0.0), (0.5, 0.5, 1.0))
JOINTS = (JointLimit(-1.0, 1.0, 1.0), JointLimit(-2.0, 2.0, 2.0), JointLimit(-3.0, 3.0, 4.0))
#: Hostile scalars: non-finite, the largest finite, absurd, denormal and signed zero.
HOSTILE = np.array([np.nan, np.inf, -np.inf, 1e308, -1e308, 1.7976931348623157e308, 1e200, -1e200, 5e-324,
                    -5e-324, 1e-310, 2.2250738585072014e-308, 0.0, -0.0])
#: Time steps ``enforce`` must survive without emitting anything unsafe (denormal, tiny, huge), and ones it
#: must refuse as a programming error (the control loop never passes them).
ODD_DT = np.array([5e-324, 1e-310, 1e-300, 1e-12, 1e3, 1e300, 1.7976931348623157e308])
BAD_DT = np.array([0.0, -0.0, -DT, -1e308, np.nan, np.inf, -np.inf])
FINITE_HOSTILE = HOSTILE[np.isfinite(HOSTILE)]


def absurd(position: np.ndarray) -> np.ndarray:
    """``position`` [30, 3] with waypoint 10 at x = 1e200 m: the attack."""
    out = np.array(position, dtype=np.float64)
    out[10, 0] = 1e200
    return out


def unvalidated(trajectory: Trajectory, **values: np.ndarray) -> Trajectory:
    """``trajectory`` with ``values`` swapped in, past validation, as an unpickled Trajectory arrives in the
    control-loop process (pickle does not call ``__post_init__``)."""
    out = pickle.loads(pickle.dumps(trajectory))
    for name, value in values.items():
        object.__setattr__(out, name, np.asarray(value, dtype=np.float64).reshape(getattr(out, name).shape))
    return out


def test_the_absurd_waypoint_is_refused_by_name():
    pos = absurd(np.linspace([0.3, 0.0, 0.3], [0.35, 0.05, 0.3], 30))
    with pytest.raises(TrajectoryError, match=r"position: waypoint 10 \(arm 0\) x = 1e\+200 m is outside ±10 m"):
        Trajectory.from_chunk(100.0, 1.0, position=pos, rotation=np.tile(IDENTITY, (30, 1)), gripper=np.ones(30))


class Rig:
    """A ControlLoop on a SimArm sharing one fake clock, recording every target sent to the arm."""

    def __init__(self) -> None:
        self.t = 100.0
        self.arm = SimArm(clock=lambda: self.t, time_constant=0.02)
        self.loop = ControlLoop(self.arm, LoopConfig(rate_hz=RATE_HZ))
        self.loop.start()
        self.sent: list = []
        send = self.arm.send_target

        def recording(target: Target) -> None:
            self.sent.append(target.to_vector())
            send(target)

        self.arm.send_target = recording

    def run(self, seconds: float) -> np.ndarray:
        """Tick for ``seconds``; the targets sent meanwhile [K, 8]."""
        first = len(self.sent)
        for _ in range(round(seconds * RATE_HZ)):
            self.t += DT
            self.loop.tick(self.t)
        return np.array(self.sent[first:])

    def chunk(self, end, span: float = 1.0) -> Trajectory:
        pos = np.linspace(self.loop.command.position[0], end, 31)[1:]
        return Trajectory.from_chunk(self.t, span, position=pos, rotation=np.tile(IDENTITY, (30, 1)),
                                     gripper=np.ones(30))


def test_the_attack_through_the_control_loop_holds_counts_and_recovers():
    rig = Rig()
    rig.run(0.05)
    held = rig.loop.command.to_vector()
    bad = rig.chunk((0.35, 0.05, 0.3))
    bad = unvalidated(bad, position=absurd(bad.position[:, 0]))
    assert not rig.loop.submit(bad, rig.t, rig.t)
    assert rig.loop.events["chunk_rejected_invalid"] == 1 and "x = 1e+200 m" in rig.loop.last_error
    sent = rig.run(1.2)  # the attack emitted NaN on 100 of these 120 ticks
    assert len(sent) == 120 and np.isfinite(sent).all()
    np.testing.assert_array_equal(sent, np.tile(held, (120, 1)))  # the arm holds
    end = (0.35, 0.05, 0.3)
    assert rig.loop.submit(rig.chunk(end), rig.t, rig.t)  # no sticky failure: the next good chunk is taken
    sent = rig.run(1.5)
    assert np.isfinite(sent).all() and rig.loop.watchdog.mode.value == "holding"
    np.testing.assert_allclose(rig.loop.command.position[0], end, atol=1e-9)
    np.testing.assert_allclose(rig.arm.read_state().position[0], end, atol=1e-3)
    assert rig.loop.events["chunk_accepted"] == 1 and rig.loop.events.get("refused", 0) == 0


@pytest.mark.parametrize(
    "position, reference, dt, rejected",
    [
        ((1e200, 0.0, 0.5), (0.0, 0.0, 0.0), DT, None),  # the attack's waypoint reaches the envelope: clipped
        ((0.1, 0.0, 0.5), (1e300, 0.0, 0.0), DT, None),  # the trajectory's velocity around it: clipped
        ((0.1, 0.0, 0.5), (-1e308, 1e308, 1e308), DT, None),
        ((0.1, 0.0, 0.5), (0.0, 0.0, 0.0), 5e-324, "nonfinite"),  # a denormal time step underflows
        ((0.1, 0.0, 0.5), (1e3, 0.0, 0.0), 1e300, "nonfinite"),  # a huge one overflows
    ],
)
def test_the_envelope_arithmetic_cannot_overflow(position, reference, dt, rejected):
    previous = Target.ee([[0.0, 0.0, 0.5]], [IDENTITY], [1.0])
    state = EnvelopeState(previous, np.array([[0.2, 0.0, 0.0]]), np.array([[0.0, 0.0, 0.5]]))
    limits = SafetyLimits(workspaces=(BOX,))
    result = enforce(Target.ee([position], [IDENTITY], [1.0]), state, dt=dt, limits=limits,
                     reference=ReferenceVelocity(np.array([reference]), np.array([reference])))
    counter = InterventionCounter()
    counter.add(result)
    out = result.target
    assert np.isfinite(out.to_vector()).all()
    assert np.isfinite(result.state.velocity).all() and np.isfinite(result.state.angular_velocity).all()
    assert result.rejected == rejected
    if rejected:
        np.testing.assert_array_equal(out.to_vector(), previous.to_vector())
        assert counter.as_dict()["rejected_nonfinite"] == 1
    else:
        assert np.all(out.position >= np.array(BOX.lower)) and np.all(out.position <= np.array(BOX.upper))
        assert np.linalg.norm(out.position - previous.position) <= limits.max_linear_speed * dt * (1 + 1e-9)


def test_a_bad_time_step_is_refused_as_a_programming_error():
    state = EnvelopeState.at_rest(Target.ee([[0.0, 0.0, 0.5]], [IDENTITY], [1.0]))
    for dt in BAD_DT:
        with pytest.raises(ArmConfigError, match="enforce: dt must be finite and > 0 s"):
            enforce(state.target, state, dt=float(dt), limits=SafetyLimits(workspaces=(BOX,)))


# -- the property test ----------------------------------------------------------------------------------
#
# A seeded generator and a plain loop over ``enforce`` (hypothesis' per-example overhead would not fit
# 100,000 cases into the default suite): inputs are drawn in batches of one sequence (100 calls carrying
# the envelope state), outputs recorded and checked vectorised at the end.

SEQUENCE = 100
#: Per case, cycling: the probability of each input element being a hostile scalar.
P_HOSTILE = np.resize([0.0, 0.02, 0.1, 0.5], SEQUENCE)


def noisy(rng: np.random.Generator, values: np.ndarray, p: np.ndarray, pool: np.ndarray = HOSTILE) -> np.ndarray:
    """``values`` [B, ...] with each element of case ``b`` replaced by a scalar from ``pool`` with
    probability ``p[b]``."""
    out = np.array(values, dtype=np.float64)
    hit = rng.random(out.shape) < np.reshape(p, (-1,) + (1,) * (out.ndim - 1))
    out[hit] = rng.choice(pool, int(hit.sum()))
    return out


def unit_quaternions(rng: np.random.Generator, *shape: int) -> np.ndarray:
    q = rng.normal(size=shape + (4,))
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def time_steps(rng: np.random.Generator, n: int) -> np.ndarray:
    """Control-loop steps (0.5-2 periods of 50-500 Hz) or, one time in 50, an odd one."""
    dt = rng.uniform(0.001, 0.04, n)
    odd = rng.random(n) < 0.02
    dt[odd] = rng.choice(ODD_DT, int(odd.sum()))
    return dt


def references(rng: np.random.Generator, linear: tuple, angular: tuple, p: np.ndarray, pool: np.ndarray) -> list:
    """One reference per case: one in 10 None, one in 20 mis-shaped, the rest plausible with hostile
    elements from ``pool``."""
    lin, ang = noisy(rng, rng.normal(0, 0.5, linear), p, pool), noisy(rng, rng.normal(0, 1.0, angular), p, pool)
    out: list = [ReferenceVelocity(v, w) for v, w in zip(lin, ang)]
    kind = rng.random(len(out))
    for i in np.flatnonzero(kind < 0.15):
        out[i] = None if kind[i] < 0.1 else ReferenceVelocity(np.zeros(7), np.zeros((1, 2)))
    return out


def quaternion_angle(q_from: np.ndarray, q_to: np.ndarray) -> np.ndarray:
    """Rotation angles [...] between unit quaternions [..., 4] (x, y, z, w)."""
    x1, y1, z1, w1 = np.moveaxis(q_to, -1, 0)
    x0, y0, z0, w0 = np.moveaxis(q_from * [-1, -1, -1, 1], -1, 0)
    vec = np.stack([w1 * x0 + x1 * w0 + y1 * z0 - z1 * y0, w1 * y0 - x1 * z0 + y1 * w0 + z1 * x0,
                    w1 * z0 + x1 * y0 - y1 * x0 + z1 * w0], axis=-1)
    w = w1 * w0 - x1 * x0 - y1 * y0 - z1 * z0
    return 2 * np.arctan2(np.linalg.norm(vec, axis=-1), np.abs(w))


class Record:
    """Every (previous command, result, dt) of one target space, checked together at the end."""

    def __init__(self) -> None:
        self.cases: list = []

    def add(self, previous: Target, result, dt: float) -> None:
        self.cases.append((previous, result, dt))

    def arrays(self):
        previous = np.array([p.to_vector() for p, _, _ in self.cases])
        out = np.array([r.target.to_vector() for _, r, _ in self.cases])
        velocity = np.array([np.r_[r.state.velocity.ravel(), r.state.angular_velocity.ravel()]
                             for _, r, _ in self.cases])
        # capped so that the bounds below stay finite for the odd dt = 1.8e308 (a rejection: a zero step)
        dt = np.minimum(np.array([dt for _, _, dt in self.cases])[:, None], 1e300)
        rejected = np.array([r.rejected is not None for _, r, _ in self.cases])
        assert np.isfinite(out).all() and np.isfinite(velocity).all()  # never a non-finite command
        np.testing.assert_array_equal(out[rejected], previous[rejected])  # a rejection holds
        return previous, out, dt


def check_ee(record: Record, limits: SafetyLimits, n_arms: int) -> None:
    previous, out, dt = record.arrays()
    prev, new = previous.reshape(-1, n_arms, 8), out.reshape(-1, n_arms, 8)
    lower, upper = limits.box_arrays
    assert (new[..., :3] >= lower - 1e-12).all() and (new[..., :3] <= upper + 1e-12).all()
    step = np.linalg.norm(new[..., :3] - prev[..., :3], axis=-1)
    assert (step <= limits.max_linear_speed * dt * (1 + 1e-9) + 1e-15).all()
    np.testing.assert_allclose(np.linalg.norm(new[..., 3:7], axis=-1), 1.0, atol=1e-9)
    angle = quaternion_angle(prev[..., 3:7], new[..., 3:7])
    assert (angle <= limits.max_angular_speed * dt * (1 + 1e-6) + 1e-12).all()
    grip = new[..., 7]
    assert ((grip >= 0) & (grip <= 1)).all()
    assert (np.abs(grip - prev[..., 7]) <= limits.max_gripper_rate * dt * (1 + 1e-9) + 1e-15).all()


def check_joint(record: Record, limits: SafetyLimits) -> None:
    previous, out, dt = record.arrays()
    lower, upper, max_velocity = limits.joint_arrays
    n = lower.size
    assert (out[:, :n] >= lower).all() and (out[:, :n] <= upper).all()
    assert (np.abs(out[:, :n] - previous[:, :n]) <= max_velocity * dt * (1 + 1e-9) + 1e-15).all()
    assert ((out[:, n:] >= 0) & (out[:, n:] <= 1)).all()
    assert (np.abs(out[:, n:] - previous[:, n:]) <= limits.max_gripper_rate * dt * (1 + 1e-9) + 1e-15).all()


def ee_state(rng: np.random.Generator, limits: SafetyLimits, n_arms: int) -> EnvelopeState:
    """A safe command inside the box, moving within the speed limits."""
    lower, upper = limits.box_arrays
    target = Target.ee(rng.uniform(lower, upper), unit_quaternions(rng, n_arms), rng.random(n_arms))
    v, w = rng.normal(size=(n_arms, 3)), rng.normal(size=(n_arms, 3))
    v *= limits.max_linear_speed * rng.random((n_arms, 1)) / np.linalg.norm(v, axis=1, keepdims=True)
    w *= limits.max_angular_speed * rng.random((n_arms, 1)) / np.linalg.norm(w, axis=1, keepdims=True)
    return EnvelopeState(target, v, w)


def run_ee(rng: np.random.Generator, n_calls: int, n_arms: int, record: Record, counter: InterventionCounter) -> None:
    """``n_calls`` EE calls with ``n_arms`` arms. One arm: hostile scalars in every field. Several arms (each
    an independent input to the per-arm arithmetic): finite hostile scalars in positions and references
    only, since an absurd quaternion or gripper rejects the whole call and would waste the other arms."""
    limits = SafetyLimits(workspaces=(BOX,) * n_arms)
    lower, upper = limits.box_arrays
    pool = HOSTILE if n_arms == 1 else FINITE_HOSTILE
    for _ in range(n_calls // SEQUENCE):
        state = ee_state(rng, limits, n_arms)
        pos = noisy(rng, rng.uniform(lower - 0.2, upper + 0.2, (SEQUENCE, n_arms, 3)), P_HOSTILE, pool)
        quat = unit_quaternions(rng, SEQUENCE, n_arms) * rng.uniform(0.95, 1.05, (SEQUENCE, n_arms, 1))
        grip = rng.random((SEQUENCE, n_arms))
        if n_arms == 1:
            quat, grip = noisy(rng, quat, P_HOSTILE, pool), noisy(rng, grip, P_HOSTILE, pool)
        dts = time_steps(rng, SEQUENCE)
        refs = references(rng, (SEQUENCE, n_arms, 3), (SEQUENCE, n_arms, 3), P_HOSTILE, pool)
        for i in range(SEQUENCE):
            result = enforce(Target.ee(pos[i], quat[i], grip[i]), state, dt=dts[i], limits=limits, reference=refs[i])
            counter.add(result)
            record.add(state.target, result, dts[i])
            state = result.state
        # after all that, a good target is taken: no sticky state
        good = Target.ee(np.clip(state.target.position + 0.001, lower, upper), state.target.quaternion,
                         state.target.gripper)
        result = enforce(good, state, dt=DT, limits=limits)
        assert result.rejected is None
        record.add(state.target, result, DT)
    check_ee(record, limits, n_arms)


def run_joint(rng: np.random.Generator, n_calls: int, n_joints: int, record: Record,
              counter: InterventionCounter) -> None:
    """``n_calls`` joint-space calls with ``n_joints`` joints (hostile scalars as in :func:`run_ee`)."""
    limits = SafetyLimits(joint_limits=(JOINTS * n_joints)[:n_joints])
    lower, upper, _ = limits.joint_arrays
    pool = HOSTILE if n_joints <= len(JOINTS) else FINITE_HOSTILE
    for _ in range(n_calls // SEQUENCE):
        state = EnvelopeState.at_rest(Target.joint(rng.uniform(lower, upper), [0.5]))
        joints = noisy(rng, rng.uniform(lower - 0.5, upper + 0.5, (SEQUENCE, n_joints)), P_HOSTILE, pool)
        grip = rng.random((SEQUENCE, 1))
        if pool is HOSTILE:
            grip = noisy(rng, grip, P_HOSTILE, pool)
        dts = time_steps(rng, SEQUENCE)
        refs = references(rng, (SEQUENCE, n_joints), (SEQUENCE, 0, 3), P_HOSTILE, pool)
        for i in range(SEQUENCE):
            result = enforce(Target.joint(joints[i], grip[i]), state, dt=dts[i], limits=limits, reference=refs[i])
            counter.add(result)
            record.add(state.target, result, dts[i])
            state = result.state
        good = Target.joint(np.clip(state.target.joints + 0.001, lower, upper), state.target.gripper)
        result = enforce(good, state, dt=DT, limits=limits)
        assert result.rejected is None
        record.add(state.target, result, DT)
    check_joint(record, limits)


def test_enforce_never_emits_an_unsafe_command_for_100000_hostile_inputs():
    """100,000 inputs (an input: one arm's target, or one joint's value): 30,000 single-arm and 3-joint calls
    with any hostile scalar anywhere, 70,000 arms and joints in batched calls of 25."""
    rng = np.random.default_rng(14)
    counter = InterventionCounter()
    run_ee(rng, 20_000, 1, Record(), counter)
    run_joint(rng, 10_000, len(JOINTS), Record(), counter)
    run_ee(rng, 1_600, 25, Record(), counter)
    run_joint(rng, 1_200, 25, Record(), counter)
    counts = counter.as_dict()
    inputs = 20_000 + 10_000 + 1_600 * 25 + 1_200 * 25
    assert inputs == 100_000 and counts["commands"] == 20_000 + 10_000 + 1_600 + 1_200
    # every kind of input was exercised: plain ones, hostile values rejected, absurd finite ones clipped
    assert counts["rejected_nonfinite"] > 3_000 and counts["rejected_range"] > 1_000
    assert counts["workspace"] > 5_000 and counts["joint_limit"] > 5_000


def hostile_times(rng: np.random.Generator, n: int, hostile: bool) -> np.ndarray:
    """Chunk times, increasing or (``hostile``) with duplicates, steps back, denormal steps and hostile
    scalars."""
    steps = rng.uniform(0.01, 0.1, n)
    if not hostile:
        return 100.0 + np.cumsum(steps)
    kind = rng.random(n)
    steps[kind < 0.05] = 0.0  # duplicate timestamps
    steps[(kind >= 0.05) & (kind < 0.08)] = -0.05  # time going backwards
    steps[(kind >= 0.08) & (kind < 0.1)] = 5e-324
    return noisy(rng, 100.0 + np.cumsum(steps), np.array([0.01]))


def test_the_trajectory_path_never_emits_an_unsafe_command_and_takes_good_chunks_afterwards():
    """Hostile chunks (absurd values, non-finite or backwards times, duplicates, empty) are refused by
    validation or the splice; whatever is accepted is sampled and enforced safely; a good chunk then runs."""
    rng = np.random.default_rng(1414)
    limits = SafetyLimits(workspaces=(BOX,))
    lower, upper = limits.box_arrays
    record, counter = Record(), InterventionCounter()
    refused = accepted = 0
    for k in range(400):
        now = 100.0
        command = Target.ee(rng.uniform(lower, upper), unit_quaternions(rng, 1), [1.0])
        streamer = Streamer(command, limits=limits, splice_policy=SplicePolicy(mode=("replace", "blend")[k % 2]),
                            gripper=GripperPolicy())
        n = int(rng.choice([0, 1, 2, 5, 30]))
        p = np.array([(0.0, 0.01, 0.1)[k % 3]])
        quat = IDENTITY + np.cumsum(rng.normal(0, 0.02, (n, 4)), axis=0)  # turning at a few rad/s
        try:
            chunk = Trajectory.ee(
                hostile_times(rng, n, hostile=k % 4 == 0),
                noisy(rng, rng.uniform(lower, upper, (n, 3)) * rng.choice([1.0, 1.0, 1.0, 1e3, 1e200]), p),
                noisy(rng, quat, p),
                noisy(rng, rng.random(n), p),
            )
            streamer.submit(chunk, obs_timestamp=now, now=now, command=command)
        except (TrajectoryError, SpliceRejected):
            refused += 1
        except Exception as exc:  # noqa: BLE001 - anything else is a bug in validation
            raise AssertionError(f"case {k}: {exc!r}") from exc
        else:
            accepted += 1
        state = EnvelopeState.at_rest(command)
        for t in now + np.sort(rng.uniform(0.0, 3.5, 10)):
            wanted, reference = streamer.sample(t), streamer.velocity(t)
            if wanted is None:
                break
            dt = float(time_steps(rng, 1)[0])
            result = enforce(wanted, state, dt=dt, limits=limits, reference=reference)
            counter.add(result)
            record.add(state.target, result, dt)
            state = result.state
        good = Trajectory.from_chunk(now + 4.0, 1.0, position=np.linspace(state.target.position[0], upper * 0.9, 30),
                                     rotation=np.tile(IDENTITY, (30, 1)), gripper=np.ones(30))
        streamer.submit(good, obs_timestamp=now + 4.0, now=now + 4.0, command=state.target)
        sample = streamer.sample(now + 4.5)
        assert sample is not None and np.isfinite(sample.to_vector()).all()
    check_ee(record, limits, 1)
    assert refused > 100 and accepted > 100 and counter.commands > 1_000
