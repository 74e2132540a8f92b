"""``xvla-edge bench``: its parser, the suite's selection environment and ``--render`` (no benchmark is run here)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

import benchmarks
from benchmarks.suites import SUITE, suite_environment
from xvla_edge import cli
from xvla_edge.commands.bench import backend_names

RECORDED = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "x86_64-amd-epyc-2c" / "tiny-small.json"
SELECTION = ("XVLA_BENCH_BACKENDS", "XVLA_BENCH_ROUNDS", "XVLA_BENCH_THREADS", "XVLA_OFFICIAL_SRC",
             "XVLA_OFFICIAL_PYTHON")


def parse(monkeypatch: pytest.MonkeyPatch, *args: str) -> argparse.Namespace:
    for var in SELECTION:
        monkeypatch.delenv(var, raising=False)
    parser, _ = cli.build_parser()
    return parser.parse_args(["bench", *args])


def test_backend_families_expand() -> None:
    assert backend_names("onnxruntime") == ["onnxruntime-fp32", "onnxruntime-fp16"]
    assert backend_names("torch-fp32") == ["torch-fp32"]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown backend 'tensorrt'"):
        backend_names("tensorrt")


def test_parser_accepts_the_documented_flags(monkeypatch) -> None:
    args = parse(monkeypatch, "--size", "tiny", "full", "--backend", "onnxruntime", "torch-fp32", "--steps", "3",
                 "--rounds", "2", "--threads", "1", "--official-src", "/src", "--official-python", "/py",
                 "--out", "results", "--machine-id", "m", "--render", "run.json")
    assert args.size == ["tiny", "full"]
    assert args.backend == [["onnxruntime-fp32", "onnxruntime-fp16"], ["torch-fp32"]]
    assert (args.steps, args.rounds, args.threads) == (3, 2, 1)
    assert (args.official_src, args.official_python, args.machine_id) == ("/src", "/py", "m")
    assert (args.out, args.render) == (Path("results"), Path("run.json"))


def test_parser_defaults_write_under_the_current_directory(monkeypatch) -> None:
    args = parse(monkeypatch)
    assert args.size == ["tiny", "small"] and args.backend is None and args.steps == 10
    assert args.out == Path("benchmarks", "results") and not args.out.is_absolute()
    assert args.official_src is None and args.render is None


def test_help_documents_the_results_directory(monkeypatch, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(monkeypatch, "--help")
    assert exit_info.value.code == 0
    assert "benchmarks/results in the current directory" in " ".join(capsys.readouterr().out.split())


def test_the_suite_ships_in_the_package() -> None:
    assert SUITE.is_file() and SUITE.parent == Path(benchmarks.__file__).resolve().parent


def test_suite_environment_selects_the_cases(monkeypatch, tmp_path) -> None:
    for var in SELECTION:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    env = suite_environment(["tiny", "small"], ["onnxruntime-fp32", "torch-fp32", "onnxruntime-fp32"], steps=3,
                            rounds=2, threads=1, official=("src", "py"))
    assert (env["XVLA_BENCH_SIZES"], env["XVLA_BENCH_BACKENDS"]) == ("tiny,small", "onnxruntime-fp32,torch-fp32")
    assert (env["XVLA_BENCH_STEPS"], env["XVLA_BENCH_ROUNDS"], env["HF_HUB_OFFLINE"]) == ("3", "2", "1")
    threads = ("XVLA_BENCH_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    assert {env[v] for v in threads} == {"1"}
    assert (env["XVLA_OFFICIAL_SRC"], env["XVLA_OFFICIAL_PYTHON"]) == (str(tmp_path.resolve() / "src"), "py")
    default = suite_environment(["tiny"])
    assert (default["XVLA_BENCH_SIZES"], default["XVLA_BENCH_STEPS"]) == ("tiny", "10")
    assert not set(SELECTION) & set(default)


def test_render_writes_the_results_under_the_current_directory(monkeypatch, tmp_path, capsys) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["bench", "--render", str(RECORDED)]) == 0
    out = tmp_path / "benchmarks" / "results" / "x86_64-amd-epyc-2c"
    assert sorted(p.name for p in out.iterdir()) == ["tiny-small.json", "tiny-small.md", "tiny-small.png"]
    assert capsys.readouterr().out == f"results: {Path('benchmarks', 'results', out.name)}/tiny-small.{{json,md,png}}\n"
    assert cli.main(["bench", "--render", str(RECORDED), "--out", str(tmp_path / "o"), "--machine-id", "m"]) == 0
    assert (tmp_path / "o" / "m" / "tiny-small.md").read_text() == (out / "tiny-small.md").read_text()
