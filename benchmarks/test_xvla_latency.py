"""X-VLA latency suites: encoder, one denoising step, a full chunk and ``Policy.act``, next to their floors.

Not part of the test suite (``pytest`` from the repository root collects ``tests/`` only). Run::

    .venv/bin/python -m pytest benchmarks/test_xvla_latency.py --benchmark-json=out.json
    XVLA_BENCH_FULL=1 .venv/bin/python -m pytest benchmarks/test_xvla_latency.py -k full
    xvla-edge bench --size tiny small          # the same, plus the results files

Cases: every size in ``XVLA_BENCH_SIZES`` (default tiny, small; full with ``XVLA_BENCH_FULL=1``) × every
backend in ``XVLA_BENCH_BACKENDS`` (default all): ``onnxruntime-fp32``, ``onnxruntime-fp16`` (the
accuracy-checked fp16 bundle; ONNX Runtime's CPU provider has no fast fp16 kernels on x86, so expect it
slower), ``torch-fp32`` (eager reference) and ``official-fp32`` (the official implementation on the same
weights, inputs and noise, in a worker process; skipped unless ``XVLA_OFFICIAL_SRC`` and
``XVLA_OFFICIAL_PYTHON`` are set). ``XVLA_BENCH_STEPS`` (default 10) sets the chunk's denoising steps and
``XVLA_BENCH_ROUNDS`` overrides every stage's round count; ``XVLA_BENCH_THREADS`` (default: one per core)
sets every backend's intra-op threads and the BLAS threads of the floor's GEMM measurement.

Every benchmark stores its work (FLOPs, weight bytes), its floor on this machine, the ratio median / floor,
the size, backend, precision and steps in ``benchmark.extra_info``. The machine's GEMM rate and bandwidth
are measured before every case and at the end; the floors in the JSON and the closing table use the best
of those measurements (the least disturbed by other processes). Timings never fail a benchmark; a chunk
that disagrees with the fp32 chunk of another backend does (wrong weights or inputs, not slowness).

Comparisons between backends come from ``test_side_by_side``: per size and stage, every backend round by round
(A B A B ..., same inputs; :mod:`benchmarks.interleave`), each ratio the median of the per-round ratios with its
min–max, recorded in the JSON's ``machine_info.xvla.side_by_side``. The runners of one size stay loaded for it.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np
import pytest

from benchmarks import floor, harness, interleave
from benchmarks.names import REFERENCE, STAGES

STEPS = harness.steps()
# (rounds, warm-up rounds) per size and stage; every case has already run each stage once in ``prepare``.
ROUNDS: dict[str, dict[str, tuple[int, int]]] = {
    "tiny": {"encoder": (50, 5), "step": (100, 10), "chunk": (30, 3), "act": (30, 3)},
    "small": {"encoder": (15, 2), "step": (30, 3), "chunk": (8, 1), "act": (8, 1)},
    "full": {"encoder": (3, 0), "step": (3, 0), "chunk": (2, 0), "act": (2, 0)},
}
AGREEMENT = 1e-3  # max |Δaction| between fp32 implementations of the same weights and noise

Runner = Union[harness.OursRunner, harness.OfficialRunner]
CHUNKS: dict[tuple[str, str], np.ndarray] = {}  # (size, backend) → the chunk's actions


@dataclass
class Case:
    size: str
    backend: str
    runner: Runner
    encoder: floor.Work
    step: floor.Work


LOADED: dict[tuple[str, str], Case] = {}  # the cases of one size, kept loaded for the side-by-side rounds


def load_case(size: str, backend: str) -> Case:
    """One (size, backend): a loaded runner with its inputs bound and its stages run once; kept until a case of
    another size is loaded (at most one size's runners in memory: the full size needs GBs per backend)."""
    from xvla.config import load_config
    from xvla.sizes import size_config

    if (size, backend) in LOADED:
        return LOADED[(size, backend)]
    for key in [k for k in LOADED if k[0] != size]:
        LOADED.pop(key).runner.close()
    cfg, image_size = load_config(harness.checkpoint(size)), size_config(size)[1]
    if backend.startswith("official"):
        setup = harness.official_setup()
        if setup is None:
            pytest.skip("set XVLA_OFFICIAL_SRC and XVLA_OFFICIAL_PYTHON to run the official implementation")
        runner: Runner = harness.OfficialRunner(size, *setup)
        shapes = floor.Shapes(image_size, text_tokens=cfg.text_tokens, precision="fp32")
    else:
        if backend.startswith("torch"):
            pytest.importorskip("torch")
        try:
            runner = harness.OursRunner(size, backend)
        except harness.BuildError as e:
            harness.SESSION.setdefault("not_measured", {})[f"{size} {backend}"] = str(e)
            pytest.skip(str(e))
        shapes = floor.Shapes.from_manifest(runner.manifest)
    runner.prepare(harness.Inputs.make(cfg, image_size, views=shapes.views))
    harness.measure_machine()
    LOADED[(size, backend)] = Case(size, backend, runner, floor.encoder_work(cfg, shapes), floor.step_work(cfg, shapes))
    return LOADED[(size, backend)]


@pytest.fixture(scope="session", autouse=True)
def _close_loaded():
    yield
    while LOADED:
        LOADED.popitem()[1].runner.close()


@pytest.fixture(scope="session", params=[(s, b) for s in harness.selected_sizes() for b in harness.selected_backends()],
                ids=lambda p: f"{p[0]}-{p[1]}")
def case(request: pytest.FixtureRequest) -> Case:
    return load_case(*request.param)


def measure(benchmark, case: Case, stage: str, fn: Callable[[], None]) -> None:
    """Time ``fn`` with pytest-benchmark and record the work and floor next to the median.

    The floor uses the best machine rates measured so far; the session's end recomputes it with the best
    of all its measurements (``benchmarks/conftest.py``).
    """
    rounds, warmup = ROUNDS[case.size][stage]
    if os.environ.get("XVLA_BENCH_ROUNDS"):
        rounds = int(os.environ["XVLA_BENCH_ROUNDS"])
    benchmark.group = f"{stage}-{case.size}"
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup, iterations=1)
    n_enc, n_step = floor.stage_calls(stage, STEPS)
    work = case.encoder * n_enc + case.step * n_step
    info = {
        "stage": stage, "size": case.size, "backend": case.backend, "precision": case.backend.rsplit("-", 1)[1],
        "steps": n_step, "chunk_steps": STEPS, "threads": harness.threads(), "flops": work.flops,
        "weight_bytes": work.weight_bytes, "encoder_flops": case.encoder.flops,
        "encoder_weight_bytes": case.encoder.weight_bytes, "step_flops": case.step.flops,
        "step_weight_bytes": case.step.weight_bytes, "loadavg": list(os.getloadavg()),
    }
    if benchmark.stats is not None:  # None under --benchmark-disable
        info["median_s"] = benchmark.stats.stats.median  # ratios between backends: test_side_by_side
        harness.RESULTS.append(info)
    harness.refloor(info, harness.best_machine())
    benchmark.extra_info.update(info)


def test_encoder(benchmark, case: Case) -> None:
    measure(benchmark, case, "encoder", case.runner.encode)


def test_step(benchmark, case: Case) -> None:
    measure(benchmark, case, "step", case.runner.step)


def test_chunk(benchmark, case: Case) -> None:
    measure(benchmark, case, "chunk", lambda: case.runner.chunk(STEPS))
    actions = case.runner.actions()
    CHUNKS[(case.size, case.backend)] = actions
    diffs = {b: float(np.max(np.abs(actions - a))) for (s, b), a in CHUNKS.items()
             if s == case.size and b != case.backend}
    benchmark.extra_info["max_abs_diff_vs"] = diffs
    if case.backend.endswith("fp32"):
        for other, diff in diffs.items():
            if other.endswith("fp32"):
                assert diff < AGREEMENT, f"{case.backend} and {other} disagree by {diff:.2e} on the same chunk"


def test_act(benchmark, case: Case) -> None:
    if not isinstance(case.runner, harness.OursRunner):
        pytest.skip("Policy.act (with preprocessing) is ours only")
    measure(benchmark, case, "act", lambda: case.runner.act(STEPS))


def stage_call(case: Case, stage: str) -> Callable[[], None] | None:
    """What a stage runs for a case (None: the stage is not this runner's, e.g. ``act`` of the official one)."""
    r = case.runner
    if stage == "act":
        return (lambda: r.act(STEPS)) if isinstance(r, harness.OursRunner) else None
    return {"encoder": r.encode, "step": r.step, "chunk": lambda: r.chunk(STEPS)}[stage]


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("size", harness.selected_sizes())
def test_side_by_side(size: str, stage: str) -> None:
    """Every backend of a size round by round (A B A B ..., same inputs); each ratio the median of the per-round
    ratios with its min–max (:mod:`benchmarks.interleave`): what the comparisons between backends report."""
    cases = {}
    for backend in harness.selected_backends():
        try:
            cases[backend] = load_case(size, backend)
        except pytest.skip.Exception:
            continue
    calls = {b: fn for b, c in cases.items() if (fn := stage_call(c, stage)) is not None}
    if len(calls) < 2:
        pytest.skip(f"fewer than two backends run the {stage} of {size}")
    rounds, warmup = ROUNDS[size][stage]
    if os.environ.get("XVLA_BENCH_ROUNDS"):
        rounds = int(os.environ["XVLA_BENCH_ROUNDS"])
    times = interleave.interleaved(calls, rounds, warmup)
    harness.SIDE_BY_SIDE.append({"size": size, "stage": stage, "order": list(calls), "rounds": rounds,
                                 "warmup": warmup, "median_s": {b: statistics.median(t) for b, t in times.items()},
                                 "ratios": [r.to_dict() for r in side_by_side_ratios(times)]})


def side_by_side_ratios(times: dict[str, list[float]]) -> list[interleave.Ratio]:
    """official / each of ours (> 1: ours is faster); each of ours other than the reference / the reference
    (fp16 / fp32, torch / ONNX Runtime)."""
    ours = [b for b in times if not b.startswith("official")]
    out = [interleave.ratio(times, o, b) for o in times if o.startswith("official") for b in ours]
    if REFERENCE in times:
        out += [interleave.ratio(times, b, REFERENCE) for b in ours if b != REFERENCE]
    return out
