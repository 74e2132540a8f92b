"""What goes into a policy and what comes out: observations and time-stamped action chunks, and the checks of
an observation's fields that every policy (local or remote) applies before anything runs. An observation is
checked once, where it enters: :meth:`runtime.policy.Policy.check` makes a :class:`CheckedObservation`, which
the policy of that bundle runs without checking again."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from xvla.errors import InputError

MAX_TIMESTAMP_S = 1e10  # seconds: a monotonic clock (seconds since boot) or the Unix time, with room to spare


class UnknownDomain(InputError):
    """A domain the bundle does not serve (a robot's bundle serves its one domain; a server bundle those it lists)."""


class PrefixUnsupported(InputError):
    """A real-time chunking prefix given to a bundle whose denoise graph takes none (exported before it; it runs
    as before without one): re-export the bundle."""


@dataclass
class Observation:
    """One observation of the robot.

    ``images``: up to 3 HxWx3 uint8 RGB arrays (any size; None = view absent), main view first.
    ``proprio``: the current state in the action layout (``manifest.inputs.proprio_dim`` values).
    ``timestamp``: when the images were taken (seconds, the clock the driver uses; monotonic; 0 ... 1e10).
    ``noise``: optional [chunk_length, dim] initial noise, to reproduce a chunk exactly.
    """

    images: Sequence[np.ndarray | None]
    instruction: str
    proprio: np.ndarray
    timestamp: float = 0.0
    noise: np.ndarray | None = None


@dataclass
class CheckedObservation(Observation):
    """An observation checked against one bundle (:meth:`runtime.policy.Policy.check`): ``images`` a list of at
    most the bundle's views, each None or an HxWx3 uint8 array, at least one present; ``instruction`` a valid
    instruction; ``proprio`` a finite float32 vector of the bundle's state width; ``timestamp`` a float in range;
    ``noise`` None or a float32 [chunk_length, dim] array. ``bundle_id``: the bundle it was checked for."""

    bundle_id: str = ""


@dataclass(frozen=True)
class ArmPoses:
    """One arm's decoded targets over a chunk (ee modes: position/rotation; joint mode: joints)."""

    gripper: np.ndarray  # [T] in 0..1 (ee6d/joint: sigmoid output; agibot: the raw regression value)
    position: np.ndarray | None = None  # [T, 3] metres
    rotation: np.ndarray | None = None  # [T, 3, 3]
    quaternion: np.ndarray | None = None  # [T, 4] scipy order (x, y, z, w)
    joints: np.ndarray | None = None  # [T, 6] radians


@dataclass(frozen=True)
class ActionChunk:
    """``actions`` [T, output_dim] as the model gives them, their ``timestamps`` [T], decoded ``arms``."""

    actions: np.ndarray
    timestamps: np.ndarray
    arms: tuple[ArmPoses, ...]
    observation_timestamp: float
    timings: dict[str, float] = field(default_factory=dict)


def check_timestamp(value: Any) -> float:
    """An observation's timestamp: a finite number of seconds 0 ... :data:`MAX_TIMESTAMP_S` (else InputError)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not (math.isfinite(value) and 0 <= value <= MAX_TIMESTAMP_S):
        raise InputError(f"observation.timestamp = {value!r}: expected seconds 0 ... {MAX_TIMESTAMP_S:g} on the "
                         "driver's clock (time.monotonic())")
    return float(value)


def checked_proprio(value: Any, size: int | None = None) -> np.ndarray:
    """An observation's proprio as a finite float32 vector of ``size`` values (None: any number; the policy server
    checks it then), else InputError naming what is wrong."""
    wanted = "numbers" if size is None else f"{size} numbers"
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged or otherwise not an array
        raise InputError(f"observation.proprio: expected {wanted}, got {type(value).__name__} ({exc})") from None
    if array.dtype.kind not in "biuf":
        raise InputError(f"observation.proprio: expected {wanted}, got an array of {array.dtype} "
                         f"({type(value).__name__})")
    if array.ndim != 1 or (size is not None and array.shape != (size,)):
        raise InputError(f"observation.proprio: expected {'a vector of numbers' if size is None else f'{size} values'}, "
                         f"got shape {array.shape}")
    with np.errstate(over="ignore"):
        proprio = array.astype(np.float32)
    if not np.isfinite(proprio).all():
        raise InputError("observation.proprio: contains NaN or Inf, or a value too large for float32")
    return proprio
