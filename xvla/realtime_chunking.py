"""Real-time chunking (RTC): the committed prefix a new chunk is made to continue, its row weights, and the checks
of a prefix that comes from outside.

While a chunk is being computed the arm keeps executing the previous one. The rows the arm executes before the
new chunk can take over are known (the *committed prefix*, in the model's own action representation: the width
of the network, gripper channels as logits, before any post-processing). The sampler
(:meth:`xvla.model.XVLA.generate_actions`) mixes them into every step's predicted clean chunk, row by row,
``x0 <- w * prefix + (1 - w) * x0``, and re-noises as usual, so the new chunk continues the old one
(training-free inpainting, the gradient-free form of the method of Black, Galliker and Levine, "Real-Time
Execution of Action Chunking Flow Policies", 2025, arXiv 2506.07339).

The weights of a chunk of ``length`` rows for an inference delay of ``delay`` rows and a horizon of ``horizon``
rows (the paper's soft mask, its eq. 5)::

    w_i = 1                                   for i < delay          (executed before the chunk lands: frozen)
    w_i = c_i * (exp(c_i) - 1) / (e - 1),     c_i = (horizon - i) / (horizon - delay + 1)
                                              for delay <= i < horizon (the overlap: guided, decaying)
    w_i = 0                                   for i >= horizon        (the new chunk's own rows)

The paper writes the horizon as ``H - s`` (chunk length ``H`` minus execution horizon ``s``); LeRobot's RTC
calls the same row its ``execution_horizon``. ``0 <= delay <= horizon <= length``. The paper takes the delay as
the number of control steps that pass during inference; :func:`delay_rows` rounds up, so that no row the arm
executes before the chunk arrives is left free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from xvla.errors import InputError
from xvla.validation import show

# Largest magnitude of a prefix value. The model's action units are metres, rot6d entries in [-1, 1], joint angles
# in radians and gripper logits (a saturated opening maps to about ±14); a value beyond this is not an action,
# and mixed into the network's input it would push its arithmetic out of range.
MAX_PREFIX_VALUE = 1e4
MAX_ROWS = 4096  # rows of one chunk (X-VLA: 30): bounds the arrays a hostile length would allocate


def _count(where: str, value: Any, low: int, high: int, expected: str) -> int:
    """``value`` as an integer ``low ... high``, else :class:`InputError` naming ``where``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise InputError(f"{where} = {show(value)}: expected {expected}")
    return int(value)


def delay_rows(latency_s: float, row_period_s: float) -> int:
    """The inference delay in rows: the rows whose time passes while a chunk is computed, ``ceil(latency /
    period)`` (a row that is due before the chunk arrives is executed from the old chunk)."""
    for where, value in (("latency_s", latency_s), ("row_period_s", row_period_s)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise InputError(f"{where} = {show(value)}: expected a finite number of seconds >= 0")
    if row_period_s <= 0:
        raise InputError(f"row_period_s = {show(row_period_s)}: expected a row period > 0 s")
    return math.ceil(latency_s / row_period_s - 1e-9)  # a latency of exactly k periods is k rows, not k + 1


def prefix_weights(length: int, delay: int, horizon: int) -> np.ndarray:
    """The soft mask above: float32 [length], 1 on the first ``delay`` rows, decaying to 0 at ``horizon``."""
    length = _count("length", length, 1, MAX_ROWS, f"a chunk length 1 ... {MAX_ROWS}")
    delay = _count("delay", delay, 0, length, f"an inference delay of 0 ... {length} rows (the chunk's length)")
    horizon = _count("horizon", horizon, delay, length,
                     f"a horizon of {delay} ... {length} rows (at least the delay, at most the chunk's length)")
    i = np.arange(length, dtype=np.float64)
    c = (horizon - i) / (horizon - delay + 1)
    weights = np.where(i < delay, 1.0, np.where(i < horizon, c * np.expm1(c) / (math.e - 1), 0.0))
    return weights.astype(np.float32)


@dataclass(frozen=True)
class Prefix:
    """A checked committed prefix: ``rows`` float32 [n, dim] and their ``weights`` float32 [n], non-increasing in
    [0, 1]; the chunk's rows after the ``n``-th are free (weight 0)."""

    rows: np.ndarray
    weights: np.ndarray

    def padded(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows [length, dim], weights [length]): the prefix over a whole chunk, zeros after its own rows."""
        rows = np.zeros((length, self.rows.shape[1]), np.float32)
        weights = np.zeros(length, np.float32)
        rows[: len(self.rows)], weights[: len(self.weights)] = self.rows, self.weights
        return rows, weights


def _array(where: str, value: Any, ndim: int, shape: str) -> np.ndarray:
    """``value`` as a float64 array of ``ndim`` dimensions (numbers only), else :class:`InputError`."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged or not an array
        raise InputError(f"{where}: expected {shape} numbers, got {type(value).__name__} ({exc})") from None
    if array.dtype.kind not in "iuf":
        raise InputError(f"{where}: expected {shape} numbers, got {show(value)}")
    if array.ndim != ndim:
        raise InputError(f"{where}: expected {shape}, got shape {list(array.shape)}")
    return array.astype(np.float64)


def check_prefix(rows: Any, weights: Any, *, length: int, dim: int, where: str = "prefix") -> Prefix:
    """The prefix ``rows`` [n, dim] with their ``weights`` [n] (1 <= n <= ``length``) as a :class:`Prefix`, or
    :class:`InputError` naming the field, the value and what was expected: rows non-finite or beyond
    ±:data:`MAX_PREFIX_VALUE`, of another width or more rows than the chunk; weights of another count than the
    rows, outside [0, 1], or increasing from one row to the next (a later row cannot be held more firmly than
    an earlier one)."""
    shape = f"[rows <= {length}, {dim}]"
    array = _array(f"{where}.rows", rows, 2, shape)
    n = array.shape[0]
    if not 1 <= n <= length or array.shape[1] != dim:
        raise InputError(f"{where}.rows: expected {shape} (the model's action width {dim}, at most the chunk's "
                         f"{length} rows, at least one), got shape {list(array.shape)}")
    bad = ~np.isfinite(array) | (np.abs(np.nan_to_num(array)) > MAX_PREFIX_VALUE)
    if bad.any():
        r, c = (int(k) for k in np.argwhere(bad)[0])
        raise InputError(f"{where}.rows[{r}][{c}] = {show(float(array[r, c]))}: expected a finite value within "
                         f"±{MAX_PREFIX_VALUE:g} in the model's action representation")
    w = _array(f"{where}.weights", weights, 1, f"[{n}]")
    if w.shape != (n,):
        raise InputError(f"{where}.weights: expected one weight per prefix row ({n}), got {w.shape[0]}")
    outside = ~((w >= 0) & (w <= 1))  # NaN too
    if outside.any():
        k = int(np.argmax(outside))
        raise InputError(f"{where}.weights[{k}] = {show(float(w[k]))}: expected a weight 0 ... 1")
    rising = np.diff(w) > 0
    if rising.any():
        k = int(np.argmax(rising))
        raise InputError(f"{where}.weights[{k + 1}] = {show(float(w[k + 1]))} > weights[{k}] = "
                         f"{show(float(w[k]))}: expected weights that do not increase from one row to the next")
    return Prefix(array.astype(np.float32), w.astype(np.float32))


def scheduled_prefix(rows: Any, *, length: int, dim: int, delay: int, horizon: int,
                     where: str = "prefix") -> Prefix:
    """The committed ``rows`` (the executing chunk from the new chunk's first row on) weighted by
    :func:`prefix_weights`: rows from ``horizon`` on are dropped; at least ``delay`` rows are needed (the arm
    executes them before the new chunk can take over)."""
    weights = prefix_weights(length, delay, horizon)
    array = _array(f"{where}.rows", rows, 2, f"[rows, {dim}]")
    if array.shape[0] < max(delay, 1):
        raise InputError(f"{where}.rows: {array.shape[0]} row(s) for an inference delay of {delay} rows; expected "
                         f"at least {max(delay, 1)} (every row executed before the chunk arrives)")
    n = max(min(array.shape[0], horizon), delay, 1)
    return check_prefix(array[:n], weights[:n], length=length, dim=dim, where=where)


def stack_prefixes(prefixes: Sequence[Prefix | None], *, length: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows float32 [B, length, dim], weights float32 [B, length]) of a batch: each row's prefix padded to the
    chunk (:meth:`Prefix.padded`), zeros for a row without one (None: weight 0, the chunk as without a prefix)."""
    rows, weights = np.zeros((len(prefixes), length, dim), np.float32), np.zeros((len(prefixes), length), np.float32)
    for b, prefix in enumerate(prefixes):
        if prefix is not None:
            rows[b], weights[b] = prefix.padded(length)
    return rows, weights
