"""``make gpu-check`` (tools/gpu_check.py) without a GPU: its dry run, and how it reads its steps' outcomes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tools import gpu_check
from tools.gpu_check import STEPS, Result, Step, install_plan, pytest_result

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.subprocess
def test_the_dry_run_checks_every_step_and_says_there_is_no_gpu(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "tools/gpu_check.py", "--dry-run", "--work", str(tmp_path),
                           "--python", sys.executable], cwd=REPO, capture_output=True, text=True, timeout=600)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [line.split(":")[0] for line in lines[:-1]] == ["env", *(s.name for s in STEPS)]
    for step, line in zip(STEPS, lines[1:-1]):
        assert line.startswith(f"{step.name}: PASS: wired: "), line
        assert f"timeout {step.timeout} s" in line
        if not step.script:
            assert int(line.split("wired: ")[1].split()[0]) >= 1  # its tests were collected
    assert lines[-1].startswith("gpu-check: ") and "dry run only" in lines[-1]
    assert lines[-1].endswith(f"all {len(STEPS) + 1} steps wired")
    if gpu_check.driver_cuda() is None:  # this machine: the one line names why
        proc = subprocess.run([sys.executable, "tools/gpu_check.py", "--work", str(tmp_path), "--steps", "floor"],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0
        assert proc.stdout.splitlines()[-1].startswith("gpu-check: no NVIDIA GPU here (libcuda.so.1 does not load)")
        assert not (tmp_path / "venv").exists()  # nothing installed


@pytest.mark.subprocess
def test_a_step_whose_tests_are_gone_is_not_wired(tmp_path: Path) -> None:
    steps = [Step("gone", "a renamed test", 60, ("tests/runtime/test_gpu_paths.py",), ("-k", "no_such_test")),
             Step("missing", "a moved file", 60, ("tests/runtime/no_such_file.py",)),
             Step("slow", "over the budget", gpu_check.BUDGET + 1, script="pass"),
             Step("batched", "the batched tests", 60, ("tests/runtime/test_gpu_paths.py",), ("-k", "batched")),
             Step("again", "the batched tests again", 60, ("tests/runtime/test_gpu_paths.py",), ("-k", "batch"))]
    results = {r.name: r for r in gpu_check.check_wiring(steps, sys.executable, tmp_path)}
    assert results["gone"].status == "FAIL" and "pytest collects nothing" in results["gone"].detail
    assert results["missing"].status == "FAIL" and "no_such_file.py: no such file" in results["missing"].detail
    assert results["slow"].status == "FAIL" and f"timeout {gpu_check.BUDGET + 1} s is not within" in \
        results["slow"].detail
    assert results["batched"].status == "PASS"
    assert results["again"].status == "FAIL" and "3 test(s) also run by step batched" in results["again"].detail


def test_every_step_has_a_timeout_and_the_budgets_are_the_issues() -> None:
    assert (gpu_check.ENV_BUDGET, gpu_check.BUDGET) == (300, 480)
    assert all(0 < s.timeout <= gpu_check.BUDGET for s in STEPS)
    assert len({s.name for s in STEPS}) == len(STEPS)
    # the parity steps come before the timings, the full size last (the budget cuts from the end)
    assert [s.name for s in STEPS][-2:] == ["timing", "timing-full"]


def test_the_environment_comes_from_setup_cfg_and_the_driver() -> None:
    (x86,) = install_plan(13, jetson=False)
    assert x86 == ["-e", f"{REPO}[export,onnxruntime-gpu,test,cuda13]"]
    (jetson,) = install_plan(12, jetson=True)
    assert jetson[:2] == ["-e", f"{REPO}[test,cuda12]"]
    assert not [r for r in jetson if r.startswith("torch")]  # JetPack's torch stays
    assert "onnx==1.23.2" in jetson and any(r.startswith("transformers==") for r in jetson)
    assert gpu_check.check_env_plan().status == "PASS"


def _junit(path: Path, *cases: str) -> Path:
    path.write_text('<?xml version="1.0"?><testsuites><testsuite>' + "".join(cases) + "</testsuite></testsuites>")
    return path


PASSED = '<testcase classname="t" name="test_a"/>'
SKIPPED = '<testcase classname="t" name="test_b"><skipped message="needs onnxruntime-gpu"/></testcase>'
FAILED = '<testcase classname="t" name="test_c"><failure message="AssertionError: 3e-4 &gt; 1e-5">tb</failure></testcase>'


@pytest.mark.parametrize("cases, rc, status, detail", [
    ((PASSED, SKIPPED), 0, "PASS", "1 passed, 1 skipped (needs onnxruntime-gpu)"),
    ((SKIPPED, SKIPPED), 0, "SKIPPED", "needs onnxruntime-gpu"),
    ((PASSED, FAILED), 1, "FAIL", "1 failed (test_c): AssertionError: 3e-4 > 1e-5"),
    ((), 5, "FAIL", "no test collected (the step is not wired)"),
    ((PASSED,), 2, "FAIL", "pytest exited with status 2 (interrupted, or a usage or internal error)"),
])
def test_a_steps_result_comes_from_its_junit_report(tmp_path: Path, cases, rc, status, detail) -> None:
    r = pytest_result("step", rc, _junit(tmp_path / "r.xml", *cases), "")
    assert (r.status, r.detail) == (status, detail)


def test_a_step_without_a_report_failed_and_says_how() -> None:
    r = pytest_result("step", 4, Path("/nonexistent.xml"), "ERROR: file or directory not found: x\n")
    assert (r.status, r.detail) == ("FAIL", "pytest wrote no report (ERROR: file or directory not found: x)")


def test_result_lines_and_the_summary_table() -> None:
    results = [Result("env", "PASS", "venv from the index in 212 s", 212.4),
               Result("tensorrt", "SKIPPED", "needs TensorRT (`import tensorrt`)", 3.0),
               Result("gate", "FAIL", "1 failed (test_x): 1.08 mm > 1 mm", 40.0)]
    assert [r.line() for r in results] == ["env: PASS: venv from the index in 212 s [212 s]",
                                           "tensorrt: SKIPPED(needs TensorRT (`import tensorrt`)) [3 s]",
                                           "gate: FAIL: 1 failed (test_x): 1.08 mm > 1 mm [40 s]"]
    table = gpu_check.summary(results).splitlines()
    assert table[0].split() == ["step", "result", "seconds", "detail"]
    assert table[3].split()[:3] == ["gate", "FAIL", "40"]


def test_a_step_with_no_time_left_is_skipped_without_running(tmp_path: Path) -> None:
    r = gpu_check.run_step(STEPS[0], "/nonexistent/python", tmp_path, timeout=2)
    assert (r.status, r.detail) == ("SKIPPED", f"the {gpu_check.BUDGET} s budget is spent")


@pytest.mark.subprocess
def test_the_environment_budget_stops_a_command(tmp_path: Path) -> None:
    ok, why = gpu_check.run_logged([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "env.log", 1)
    assert (ok, why) == (False, "timed out after 1 s")
    ok, why = gpu_check.run_logged([sys.executable, "-c", "raise SystemExit('pip: no matching distribution')"],
                                   tmp_path / "env.log", 30)
    assert (ok, why) == (False, "failed: pip: no matching distribution")
    assert gpu_check.run_logged(["true"], tmp_path / "env.log", 0) == (
        False, "not started: the environment's time budget is spent")


def test_results_go_under_the_gpus_name(tmp_path: Path) -> None:
    probe = {"machine": "x86_64", "gpu": {"name": "NVIDIA H100 80GB HBM3"}}
    assert gpu_check.results_dir(tmp_path, probe) == tmp_path / "x86_64-nvidia-h100-80gb-hbm3"


@pytest.mark.parametrize("jetson, wheels", [(False, None), (True, None), (False, "wheels")])
def test_the_environment_is_built_in_its_order_and_says_how_tensorrt_came(tmp_path: Path, monkeypatch, jetson: bool,
                                                                          wheels: str | None) -> None:
    ran: list[list[str]] = []

    def run_logged(cmd, log, timeout):
        ran.append([str(c) for c in cmd])
        assert 0 < timeout <= 300
        if cmd[1:3] == ["-m", "venv"]:
            Path(cmd[-1]).mkdir(parents=True)
        return (False, "failed: ERROR: No matching distribution found for tensorrt-cu12") if "tensorrt-cu12" in cmd \
            else (True, "")

    monkeypatch.setattr(gpu_check, "run_logged", run_logged)
    monkeypatch.setattr(gpu_check, "tensorrt_version", lambda python: None)
    args = gpu_check.parse(["--work", str(tmp_path), *(["--jetson"] if jetson else []),
                            *(["--wheels", str(tmp_path / wheels)] if wheels else [])])
    env, python = gpu_check.build_env(args, 12)
    assert python == str(tmp_path / "venv" / "bin" / "python") and env.status == "PASS"
    assert ran[0][1:] == ["-m", "venv", *(["--system-site-packages"] if jetson else []), str(tmp_path / "venv")]
    offline = ["--no-index", "--find-links", str(tmp_path / "wheels")] if wheels else []
    assert ran[1][:3] == [python, "-m", "pip"] and ran[1][7:7 + len(offline)] == offline
    assert ran[1][7 + len(offline):] == [w for a in install_plan(12, jetson) for w in a]
    if jetson:  # JetPack's TensorRT or none: never from the index
        assert len(ran) == 2 and env.detail.endswith("TensorRT absent")
    else:
        assert ran[2][-1] == "tensorrt-cu12"
        assert env.detail.endswith("TensorRT absent: `pip install tensorrt-cu12` failed: ERROR: No matching "
                                   "distribution found for tensorrt-cu12")
    ran.clear()
    again, _ = gpu_check.build_env(args, 12)  # the same machine and setup.cfg: the venv is reused, TensorRT not retried
    assert ran == [] and "(reused)" in again.detail and again.detail.endswith(env.detail.split("; ")[-1])


def test_an_environment_step_that_fails_stops_the_build_and_names_its_log(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(gpu_check, "run_logged", lambda cmd, log, timeout: (
        ("-e" not in cmd), "" if "-e" not in cmd else "timed out after 299 s"))
    env, python = gpu_check.build_env(gpu_check.parse(["--work", str(tmp_path)]), 13)
    assert python is None and env.status == "FAIL"
    assert "timed out after 299 s" in env.detail and str(tmp_path / "env.log") in env.detail


@pytest.mark.subprocess
def test_a_run_on_a_machine_whose_gpu_does_not_work_writes_its_results_and_fails(tmp_path: Path, monkeypatch,
                                                                                  capsys) -> None:
    """Everything after the driver check, on this CPU machine: the probe finds no CUDA in torch or ONNX Runtime
    (FAIL), the GPU tests skip naming why (SKIPPED), the results are written, the summary ends the run, exit 1."""
    monkeypatch.setattr(gpu_check, "driver_cuda", lambda: 12060)
    rc = gpu_check.main(["--env", "current", "--python", sys.executable, "--work", str(tmp_path / "work"),
                         "--results", str(tmp_path / "results"), "--steps", "machine", "cuda-graph-helper", "batched"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 1
    assert out[0].startswith("gpu-check: NVIDIA driver for CUDA 12.6")
    lines = {line.split(":")[0]: line for line in out if line.split(":")[0] in ("env", "machine", "cuda-graph-helper",
                                                                                "batched")}
    assert lines["env"].startswith(f"env: PASS: this interpreter ({sys.executable}); TensorRT ")
    assert lines["machine"].startswith("machine: FAIL: torch ")  # the robot venv has no torch: it says that instead
    assert "sees no CUDA device" in lines["machine"] or "torch does not import" in lines["machine"]
    assert lines["cuda-graph-helper"].startswith("cuda-graph-helper: SKIPPED(no CUDA device")
    assert lines["batched"].startswith("batched: SKIPPED(needs ")  # a CUDA device; in the robot venv torch first
    (folder,) = (tmp_path / "results").iterdir()
    assert folder.name.endswith("-unknown-gpu")  # the probe found no GPU name
    md = (folder / "gpu-check.md").read_text()
    assert "| machine | FAIL |" in md and "| cuda-graph-helper | SKIPPED |" in md
    assert "Driver: supports CUDA" in (folder / "ENVIRONMENT.md").read_text()
    steps = {s["name"]: s["status"] for s in __import__("json").loads((folder / "gpu-check.json").read_text())["steps"]}
    assert steps == {"env": "PASS", "machine": "FAIL", "cuda-graph-helper": "SKIPPED", "batched": "SKIPPED"}
    assert out[-5].split() == ["step", "result", "seconds", "detail"]  # the summary table closes the run


def test_a_jetson_runs_the_full_size_only_when_asked() -> None:
    every = [s.name for s in STEPS]
    assert [s.name for s in gpu_check.selected_steps(gpu_check.parse([]))] == every
    assert [s.name for s in gpu_check.selected_steps(gpu_check.parse(["--jetson"]))] == every[:-1]
    chosen = gpu_check.parse(["--jetson", "--steps", "timing-full", "gate"])
    assert [s.name for s in gpu_check.selected_steps(chosen)] == ["gate", "timing-full"]  # in the steps' order
