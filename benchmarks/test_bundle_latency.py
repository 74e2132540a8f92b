"""Latency of one installed or flashed bundle on its real backend: encoder, one step, a chunk, ``Policy.act``.

What a robot runs is a bundle (often the one ``xvla-edge flash`` keeps as ``current``) on the backend it was
built for (TensorRT engines on a Jetson), not a checkpoint: this suite needs nothing but the bundle and the
runtime, so it runs from an installed wheel without torch. Run it with ``xvla-edge bench --bundle DIR``
(``--backend auto|onnxruntime|tensorrt``, ``--device cpu|cuda``, ``--steps``, ``--rounds``), which sets
``XVLA_BENCH_BUNDLE``, ``XVLA_BENCH_BUNDLE_BACKEND`` and ``XVLA_BENCH_DEVICE`` (skipped without the first).

Inputs are the bundle's own: three 480×640 camera images and an instruction through the bundle's
preprocessing, fixed noise. The floor is the weight floor: every call streams the graph's weights (the
bundle's ONNX files, at its precision) once, at the copy bandwidth measured on this machine. A bundle
records no FLOP count (that needs the checkpoint's configuration: ``xvla-edge bench --size`` has it), so the
compute side of the roofline is not in this floor; the results say so (``floor_kind``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from benchmarks import floor, harness
from benchmarks.harness import CAMERA_SHAPE

BUNDLE = os.environ.get("XVLA_BENCH_BUNDLE")
ROUNDS = {"encoder": (20, 2), "step": (50, 5), "chunk": (10, 1), "act": (10, 1)}
INSTRUCTION = "pick up the red block"


@dataclass
class BundleCase:
    policy: object
    backend: str
    device: str
    inputs: tuple
    observation: object
    encoder: floor.Work
    step: floor.Work


def graph_bytes(bundle: Path, manifest: object, graph: str) -> int:
    """Bytes of one graph's files in the bundle (the .onnx and its external weights)."""
    name = manifest.raw["graphs"][graph]["file"]  # type: ignore[attr-defined]
    return sum((bundle / f).stat().st_size for f in manifest.raw["files"]  # type: ignore[attr-defined]
               if f == name or f.startswith(name + "."))


@pytest.fixture(scope="module")
def case():
    if not BUNDLE:
        pytest.skip("set XVLA_BENCH_BUNDLE (xvla-edge bench --bundle DIR)")
    from runtime.policy import Policy
    from runtime.types import Observation

    bundle = Path(BUNDLE).resolve()  # `current` of a flashed robot is a link: measure what it points at
    backend = os.environ.get("XVLA_BENCH_BUNDLE_BACKEND", "auto")
    device = os.environ.get("XVLA_BENCH_DEVICE", "cpu")
    options = {"threads": harness.threads()} if backend == "onnxruntime" or (backend == "auto" and device == "cpu") \
        else {}
    policy = Policy.load(bundle, backend=backend, device=device, **options)
    rng = np.random.default_rng(0)
    views = int(policy.manifest.inputs["views"])
    observation = Observation(images=[rng.integers(0, 256, CAMERA_SHAPE, dtype=np.uint8) for _ in range(views)],
                              instruction=INSTRUCTION, proprio=np.zeros(int(policy.manifest.inputs["proprio_dim"]),
                                                                        np.float32),
                              noise=rng.standard_normal(policy.chunk_shape[1:], dtype=np.float32))
    inputs = policy.preprocess(observation)
    name = type(policy.backend).__name__.replace("Backend", "").lower()
    c = BundleCase(policy, f"{name}-{policy.manifest.precision}", device, inputs, observation,
                   floor.Work(0.0, graph_bytes(bundle, policy.manifest, "encoder")),
                   floor.Work(0.0, graph_bytes(bundle, policy.manifest, "denoise")))
    c.policy.backend.encode(*inputs[:3])
    c.policy.backend.denoise(inputs[4], inputs[3], 1)
    harness.measure_machine()
    yield c
    policy.close()


def measure(benchmark, c: BundleCase, stage: str, fn: Callable[[], None]) -> None:
    rounds, warmup = ROUNDS[stage]
    if os.environ.get("XVLA_BENCH_ROUNDS"):
        rounds = int(os.environ["XVLA_BENCH_ROUNDS"])
    benchmark.group = f"{stage}-bundle"
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup, iterations=1)
    n_enc, n_step = floor.stage_calls(stage, harness.steps())
    manifest = c.policy.manifest
    info = {
        "stage": stage, "size": "bundle", "backend": c.backend, "precision": manifest.precision, "device": c.device,
        "bundle": str(Path(BUNDLE).resolve()), "bundle_id": manifest.bundle_id, "embodiment": manifest.embodiment,
        "steps": n_step, "chunk_steps": harness.steps(), "threads": harness.threads(), "floor_kind": "weights",
        "flops": 0.0, "weight_bytes": c.encoder.weight_bytes * n_enc + c.step.weight_bytes * n_step,
        "encoder_flops": 0.0, "encoder_weight_bytes": c.encoder.weight_bytes, "step_flops": 0.0,
        "step_weight_bytes": c.step.weight_bytes, "loadavg": list(os.getloadavg()),
    }
    if benchmark.stats is not None:
        info["median_s"] = benchmark.stats.stats.median
        harness.RESULTS.append(info)
    harness.refloor(info, harness.best_machine())
    benchmark.extra_info.update(info)


def test_encoder(benchmark, case: BundleCase) -> None:
    pixels, mask, ids = case.inputs[:3]
    measure(benchmark, case, "encoder", lambda: case.policy.backend.encode(pixels, mask, ids))


def test_step(benchmark, case: BundleCase) -> None:
    measure(benchmark, case, "step", lambda: case.policy.backend.denoise(case.inputs[4], case.inputs[3], 1))


def test_chunk(benchmark, case: BundleCase) -> None:
    pixels, mask, ids, proprio, x1 = case.inputs

    def chunk() -> None:
        case.policy.backend.encode(pixels, mask, ids)
        case.policy.backend.denoise(x1, proprio, harness.steps())

    measure(benchmark, case, "chunk", chunk)
    assert np.isfinite(np.asarray(case.policy.backend.denoise(x1, proprio, harness.steps()))).all()


def test_act(benchmark, case: BundleCase) -> None:
    measure(benchmark, case, "act", lambda: case.policy.act(case.observation, steps=harness.steps()))
