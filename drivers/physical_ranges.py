"""Physical ranges for table-top arms: a value beyond them is a mistake or an attack, never a real arm.

Every check against these names the field, the value and the range.

Trajectory waypoints (checked by :class:`drivers.control.trajectory.Trajectory` on every chunk, so that the
interpolation, the splice and the safety envelope only meet values whose arithmetic cannot overflow):

================================  ==========  ================================================================
constant                          value       bounds
================================  ==========  ================================================================
``MAX_POSITION_M``                10 m        each EE coordinate, per axis (``|x|``, ``|y|``, ``|z|``), arm base
                                              frame; also every workspace box corner
``MAX_JOINT``                     4π          each joint value (rad, or m for a prismatic joint); also joint
                                              limits
``MAX_WAYPOINT_LINEAR_SPEED``     100 m/s     EE straight-line distance between consecutive waypoints over
                                              their time step, per arm
``MAX_WAYPOINT_ANGULAR_SPEED``    100 rad/s   EE rotation angle between consecutive waypoints over their
                                              time step, per arm
``MAX_WAYPOINT_JOINT_SPEED``      100 rad/s   each joint's change between consecutive waypoints over their
                                              time step (or m/s)
================================  ==========  ================================================================

Times must be finite and strictly increasing (no duplicates, never backwards), with at least one waypoint.
The waypoint speeds are far above any arm's limits (below), so a chunk that merely asks for more than the
arm allows is slowed by the safety envelope, not refused.

Configured limits (:class:`drivers.control.safety.SafetyLimits`, :class:`drivers.arm.JointLimit`): each must be
finite, at least ``SAFETY_LIMIT_MIN`` (0.001 in its unit: a slower limit is an arm that does not move, and
the time a spliced chunk is delayed to start within the limits, distance / limit, would leave any span)
and at most:

=============================  ==========  ======================
field                          maximum     constant
=============================  ==========  ======================
``max_linear_speed``           3 m/s       ``SAFETY_LIMIT_MAX``
``max_angular_speed``          2π rad/s    ``SAFETY_LIMIT_MAX``
``max_linear_accel``           20 m/s²     ``SAFETY_LIMIT_MAX``
``max_angular_accel``          50 rad/s²   ``SAFETY_LIMIT_MAX``
``max_gripper_rate``           20 /s       ``SAFETY_LIMIT_MAX``
``max_joint_accel``            50 rad/s²   ``SAFETY_LIMIT_MAX``
``JointLimit.max_velocity``    4π rad/s    ``MAX_JOINT_VELOCITY``
=============================  ==========  ======================

Workspace boxes (:class:`drivers.arm.Box`) lie within ``±MAX_POSITION_M`` and joint limits within
``±MAX_JOINT``, so a robot.toml (or a controller's report) cannot switch the envelope off. One controller
drives at most ``MAX_ARMS`` (4) arms and ``MAX_JOINTS`` (32) joints: the xvla-serial protocol's bounds, and
those of robot.toml's ``[safety]`` arrays and ``[arm.sim].n_arms``.
"""

from __future__ import annotations

import math
from typing import Dict, Tuple

MAX_POSITION_M = 10.0
MAX_JOINT = 4 * math.pi
MAX_WAYPOINT_LINEAR_SPEED = 100.0
MAX_WAYPOINT_ANGULAR_SPEED = 100.0
MAX_WAYPOINT_JOINT_SPEED = 100.0
MAX_JOINT_VELOCITY = 4 * math.pi
SAFETY_LIMIT_MIN = 1e-3
MAX_ARMS = 4
MAX_JOINTS = 32

#: Upper bound and unit of each :class:`drivers.control.safety.SafetyLimits` rate.
SAFETY_LIMIT_MAX: Dict[str, Tuple[float, str]] = {
    "max_linear_speed": (3.0, "m/s"),
    "max_angular_speed": (2 * math.pi, "rad/s"),
    "max_linear_accel": (20.0, "m/s^2"),
    "max_angular_accel": (50.0, "rad/s^2"),
    "max_gripper_rate": (20.0, "/s"),
    "max_joint_accel": (50.0, "rad/s^2"),
}


def check_rate(owner: str, value: float, maximum: float, unit: str) -> str:
    """Why ``value`` is not a usable rate limit (finite, ``SAFETY_LIMIT_MIN`` ... ``maximum``), or "" when it is."""
    allowed = f"allowed {SAFETY_LIMIT_MIN:g} <= value <= {maximum:.6g} {unit}"
    if not math.isfinite(value):
        return f"{owner} must be finite, got {value!r} ({allowed})"
    if value < SAFETY_LIMIT_MIN:
        return f"{owner} must be at least {SAFETY_LIMIT_MIN:g} {unit}, got {value!r} ({allowed})"
    if value > maximum:
        return f"{owner} must be at most {maximum:.6g} {unit}, got {value!r} ({allowed})"
    return ""
