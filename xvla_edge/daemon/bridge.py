"""Between the policy's units and the arm's: measured arm state → proprio, action chunk → trajectory, and back
from the commands the arm will execute to rows in the model's action layout (real-time chunking's prefix).

The proprio layout is the bundle's action layout (``manifest.action``): ``ee6d`` / ``agibot_ee6d`` hold
position (3), rot6d (6, the manifest's ``rot6d_layout``) and gripper (1) per arm at offsets 0 and 10;
``joint`` holds 6 joints and a gripper per arm at offsets 0 and 7. Channels of arms the robot does not
have stay zero, as in the training data of single-arm domains; so do the last joint channels of an arm with fewer
than 6 joints (an SO-101 fills 5: its joints in the controller's order, then zero, then its gripper), and their
actions are dropped.

:func:`trajectory_to_rows` inverts :func:`chunk_to_trajectory` together with the decoding and the model's output
transform: positions and joints as they are, rotations as rot6d in the manifest's layout (the rotation itself,
whatever non-orthonormal rot6d the model once emitted for it), and the gripper opening through the inverse of the
output transform: the logit for the modes that squash the gripper with a sigmoid (``ee6d``, ``joint``; an opening
of exactly 0 or 1 has no finite logit, so it is clamped into [:data:`GRIPPER_EPS`, 1 − :data:`GRIPPER_EPS`], a
logit of about ±13.8 whose sigmoid is within 1e-6 of the command), the value itself for ``agibot_ee6d``.
"""

from __future__ import annotations

import numpy as np

from drivers.arm import ArmState
from drivers.control.trajectory import Trajectory
from runtime.types import ActionChunk
from xvla.constants import GRIPPER_CHANNELS
from xvla.errors import XVLAError
from xvla.rotations import quat_to_rot6d

_ARM_STRIDE = {"ee6d": 10, "agibot_ee6d": 10, "joint": 7}
JOINTS_PER_ARM = 6
GRIPPER_EPS = 1e-6  # a commanded opening is clamped into [eps, 1 - eps] before its logit is taken


class BridgeError(XVLAError, ValueError):
    """The bundle's action layout and the arm do not fit together."""


def arm_space(action: dict) -> str:
    """The drivers' space (``"ee"`` or ``"joint"``) for a manifest ``action`` section."""
    mode = action["mode"]
    if mode not in _ARM_STRIDE:
        raise BridgeError(f"manifest action.mode {mode!r} has no known arm layout; expected one of "
                          f"{sorted(_ARM_STRIDE)} (an 'auto' bundle needs a robot-specific bridge)")
    return "joint" if mode == "joint" else "ee"


def check_arm(action: dict, space: str, n_arms: int, n_joints: int) -> None:
    """Raise :class:`BridgeError` unless an arm with these capabilities can run the bundle's chunks."""
    want_space, arms = arm_space(action), int(action.get("arms", 1))
    if space != want_space:
        raise BridgeError(f"the bundle's action mode {action['mode']!r} needs a {want_space!r} arm; the arm "
                          f"controller takes {space!r} targets")
    if space == "ee" and n_arms != arms:
        raise BridgeError(f"the bundle drives {arms} arm(s); the controller has {n_arms}")
    if space == "joint" and (n_joints % arms or not 1 <= n_joints // arms <= JOINTS_PER_ARM):
        raise BridgeError(f"the bundle drives {arms} arm(s) of up to {JOINTS_PER_ARM} joints each; the controller "
                          f"has {n_joints} joints")


def proprio_from_state(state: ArmState, action: dict, proprio_dim: int) -> np.ndarray:
    """The proprio vector [proprio_dim] float32 for the measured ``state``: the action layout of each arm,
    zeros after it (the padding LeRobot's X-VLA applies up to its ``max_state_dim``)."""
    mode, arms = action["mode"], int(action.get("arms", 1))
    stride = _ARM_STRIDE[mode]
    if proprio_dim < stride * arms:
        raise BridgeError(f"the bundle takes a state of {proprio_dim} values; the arm's {mode} layout of {arms} "
                          f"arm(s) fills {stride * arms} (a robot-specific state layout needs its own bridge)")
    out = np.zeros(proprio_dim, np.float32)
    k = len(state.joint_positions) // arms  # joints per arm
    for arm in range(arms):
        base = stride * arm
        if mode == "joint":
            out[base : base + k] = state.joint_positions[k * arm : k * (arm + 1)]
            out[base + 6] = state.gripper[arm]
        else:
            out[base : base + 3] = state.position[arm]
            out[base + 3 : base + 9] = quat_to_rot6d(state.quaternion[arm], action.get("rot6d_layout", "rows"))
            out[base + 9] = state.gripper[arm]
    if not np.isfinite(out).all():
        raise BridgeError(f"the arm reports a non-finite state for proprio: {out.tolist()}")
    return out


def chunk_to_trajectory(chunk: ActionChunk, joints_per_arm: int = JOINTS_PER_ARM) -> Trajectory:
    """The chunk's decoded poses at its time stamps (gripper clipped into 0..1); of a joint chunk the first
    ``joints_per_arm`` joints of each arm (the arm's)."""
    arms = chunk.arms
    gripper = np.clip(np.stack([a.gripper for a in arms], axis=1), 0.0, 1.0)
    if arms[0].joints is not None:
        joints = np.concatenate([a.joints[:, :joints_per_arm] for a in arms], axis=1)
        return Trajectory.joint(chunk.timestamps, joints, gripper)
    position = np.stack([a.position for a in arms], axis=1)
    quaternion = np.stack([a.quaternion for a in arms], axis=1)
    return Trajectory.ee(chunk.timestamps, position, quaternion, gripper)


def trajectory_to_rows(trajectory: Trajectory, action: dict) -> np.ndarray:
    """The waypoints of ``trajectory`` as rows [N, ``action["dim"]``] float32 in the model's action layout for the
    manifest's ``action`` section (the representation the sampler mixes a prefix in; see the module's text)."""
    mode, arms = action["mode"], int(action.get("arms", 1))
    stride, dim = _ARM_STRIDE.get(mode), int(action["dim"])
    check_arm(action, trajectory.space, trajectory.n_arms, trajectory.n_joints)
    if trajectory.n_arms != arms:
        raise BridgeError(f"the bundle drives {arms} gripper(s); the trajectory holds {trajectory.n_arms}")
    if dim < stride * arms:
        raise BridgeError(f"manifest action.dim {dim} is narrower than the {mode} layout of {arms} arm(s) "
                          f"({stride * arms} values)")
    gripper = np.asarray(trajectory.gripper, np.float64)
    if GRIPPER_CHANNELS[mode]:
        opening = np.clip(gripper, GRIPPER_EPS, 1.0 - GRIPPER_EPS)
        gripper = np.log(opening) - np.log1p(-opening)
    rows = np.zeros((trajectory.n_waypoints, dim), np.float64)
    k = trajectory.n_joints // arms  # joints per arm
    for arm in range(arms):
        base = stride * arm
        if mode == "joint":
            rows[:, base : base + k] = trajectory.joints[:, k * arm : k * (arm + 1)]
            rows[:, base + 6] = gripper[:, arm]
        else:
            rows[:, base : base + 3] = trajectory.position[:, arm]
            rows[:, base + 3 : base + 9] = quat_to_rot6d(trajectory.quaternion[:, arm],
                                                         action.get("rot6d_layout", "rows"))
            rows[:, base + 9] = gripper[:, arm]
    return rows.astype(np.float32)
