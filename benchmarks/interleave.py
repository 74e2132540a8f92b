"""Side-by-side timing that holds on a noisy machine: the variants run round by round (A B A B ...), and a ratio is
the median of the per-round ratios, reported with its spread (min–max).

Timing one variant after another lets the machine drift in between (another process starts, the clock
throttles): three runs of the same official / ours comparison on one idle 2-core machine, minutes apart, gave
1.37, 1.11 and 1.05. Within one round both variants see the same moment of the machine and the same inputs,
so their ratio cancels what the moment adds to both. Standard library only.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

Timer = Callable[[], float]


def interleaved(variants: Mapping[str, Callable[[], object]], rounds: int, warmup: int = 0,
                timer: Timer = time.perf_counter) -> dict[str, list[float]]:
    """Seconds of each call of each variant: ``warmup`` untimed rounds, then ``rounds`` timed ones; every round
    calls each variant once, in the mapping's order (A B A B ...)."""
    if rounds < 1 or warmup < 0:
        raise ValueError(f"rounds must be >= 1 and warmup >= 0; got rounds={rounds}, warmup={warmup}")
    if len(variants) < 1:
        raise ValueError("interleaved() needs at least one variant")
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            t0 = timer()
            fn()
            times[name].append(timer() - t0)
    return times


@dataclass(frozen=True)
class Ratio:
    """``numerator`` / ``denominator`` over the rounds of one interleaved run: median, min and max of the per-round
    ratios (round i: numerator's time in round i over the denominator's in round i)."""

    numerator: str
    denominator: str
    median: float
    low: float
    high: float
    rounds: int

    @property
    def label(self) -> str:
        return f"{self.numerator} / {self.denominator}"

    def to_dict(self) -> dict[str, object]:
        return {"numerator": self.numerator, "denominator": self.denominator, "median": self.median,
                "min": self.low, "max": self.high, "rounds": self.rounds}

    def __str__(self) -> str:
        return f"{self.median:.2f} ({self.low:.2f}–{self.high:.2f}, {self.rounds} rounds)"


def ratio(times: Mapping[str, Sequence[float]], numerator: str, denominator: str) -> Ratio:
    """The per-round ratios of two variants of one :func:`interleaved` run, as a :class:`Ratio`."""
    num, den = times[numerator], times[denominator]
    if len(num) != len(den) or not num:
        raise ValueError(f"{numerator} and {denominator} have {len(num)} and {len(den)} rounds; expected the same, "
                         "at least one (both from one interleaved run)")
    if min(den) <= 0:
        raise ValueError(f"{denominator}: a round took {min(den)} s; every time must be positive")
    per_round = [a / b for a, b in zip(num, den)]
    return Ratio(numerator, denominator, statistics.median(per_round), min(per_round), max(per_round), len(per_round))
