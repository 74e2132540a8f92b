"""The seam of a chunk hand-over: how much the arm's command changes its velocity where a new chunk takes over.

The one definition, used by the daemon's metrics and by the simulated task's evaluation: for a hand-over at time
``t``, the command's mean velocity over the :data:`SEAM_WINDOW_S` (50 ms) after ``t`` minus its mean velocity
over the 50 ms before,

    seam(t) = | (p(t + w) - p(t)) / w  -  (p(t) - p(t - w)) / w |,

``p`` the commanded position interpolated linearly between control ticks. End-effector arms: the Euclidean norm
of the position's velocity change per arm, the largest over the arms (m/s); joint arms: the largest change over
the joints (rad/s, or m/s for a prismatic joint). The gripper and the orientation do not count.

It is measured on the command after the safety envelope, what the arm is actually told; the envelope bounds the
command's acceleration (``max_linear_accel``, ``max_joint_accel``), so no seam exceeds that limit times ``w``
(5 m/s² × 50 ms = 0.25 m/s by default); a plan switching abruptly shows as a seam near that bound (and as clamps). A plan's own smooth acceleration
gives a small seam everywhere (``a * w``): the measure is meaningful compared between ways of handing over on
the same task. A hand-over whose window is not fully inside the trace, or where the loop sent nothing (a hold,
an e-stop: NaN rows), has no seam.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

SEAM_WINDOW_S = 0.05
MAX_PENDING = 1000  # hand-overs waiting for their window (a chunk per 20 ms for 20 s): older ones are dropped


def _positions(command: np.ndarray, space: str, n_arms: int) -> np.ndarray:
    """The commanded positions [K, n_arms, 3] (``ee``) or joints [K, J, 1] of trace rows in
    :meth:`drivers.arm.Target.to_vector` layout."""
    if space == "ee":
        return command[:, : 8 * n_arms].reshape(len(command), n_arms, 8)[:, :, :3]
    return command[:, : command.shape[1] - n_arms, None]


def seam(times: np.ndarray, command: np.ndarray, t: float, *, space: str, n_arms: int,
         window: float = SEAM_WINDOW_S) -> Optional[float]:
    """The seam at hand-over time ``t`` (module docstring) from trace ``times`` [K] (increasing) and ``command``
    rows [K, D]; None when ``[t - window, t + window]`` is not inside the trace or a command in it is missing."""
    times = np.asarray(times, np.float64)
    if len(times) < 2 or t - window < times[0] or t + window > times[-1]:
        return None
    lo = max(int(np.searchsorted(times, t - window, "right")) - 1, 0)  # the rows bracketing the window
    hi = min(int(np.searchsorted(times, t + window, "left")) + 1, len(times))
    p = _positions(np.asarray(command, np.float64)[lo:hi], space, n_arms)
    if not np.isfinite(p).all():
        return None
    flat = p.reshape(len(p), -1)
    at = np.array([t - window, t, t + window])
    q = np.stack([np.interp(at, times[lo:hi], flat[:, j]) for j in range(flat.shape[1])], axis=1)
    q = q.reshape((3,) + p.shape[1:])
    jump = (q[2] - q[1]) / window - (q[1] - q[0]) / window
    return float(np.max(np.linalg.norm(jump, axis=-1)))


class SeamMeter:
    """Hand-over times waiting until the trace covers their window; :meth:`collect` returns the seams that became
    measurable (each hand-over is measured once; one that fell out of the trace, or without a seam, is dropped)."""

    def __init__(self, space: str, n_arms: int, window: float = SEAM_WINDOW_S) -> None:
        self.space, self.n_arms, self.window = space, n_arms, window
        self._pending: List[float] = []

    def handover(self, t: float) -> None:
        """A chunk took over at ``t`` (the clock of the trace)."""
        self._pending = self._pending[-(MAX_PENDING - 1):] + [float(t)]

    def collect(self, trace: Dict[str, Any]) -> List[float]:
        """The seams of the waiting hand-overs whose window ``trace`` (:meth:`drivers.control.trace_ring.TraceRing.read`
        layout) now covers."""
        times = trace["time"]
        if len(times) < 2:
            return []
        out, waiting = [], []
        for t in self._pending:
            if t + self.window > times[-1]:
                waiting.append(t)
                continue
            value = seam(times, trace["command"], t, space=self.space, n_arms=self.n_arms, window=self.window)
            if value is not None:
                out.append(value)
        self._pending = waiting
        return out
