"""The latency results files (:mod:`benchmarks.report`) from pytest-benchmark JSON (no benchmark is run here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.report import machine_id, write_results

pytest.importorskip("matplotlib")

RECORDED = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "x86_64-amd-epyc-2c"


@pytest.mark.parametrize("model, cores, arch, expected", [
    ("AMD EPYC", 2, "x86_64", "x86_64-amd-epyc-2c"),
    ("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", 8, "x86_64", "x86_64-intel-xeon-platinum-8375c-8c"),
    ("ARMv8 Processor rev 1 (v8l)", 12, "aarch64", "aarch64-armv8-rev-1-v8l-12c"),
])
def test_machine_id_is_a_short_slug(model: str, cores: int, arch: str, expected: str) -> None:
    assert machine_id(model, cores, arch) == expected


def _benchmark(stage: str, backend: str, median: float, floor: float) -> dict:
    info = {"stage": stage, "size": "tiny", "backend": backend, "precision": backend.rsplit("-", 1)[1],
            "steps": {"encoder": 0, "step": 1}.get(stage, 10), "threads": 2, "floor_s": floor,
            "loadavg": [1.5, 1.0, 1.0], "max_abs_diff_vs": {"onnxruntime-fp32": 1e-7} if stage == "chunk" else {}}
    return {"extra_info": info, "stats": {"median": median, "iqr": median / 10, "rounds": 5}}


def test_results_table_has_floor_ratio_and_official_ratio(tmp_path) -> None:
    data = {
        "datetime": "2026-01-01T00:00:00.000000", "commit_info": {"id": "0123456789abcdef", "dirty": False},
        "machine_info": {"machine": "x86_64", "release": "6.1", "xvla": {
            "cpu_model": "AMD EPYC", "cores": 2, "flags": ["sse2", "avx2", "fma"], "versions": {"numpy": "2"},
            "machine": {"gflops": 100.0, "gbps": 10.0, "method": "test"},
            "loadavg_start": [0.5], "loadavg_end": [2.0],
            "targets": [{"target": "Orin", "size": "full", "encoder_s": 0.01, "step_s": 0.004, "chunk_s": 0.05,
                         "tflops": 42.5, "gbps": 204.8, "source": "brief"}]}},
        "benchmarks": [_benchmark("chunk", "onnxruntime-fp32", 0.02, 0.01),
                       _benchmark("chunk", "official-fp32", 0.08, 0.01),
                       _benchmark("encoder", "onnxruntime-fp32", 0.004, 0.002)],
    }
    out, label = write_results(data, tmp_path)
    assert (out.name, label) == ("x86_64-amd-epyc-2c", "tiny")
    md = (out / "tiny.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[1] == "| encoder | tiny | onnxruntime-fp32 | 4 ms | 400 µs | 5 | 2 ms | 2.0 |  |"
    assert table[2] == "| chunk | tiny | onnxruntime-fp32 | 20 ms | 2 ms | 5 | 10 ms | 2.0 | 4.00 |"
    assert "avx2 fma" in md and "| Orin | 42.5 TFLOPS | 204.8 GB/s | 10 ms | 4 ms | 50 ms |" in md
    assert "official-fp32: 1.0e-07" in md
    assert (out / "tiny.png").stat().st_size > 0 and (out / "tiny.json").is_file()


def test_side_by_side_ratios_replace_the_ratio_of_medians(tmp_path) -> None:
    """A run with interleaved rounds reports their per-round ratios: official / ours with its min–max, and every
    ratio in its own section; the sentence naming the figures to compare says so."""
    side = [{"size": "tiny", "stage": "chunk", "order": ["onnxruntime-fp32", "onnxruntime-fp16", "official-fp32"],
             "rounds": 5, "warmup": 1, "median_s": {},
             "ratios": [{"numerator": "official-fp32", "denominator": "onnxruntime-fp32", "median": 1.25, "min": 1.1,
                         "max": 1.4, "rounds": 5},
                        {"numerator": "onnxruntime-fp16", "denominator": "onnxruntime-fp32", "median": 1.5,
                         "min": 1.45, "max": 1.62, "rounds": 5}]}]
    data = {
        "datetime": "2026-01-01T00:00:00.000000", "commit_info": {"id": "0123456789abcdef", "dirty": False},
        "machine_info": {"machine": "x86_64", "release": "6.1", "xvla": {
            "cpu_model": "AMD EPYC", "cores": 2, "flags": [], "versions": {"numpy": "2"},
            "machine": {"gflops": 100.0, "gbps": 10.0, "method": "test"}, "loadavg_start": [0.5],
            "loadavg_end": [2.0], "targets": [], "side_by_side": side}},
        # sequential medians say 4.00: the side-by-side 1.25 is what the table must show
        "benchmarks": [_benchmark("chunk", "onnxruntime-fp32", 0.02, 0.01),
                       _benchmark("chunk", "official-fp32", 0.08, 0.01)],
    }
    out, label = write_results(data, tmp_path)
    md = (out / f"{label}.md").read_text()
    assert "| chunk | tiny | onnxruntime-fp32 | 20 ms | 2 ms | 5 | 10 ms | 2.0 | 1.25 (1.10–1.40) |" in md
    assert "| chunk | tiny | onnxruntime-fp16 / onnxruntime-fp32 | 1.50 | 1.45–1.62 | 5 |" in md
    assert "the side-by-side ratios (backends round by round" in md and "ratios taken in this one run" not in md


@pytest.mark.parametrize("label", ["tiny-small", "full"])
def test_recorded_run_renders_to_its_committed_files(tmp_path, label: str) -> None:
    """The committed JSON of a real run gives back the committed markdown and JSON, byte for byte."""
    data = json.loads((RECORDED / f"{label}.json").read_text())
    out, written = write_results(data, tmp_path)
    assert (out.name, written) == (RECORDED.name, label)
    assert (out / f"{label}.md").read_text() == (RECORDED / f"{label}.md").read_text()
    assert (out / f"{label}.json").read_bytes() == (RECORDED / f"{label}.json").read_bytes()
    assert (out / f"{label}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
