"""Session plumbing of the latency suites: machine details in the benchmark JSON, a floor table at the end.

Only results recorded in :data:`benchmarks.harness.RESULTS` (the X-VLA latency suites) are printed; other benchmark
files in this directory are unaffected.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if os.environ.get("XVLA_BENCH_THREADS"):  # BLAS/OpenMP read these once, when numpy or torch is first imported
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, os.environ["XVLA_BENCH_THREADS"])

import pytest  # noqa: E402

from benchmarks import floor, harness  # noqa: E402
from benchmarks.machine import cpu_flags, cpu_model  # noqa: E402
from benchmarks.harness import RESULTS, SESSION, SIDE_BY_SIDE  # noqa: E402
from benchmarks.names import FLOOR_STAGES  # noqa: E402

PACKAGES = ("numpy", "onnxruntime", "torch", "transformers", "onnx", "pytest-benchmark", "matplotlib")


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny fp32 bundle (domain 3: one arm, end effector, 1 s chunks; one view) of random weights, for the
    benchmarks that drive the daemon."""
    from export.bundle import ExportOptions, export_bundle
    from xvla.random_checkpoint import write_random_checkpoint

    ckpt = write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", "tiny", seed=0)
    out = tmp_path_factory.mktemp("bundle") / "tiny-fp32"
    export_bundle(ckpt, out, ExportOptions(domain_id=3, views=1), progress=lambda line: None)
    return out


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


@pytest.hookimpl(trylast=True)  # after pytest's own grouping by fixture parameters
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """In the latency suites, each size's side-by-side rounds right after that size's cases, while its runners are
    still loaded (they keep one size loaded at a time)."""
    for suite in ("test_xvla_latency.py", "test_gpu_latency.py"):
        slots = [i for i, item in enumerate(items) if item.path.name == suite and hasattr(item, "callspec")]
        ordered = sorted((items[i] for i in slots), key=lambda item: _size_rank(item.callspec.params))
        for i, item in zip(slots, ordered):
            items[i] = item


def _size_rank(params: dict[str, Any]) -> int:
    size = params["size"] if "size" in params else params["case"][0]
    return harness.selected_sizes().index(size)


def pytest_sessionstart(session: pytest.Session) -> None:
    SESSION["loadavg_start"] = list(os.getloadavg())


_FINAL: list[floor.Machine] = []


def finalize() -> floor.Machine:
    """Measure the machine once more at the end and recompute every floor with the best rates seen."""
    if not _FINAL:
        _FINAL.append(harness.measure_machine())
        for info in RESULTS:
            harness.refloor(info, _FINAL[0])
    return _FINAL[0]


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    if not RESULTS:
        return
    finalize()
    machine_info["xvla"] = {
        "cpu_model": cpu_model(), "cores": os.cpu_count(), "flags": cpu_flags(), "versions": versions(),
        **SESSION, "loadavg_end": list(os.getloadavg()),
        "targets": target_floors(), "side_by_side": SIDE_BY_SIDE,
    }


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict[str, Any]) -> None:
    """Write the final floors (best rates of the whole session) into the JSON's extra_info."""
    if RESULTS:
        machine = finalize()
        for bench in output_json["benchmarks"]:
            if "stage" in bench["extra_info"]:
                harness.refloor(bench["extra_info"], machine)


def target_floors() -> list[dict[str, Any]]:
    """Predicted floors of the full model on the published deployment targets (fp16 weights)."""
    from xvla.sizes import size_config

    cfg, image_size = size_config("full")
    out = []
    for t in floor.TARGETS:
        shapes = floor.Shapes(image_size, text_tokens=cfg.text_tokens, precision=t.precision)
        f = floor.stage_floors(cfg, shapes, t, harness.steps())
        out.append({"target": t.name, "size": "full", "precision": t.precision, "source": t.source,
                    "tflops": t.flops_per_s / 1e12, "gbps": t.bytes_per_s / 1e9,
                    **{f"{stage}_s": f[stage] for stage in FLOOR_STAGES}})
    return out


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    finalize()
    tr = terminalreporter
    tr.section("X-VLA latency against the physical floor (median; floor = max(FLOPs/rate, weight bytes/bandwidth))")
    machine = SESSION.get("machine", {})
    if machine:
        tr.write_line(f"this machine: {machine['gflops']:.1f} GFLOP/s fp32 GEMM, {machine['gbps']:.1f} GB/s copy; "
                      f"load average at start {SESSION['loadavg_start'][0]:.2f}")
    header = ("stage", "size", "backend", "median", "floor", "ratio")
    tr.write_line(f"{header[0]:<8} {header[1]:<6} {header[2]:<18} " + " ".join(f"{h:>10}" for h in header[3:]))
    for r in RESULTS:
        tr.write_line(f"{r['stage']:<8} {r['size']:<6} {r['backend']:<18} {_fmt(r['median_s']):>10} "
                      f"{_fmt(r['floor_s']):>10} {r['ratio']:>10.1f}")
    if SIDE_BY_SIDE:
        tr.section("Side by side: backends round by round (A B A B ...); median of the per-round ratios (min–max)")
        for c in SIDE_BY_SIDE:
            for r in c["ratios"]:
                tr.write_line(f"{c['stage']:<8} {c['size']:<6} {r['numerator'] + ' / ' + r['denominator']:<38} "
                              f"{r['median']:>6.2f} ({r['min']:.2f}–{r['max']:.2f}, {r['rounds']} rounds)")
