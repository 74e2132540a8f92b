"""Side-by-side timing (:mod:`benchmarks.interleave`): A B A B order and per-round ratios, on a fake clock."""

from __future__ import annotations

import pytest

from benchmarks.interleave import interleaved, ratio


class FakeClock:
    """A clock that only moves when a variant runs: each call of variant ``name`` takes the next of its durations."""

    def __init__(self, durations: dict[str, list[float]]) -> None:
        self.now = 0.0
        self.durations = {k: list(v) for k, v in durations.items()}
        self.calls: list[str] = []

    def __call__(self) -> float:
        return self.now

    def variant(self, name: str):
        def run() -> None:
            self.calls.append(name)
            self.now += self.durations[name].pop(0)
        return run


def test_rounds_alternate_and_each_call_is_timed_on_its_own() -> None:
    # A drifts 1, 2, 4 (the machine slows down), B is always 3/2 of A in the same round; warm-up calls are 100
    clock = FakeClock({"A": [100, 1, 2, 4], "B": [100, 1.5, 3, 6]})
    times = interleaved({"A": clock.variant("A"), "B": clock.variant("B")}, rounds=3, warmup=1, timer=clock)
    assert clock.calls == ["A", "B"] * 4  # warm-up round, then A B A B A B
    assert times == {"A": [1, 2, 4], "B": [1.5, 3, 6]}  # the warm-up is not counted
    r = ratio(times, "B", "A")
    assert (r.median, r.low, r.high, r.rounds) == (1.5, 1.5, 1.5, 3)  # drift cancels within each round
    # the ratio of the medians of one-after-the-other runs would not: B timed while the machine was slower
    assert str(r) == "1.50 (1.50–1.50, 3 rounds)" and r.label == "B / A"


def test_ratio_is_the_median_of_per_round_ratios_with_its_spread() -> None:
    times = {"ours": [1.0, 1.0, 2.0, 1.0], "official": [1.2, 1.5, 2.2, 3.0]}
    r = ratio(times, "official", "ours")
    assert r.median == pytest.approx((1.2 + 1.5) / 2)  # per round 1.2, 1.5, 1.1, 3.0
    assert (r.low, r.high) == pytest.approx((1.1, 3.0))
    # not the ratio of the medians (1.85 / 1.0)
    assert r.to_dict() == {"numerator": "official", "denominator": "ours", "median": r.median, "min": r.low,
                           "max": r.high, "rounds": 4}


def test_three_variants_keep_their_order_in_every_round() -> None:
    clock = FakeClock({n: [1.0] * 2 for n in "CAB"})
    interleaved({n: clock.variant(n) for n in "CAB"}, rounds=2, timer=clock)
    assert clock.calls == list("CABCAB")


@pytest.mark.parametrize("rounds, warmup", [(0, 0), (3, -1)])
def test_bad_round_counts_are_refused(rounds: int, warmup: int) -> None:
    with pytest.raises(ValueError, match="rounds must be >= 1 and warmup >= 0"):
        interleaved({"A": lambda: None}, rounds, warmup)


def test_ratio_refuses_runs_of_different_lengths_and_zero_times() -> None:
    with pytest.raises(ValueError, match="A and B have 2 and 1 rounds"):
        ratio({"A": [1.0, 1.0], "B": [1.0]}, "A", "B")
    with pytest.raises(ValueError, match="B: a round took 0.0 s"):
        ratio({"A": [1.0], "B": [0.0]}, "A", "B")
    with pytest.raises(ValueError, match="needs at least one variant"):
        interleaved({}, 1)


def test_the_latency_suite_compares_official_with_each_of_ours_and_ours_with_the_reference() -> None:
    from benchmarks.test_xvla_latency import side_by_side_ratios

    times = {"onnxruntime-fp32": [1.0, 2.0], "onnxruntime-fp16": [1.5, 3.0], "torch-fp32": [2.0, 2.0],
             "official-fp32": [3.0, 4.0]}
    got = {r.label: r.median for r in side_by_side_ratios(times)}
    assert got == pytest.approx({"official-fp32 / onnxruntime-fp32": 2.5, "official-fp32 / onnxruntime-fp16": 5 / 3,
                                 "official-fp32 / torch-fp32": 1.75, "onnxruntime-fp16 / onnxruntime-fp32": 1.5,
                                 "torch-fp32 / onnxruntime-fp32": 1.5})


def test_gpu_variants_are_compared_where_they_differ_in_one_thing() -> None:
    from benchmarks.test_gpu_latency import pairs

    variants = ["torch-eager-fp32", "torch-graph-fp32", "torch-graph-bf16", "onnxruntime-graph-fp32",
                "tensorrt-graph-fp16", "onnxruntime-eager-fp16"]
    assert sorted(pairs(variants)) == sorted([
        ("torch-graph-fp32", "torch-eager-fp32"),  # graph / eager
        ("torch-graph-bf16", "torch-graph-fp32"),  # bf16 / fp32
        ("onnxruntime-graph-fp32", "torch-graph-fp32"),  # ONNX Runtime / torch
    ])  # tensorrt-graph-fp16 and onnxruntime-eager-fp16 differ from every other in two things
