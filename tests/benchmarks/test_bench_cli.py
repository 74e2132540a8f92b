"""``xvla-edge bench``: its parser, the suite's selection environment and ``--render`` (no benchmark is run here)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

import benchmarks
from benchmarks.suites import SUITE, suite_environment
from xvla_edge import cli
from xvla_edge.commands.bench import backend_names, selected

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
    assert args.backend == ["onnxruntime", "torch-fp32"]
    assert selected(args) == ["onnxruntime-fp32", "onnxruntime-fp16", "torch-fp32"]
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


@pytest.mark.parametrize("steps", ["0", "1000000000", "ten", "2.5"])
def test_an_absurd_step_count_is_refused_by_the_parser(monkeypatch, capsys, steps) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(monkeypatch, "--steps", steps)
    assert exit_info.value.code == 2 and "--steps: expected an integer 1 ... 100" in capsys.readouterr().err


def test_bundle_flags_are_checked_before_anything_runs(monkeypatch, tmp_path, capsys) -> None:
    args = parse(monkeypatch, "--bundle", str(tmp_path), "--backend", "tensorrt", "--device", "cuda")
    assert (args.bundle, selected(args), args.device) == (tmp_path, "tensorrt", "cuda")
    assert selected(parse(monkeypatch, "--bundle", str(tmp_path))) == "auto"
    pytest.importorskip("pytest_benchmark")
    pytest.importorskip("matplotlib")
    for argv, message in (
        (["--bundle", str(tmp_path), "--backend", "torch-fp32"], "--bundle takes one --backend of auto, onnxruntime"),
        (["--device", "cuda"], "--device is for --bundle"),
        (["--backend", "tensorrt"], "unknown backend 'tensorrt'"),
        (["--bundle", str(tmp_path)], f"--bundle {tmp_path}: no manifest.json there"),
    ):
        assert cli.main(["bench", *argv]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.subprocess
def test_a_bundle_is_measured_on_its_backend_with_its_weight_floor(tiny_bundle, tmp_path, monkeypatch, capsys) -> None:
    """The bundle suite end to end (a child pytest-benchmark run): four stages of the bundle itself, each with
    the weight floor of the bytes its graphs stream per call, written like the size suites' results."""
    pytest.importorskip("pytest_benchmark")
    pytest.importorskip("matplotlib")
    import json

    monkeypatch.chdir(tmp_path)
    code = cli.main(["bench", "--bundle", str(tiny_bundle), "--backend", "onnxruntime", "--steps", "2",
                     "--rounds", "2", "--threads", "1", "--out", "res", "--machine-id", "m"])
    assert code == 0, capsys.readouterr()
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    (result,) = (tmp_path / "res" / "m").glob("bundle-*.json")
    data = json.loads(result.read_text())
    rows = {b["extra_info"]["stage"]: b["extra_info"] for b in data["benchmarks"]}
    assert set(rows) == {"encoder", "step", "chunk", "act"}
    files = {name: (tiny_bundle / name).stat().st_size for name in manifest["files"]}
    encoder = sum(n for name, n in files.items() if name.startswith("encoder.onnx"))
    step = sum(n for name, n in files.items() if name.startswith("denoise.onnx"))
    for stage, (n_enc, n_step) in {"encoder": (1, 0), "step": (0, 1), "chunk": (1, 2), "act": (1, 2)}.items():
        info = rows[stage]
        assert (info["size"], info["backend"], info["floor_kind"]) == ("bundle", "onnxruntime-fp32", "weights")
        assert info["weight_bytes"] == n_enc * encoder + n_step * step
        assert info["floor_s"] == pytest.approx(info["weight_bytes"] / (info["machine_gbps"] * 1e9))
    assert "xvla" in data["machine_info"] and data["machine_info"]["xvla"]["cores"] >= 1
    md = result.with_suffix(".md").read_text()
    assert manifest_id(tiny_bundle)[:12] in result.name and "weight floor only" in md
    assert result.with_suffix(".png").is_file()


def manifest_id(bundle: Path) -> str:
    from runtime.manifest import Manifest

    return Manifest.load(bundle).bundle_id
