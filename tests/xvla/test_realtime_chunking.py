"""Real-time chunking's prefix weights (the paper's soft mask) and the checks of a prefix from outside."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xvla.errors import InputError
from xvla.realtime_chunking import (
    MAX_PREFIX_VALUE,
    Prefix,
    check_prefix,
    delay_rows,
    prefix_weights,
    scheduled_prefix,
)


def test_weights_match_hand_computed_values() -> None:
    """length 10, delay 2, horizon 6: c = (6 - i) / 5 over rows 2..5, w = c (e^c - 1) / (e - 1), computed by hand."""
    expected = [1.0, 1.0, 0.5705890189580985, 0.2870723952639777, 0.1144922071561075, 0.02577024961716831,
                0.0, 0.0, 0.0, 0.0]
    np.testing.assert_allclose(prefix_weights(10, 2, 6), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("length,delay,horizon", [(30, 0, 0), (30, 0, 30), (30, 4, 12), (30, 7, 7), (30, 30, 30),
                                                  (1, 0, 1), (5, 1, 5)])
def test_weights_follow_the_paper_row_by_row(length: int, delay: int, horizon: int) -> None:
    """Eq. 5 of Black et al. (2025) with H - s = horizon, stated per row."""
    def paper(i: int) -> float:
        if i < delay:
            return 1.0
        if i >= horizon:
            return 0.0
        c = (horizon - i) / (horizon - delay + 1)
        return c * (math.exp(c) - 1) / (math.e - 1)
    weights = prefix_weights(length, delay, horizon)
    assert weights.dtype == np.float32 and weights.shape == (length,)
    np.testing.assert_allclose(weights, [paper(i) for i in range(length)], rtol=1e-6, atol=1e-7)
    assert (np.diff(weights) <= 0).all()
    assert (weights[delay:horizon] < 1).all() and (weights[delay:horizon] > 0).all()


@pytest.mark.parametrize("args,named", [
    ((30, 31, 31), "delay = 31"),  # a delay longer than the chunk
    ((30, -1, 5), "delay = -1"),
    ((30, 6, 5), "horizon = 5"),  # horizon before the delay
    ((30, 2, 31), "horizon = 31"),
    ((0, 0, 0), "length = 0"),
    ((30, True, 5), "delay = true"),
    ((30, 2.0, 5), "delay = 2.0"),
    ((10**9, 0, 0), "length = 1000000000"),
])
def test_weights_refuse_impossible_schedules(args: tuple, named: str) -> None:
    with pytest.raises(InputError, match=named):
        prefix_weights(*args)


def test_delay_rows_rounds_up_to_every_row_that_passes() -> None:
    assert delay_rows(0.0, 1 / 30) == 0
    assert delay_rows(0.1, 1 / 30) == 3  # exactly three periods: three rows
    assert delay_rows(0.101, 1 / 30) == 4
    assert delay_rows(0.25, 1 / 30) == 8
    for bad in ((float("nan"), 0.1), (-0.1, 0.1), (0.1, 0.0), (0.1, float("inf")), (True, 0.1)):
        with pytest.raises(InputError, match="latency_s|row_period_s"):
            delay_rows(*bad)


def rows(n: int = 5, dim: int = 4) -> np.ndarray:
    return np.arange(n * dim, dtype=np.float32).reshape(n, dim) / 10


def test_check_prefix_accepts_and_pads() -> None:
    prefix = check_prefix(rows(), [1, 1, 0.5, 0.25, 0], length=8, dim=4)
    assert isinstance(prefix, Prefix) and prefix.rows.dtype == np.float32 and prefix.weights.dtype == np.float32
    full_rows, full_weights = prefix.padded(8)
    np.testing.assert_array_equal(full_rows[:5], rows())
    np.testing.assert_array_equal(full_rows[5:], 0)
    np.testing.assert_array_equal(full_weights, [1, 1, 0.5, 0.25, 0, 0, 0, 0])


def poisoned(r: int, c: int, value: float) -> np.ndarray:
    out = rows().astype(np.float64)
    out[r, c] = value
    return out


@pytest.mark.parametrize("prefix_rows,weights,named", [
    (poisoned(2, 3, float("nan")), [1] * 5, r"prefix.rows\[2\]\[3\] = nan"),
    (poisoned(0, 1, float("inf")), [1] * 5, r"prefix.rows\[0\]\[1\] = inf"),
    (poisoned(4, 0, -2 * MAX_PREFIX_VALUE), [1] * 5, r"prefix.rows\[4\]\[0\] = -20000.0"),
    (rows(5, 3), [1] * 5, r"prefix.rows: expected \[rows <= 8, 4\].*got shape \[5, 3\]"),  # wrong width
    (rows(9, 4), [1] * 9, r"prefix.rows: .*got shape \[9, 4\]"),  # longer than the chunk
    (np.zeros((0, 4)), [], r"prefix.rows: .*got shape \[0, 4\]"),
    (rows()[0], [1], r"prefix.rows: expected \[rows <= 8, 4\], got shape \[4\]"),
    ([[1, 2], [3]], [1, 1], "prefix.rows: expected"),  # ragged
    (np.array([["a"] * 4] * 5), [1] * 5, "prefix.rows: expected"),
    (rows(), [1] * 4, r"prefix.weights: expected one weight per prefix row \(5\), got 4"),
    (rows(), [1, 1, 1.5, 0, 0], r"prefix.weights\[2\] = 1.5: expected a weight 0 ... 1"),
    (rows(), [1, 1, -0.1, -0.2, -0.3], r"prefix.weights\[2\] = -0.1"),
    (rows(), [1, float("nan"), 0, 0, 0], r"prefix.weights\[1\] = nan"),
    (rows(), [1, 0.2, 0.5, 0, 0], r"prefix.weights\[2\] = 0.5 > weights\[1\] = 0.2"),  # rising
    (rows(), [[1] * 5], r"prefix.weights: expected \[5\], got shape \[1, 5\]"),
    (rows(), [True] * 5, "prefix.weights: expected"),
])
def test_check_prefix_refuses_by_name(prefix_rows, weights, named: str) -> None:
    with pytest.raises(InputError, match=named):
        check_prefix(prefix_rows, weights, length=8, dim=4)


def test_scheduled_prefix_weights_the_committed_rows() -> None:
    committed = rows(7)
    prefix = scheduled_prefix(committed, length=8, dim=4, delay=2, horizon=5)
    np.testing.assert_array_equal(prefix.rows, committed[:5])
    np.testing.assert_array_equal(prefix.weights, prefix_weights(8, 2, 5)[:5])
    short = scheduled_prefix(committed[:3], length=8, dim=4, delay=2, horizon=5)  # the executing chunk runs out
    np.testing.assert_array_equal(short.weights, prefix_weights(8, 2, 5)[:3])
    with pytest.raises(InputError, match=r"1 row\(s\) for an inference delay of 2 rows"):
        scheduled_prefix(committed[:1], length=8, dim=4, delay=2, horizon=5)
    with pytest.raises(InputError, match="delay = 9"):
        scheduled_prefix(committed, length=8, dim=4, delay=9, horizon=9)
