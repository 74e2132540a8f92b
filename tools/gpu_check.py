"""One command that proves the GPU paths on the NVIDIA machine at hand: ``make gpu-check``.

On a Linux machine with an NVIDIA GPU and driver (a datacentre card or a Jetson), from a clean checkout:

1. **env**: builds its own environment (``--work``/venv) from the package index only, within ``--env-budget``
   seconds (default 300): this package with its ``export``, ``onnxruntime-gpu``, ``test`` and ``cuda<N>`` extras
   (torch from the index as setup.cfg pins it; cuda-python of the driver's CUDA major N), then TensorRT if
   ``import tensorrt`` already works there, else ``pip install tensorrt-cu<N>`` within what is left of the
   budget: it says which happened (present, installed, absent and why). ``--jetson``: the venv sees the system's
   packages (JetPack's TensorRT, NVIDIA's torch and onnxruntime-gpu wheels for the JetPack, installed first),
   nothing of those is installed from the index, and ``timing-full`` runs only when ``--steps`` names it. ``--env current``: this interpreter as it is. ``--wheels DIR``:
   install from DIR only (a machine without the index).
2. the steps (:data:`STEPS`), each in its own process with its own timeout, each ending in one line
   ``PASS`` / ``FAIL`` / ``SKIPPED(reason)``: the machine and its libraries, the GPU's floor (measured matmul rate
   and copy bandwidth), then the GPU tests of the suite (``tests/runtime/test_gpu_paths.py`` and the GPU tests of
   the TensorRT and cuda-python modules: torch CUDA graphs against eager, ONNX Runtime's CUDA provider with
   device buffers and CUDA graphs against the CPU, the cuda-python graph helper, TensorRT engines against ONNX
   Runtime, batched bundles, the accuracy gate on the GPU), then the timings
   (``benchmarks/test_gpu_latency.py``: every GPU variant with pytest-benchmark next to the GPU's floor, and the
   variants side by side, round by round).
3. writes ``benchmarks/results/<arch>-<gpu>/`` (``--results``): ``gpu-check.json`` (every step, the environment,
   the floors, timings and side-by-side ratios), ``gpu-check.md``, ``gpu-latency.json`` (pytest-benchmark's) and
   ``ENVIRONMENT.md`` (GPU, driver, CUDA, library versions, how TensorRT came);
4. prints the summary table; exits 1 if any step failed (a parity check among them), 2 if the environment could
   not be built, else 0.

The steps after the environment share ``--budget`` seconds (default 480): a step gets the smaller of its own
timeout and what is left, and a step with nothing left is SKIPPED. Without an NVIDIA driver (or with
``--dry-run``) nothing is installed or run on a GPU: the dry run checks that every step is wired (its tests are
collected by pytest in ``--python``, its command lines and timeouts are set, the environment's requirements
parse) and says in one line that there is no GPU, exiting 0 (1 if something is not wired). Standard library
only: it runs on the machine's bare ``python3`` before any environment exists.

    python3 tools/gpu_check.py                      # a lent GPU machine (make gpu-check)
    python3 tools/gpu_check.py --jetson             # JetPack 6/7 with JetPack's TensorRT and torch
    python3 tools/gpu_check.py --dry-run            # wiring only (what the test suite runs)
"""

from __future__ import annotations

import argparse
import configparser
import ctypes
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # benchmarks.machine: standard library only, like this script
from benchmarks.machine import cpu_model  # noqa: E402 - after the checkout is on the path
ENV_BUDGET = 300  # seconds for the environment (issue 38: <= 5 min)
BUDGET = 480  # seconds for every step after it (<= 8 min on an H100-class machine)
TENSORRT_SHARE = 150  # at most this much of the environment's budget for trying TensorRT from the index
GPU_TESTS = "tests/runtime/test_gpu_paths.py"


@dataclass(frozen=True)
class Step:
    """One step: a pytest run of ``tests`` (node ids or files, with ``args`` such as ``-k``/``-m``), or, with
    ``script``, ``python -c script``; ``env``: extra environment variables."""

    name: str
    what: str
    timeout: int
    tests: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    script: str = ""
    env: tuple[tuple[str, str], ...] = ()
    timing: bool = False  # a pytest-benchmark run whose JSON is kept

    def command(self, python: str, work: Path) -> list[str]:
        if self.script:
            return [python, "-c", self.script]
        cmd = [python, "-m", "pytest", *self.tests, *self.args, "-p", "no:cacheprovider", "-q", "-rs",
               f"--junitxml={work / (self.name + '.xml')}"]
        if self.timing:
            cmd += [f"--benchmark-json={work / (self.name + '.json')}"]
        return cmd


PROBE = """
import json, platform, importlib, importlib.metadata as md
out = {"python": platform.python_version(), "machine": platform.machine(), "versions": {}}
for dist in ("torch", "onnxruntime-gpu", "onnxruntime", "cuda-python", "cuda-bindings", "tensorrt",
             "tensorrt-cu12", "tensorrt-cu13", "numpy", "onnx", "transformers", "pytest-benchmark"):
    try:
        out["versions"][dist] = md.version(dist)
    except md.PackageNotFoundError:
        pass
from runtime.backends.tensorrt import cuda_graph
v = cuda_graph.driver_version()
out["driver_cuda"] = None if v is None else f"{v // 1000}.{v % 1000 // 10}"
problems = []
try:
    import torch
    out["torch_cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out["gpu"] = {"name": p.name, "compute_capability": f"{p.major}.{p.minor}", "sms": p.multi_processor_count,
                      "memory_gib": round(p.total_memory / 2**30, 1), "count": torch.cuda.device_count()}
    else:
        problems.append(f"torch {torch.__version__} sees no CUDA device (torch.version.cuda = {torch.version.cuda})")
except ImportError as e:
    problems.append(f"torch does not import: {e}")
try:
    import onnxruntime as ort
    out["onnxruntime_providers"] = ort.get_available_providers()
    if "CUDAExecutionProvider" not in out["onnxruntime_providers"]:
        problems.append("onnxruntime has no CUDAExecutionProvider (the CPU wheel, not onnxruntime-gpu)")
except ImportError as e:
    problems.append(f"onnxruntime does not import: {e}")
out["cuda_python_devices"] = cuda_graph.device_count()
if out["cuda_python_devices"]:
    d = cuda_graph.current_device()
    out.setdefault("gpu", {"name": d.name, "compute_capability": d.compute_capability})
else:
    problems.append("cuda-python sees no device: " + cuda_graph.driver_problem(v, cuda_graph.bindings_major()))
try:
    import tensorrt
    out["tensorrt"] = tensorrt.__version__
except ImportError as e:
    out["tensorrt"] = None
    out["tensorrt_error"] = str(e)
try:
    import subprocess
    out["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                        "--format=csv,noheader"], capture_output=True, text=True,
                                       timeout=20).stdout.strip()
except (OSError, subprocess.SubprocessError):
    out["nvidia_smi"] = None
out["problems"] = problems
print("PROBE " + json.dumps(out))
raise SystemExit(1 if problems else 0)
"""

FLOOR = """
import json
from benchmarks.floor import measure_cuda
out = {}
for precision in ("fp32", "fp16"):
    m = measure_cuda(precision)
    out[precision] = {"tflops": m.flops_per_s / 1e12, "gbps": m.bytes_per_s / 1e9, "method": m.source}
print("FLOOR " + json.dumps(out))
"""

STEPS: tuple[Step, ...] = (
    Step("machine", "the GPU, driver and libraries of the environment (torch CUDA, ONNX Runtime CUDA, cuda-python)",
         60, script=PROBE),
    Step("floor", "the GPU's physical floor: measured fp32 and fp16 matmul rate, device-copy bandwidth", 60,
         script=FLOOR),
    Step("torch-cuda-graph", "torch backend, cuda_graph=True vs eager: tiny and small, fp32/fp16/bf16", 150,
         (GPU_TESTS, "tests/runtime/test_torch_backend.py"), ("-m", "gpu", "-k", "torch and cuda_graph")),
    Step("onnxruntime-cuda", "ONNX Runtime CUDA provider, device buffers + CUDA graphs vs CPU: fp32 <= 1e-5, "
         "fp16 within the bundle's gate", 150, (GPU_TESTS,), ("-k", "onnxruntime_cuda")),
    Step("cuda-graph-helper", "the cuda-python graph helper capturing and replaying a loop", 60,
         ("tests/runtime/test_cuda_graph.py",), ("-m", "gpu")),
    Step("tensorrt", "TensorRT engine build + the fixed-binding graph loop vs ONNX Runtime", 180,
         ("tests/runtime/test_tensorrt_seam.py",), ("-m", "tensorrt")),
    Step("batched", "batched bundles (1, 2, 4) on torch, ONNX Runtime and TensorRT vs one by one", 150,
         (GPU_TESTS,), ("-k", "batched")),
    Step("gate", "the accuracy gate on the GPU: the fp16 bundle on ONNX Runtime CUDA and TensorRT", 150,
         (GPU_TESTS,), ("-k", "accuracy_gate")),
    Step("timing", "tiny and small chunks and steps on every GPU variant vs the floor, side by side", 240,
         ("benchmarks/test_gpu_latency.py",), env=(("XVLA_BENCH_SIZES", "tiny,small"),), timing=True),
    Step("timing-full", "the full-size (0.9 B) chunk on torch and ONNX Runtime, eager vs graphs, fp32 vs fp16", 240,
         ("benchmarks/test_gpu_latency.py",),
         env=(("XVLA_BENCH_SIZES", "full"), ("XVLA_GPU_BENCH_VARIANTS", "torch-eager-fp32,torch-graph-fp32,"
              "torch-graph-bf16,onnxruntime-graph-fp32,onnxruntime-graph-fp16")), timing=True),
)


@dataclass
class Result:
    name: str
    status: str  # PASS, FAIL, SKIPPED
    detail: str
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        head = f"SKIPPED({self.detail})" if self.status == "SKIPPED" else self.status
        tail = "" if self.status == "SKIPPED" else f": {self.detail}"
        return f"{self.name}: {head}{tail} [{self.seconds:.0f} s]"


# -- the machine ----------------------------------------------------------------------------------------------
def driver_cuda() -> Optional[int]:
    """The CUDA version of the NVIDIA driver (12060 for 12.6), None without one (libcuda.so.1 does not load)."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    return int(version.value) if libcuda.cuDriverGetVersion(ctypes.byref(version)) == 0 else None


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# -- the environment ------------------------------------------------------------------------------------------
def extra(name: str) -> list[str]:
    """The requirements of one extra of setup.cfg (its one home), interpolations expanded."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return [r.strip() for r in cfg["options.extras_require"][name].splitlines() if r.strip()]


def install_plan(cuda_major: int, jetson: bool) -> list[list[str]]:
    """The pip install arguments, in order: the package with its extras (on a Jetson: without torch and
    onnxruntime-gpu, which JetPack's wheels provide, and the export extra's other requirements by name)."""
    cuda = f"cuda{cuda_major}"
    if jetson:
        export = [r for r in extra("export") if not re.match(r"torch\b", r)]
        return [["-e", f"{REPO}[test,{cuda}]", *export]]
    return [["-e", f"{REPO}[export,onnxruntime-gpu,test,{cuda}]"]]


def build_env(args: argparse.Namespace, cuda_major: int) -> tuple[Result, Optional[str]]:
    """The environment's python, built within ``args.env_budget`` seconds (see the module docstring)."""
    t0 = time.monotonic()
    if args.env == "current":
        python = args.python or sys.executable
        trt = tensorrt_status(python)
        return Result("env", "PASS", f"this interpreter ({python}); TensorRT {trt}", 0.0,
                      {"python": python, "tensorrt": trt, "how": "current"}), python
    venv = args.work / "venv"
    python = str(venv / "bin" / "python")
    stamp = venv / ".gpu-check"
    key = json.dumps({"setup": (REPO / "setup.cfg").read_text(), "jetson": args.jetson, "cuda": cuda_major,
                      "wheels": str(args.wheels)})
    log = args.work / "env.log"
    left = lambda: args.env_budget - (time.monotonic() - t0)  # noqa: E731
    reused = stamp.is_file() and stamp.read_text() == key
    if not reused:
        shutil.rmtree(venv, ignore_errors=True)
        venv_cmd = [sys.executable, "-m", "venv", *(["--system-site-packages"] if args.jetson else []), str(venv)]
        pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
               *(["--no-index", "--find-links", str(args.wheels)] if args.wheels else [])]
        for cmd in [venv_cmd, *[pip + a for a in install_plan(cuda_major, args.jetson)]]:
            ok, tail = run_logged(cmd, log, left())
            if not ok:
                return Result("env", "FAIL", f"`{shlex.join(cmd[:6])} ...` {tail} (log: {log})",
                              time.monotonic() - t0), None
        stamp.write_text(key)
    trt = tensorrt_status(python)
    tried = venv / ".tensorrt"  # why TensorRT did not install into this venv: not tried again when it is reused
    if trt == "absent" and tried.is_file():
        trt = tried.read_text()
    elif trt == "absent" and not args.jetson:
        cmd = [python, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
               *(["--no-index", "--find-links", str(args.wheels)] if args.wheels else []), f"tensorrt-cu{cuda_major}"]
        ok, tail = run_logged(cmd, log, min(TENSORRT_SHARE, left()))
        version = tensorrt_version(python) if ok else None
        trt = f"installed from the index ({version})" if version else f"absent: `pip install tensorrt-cu{cuda_major}` " \
            + (tail or "installed nothing that imports")
        if not version:
            tried.write_text(trt)
    seconds = time.monotonic() - t0
    how = "venv seeing JetPack's packages" if args.jetson else "venv from the index" if not args.wheels \
        else f"venv from {args.wheels}"
    how += " (reused)" if reused else ""
    status = "PASS" if seconds <= args.env_budget else "FAIL"
    return Result("env", status, f"{how} in {seconds:.0f} s (budget {args.env_budget} s); TensorRT {trt}", seconds,
                  {"python": python, "tensorrt": trt, "how": how}), python


def run_logged(cmd: Sequence[str], log: Path, timeout: float) -> tuple[bool, str]:
    """Run ``cmd`` with its output appended to ``log``; (succeeded, why not: its last output line or the timeout)."""
    if timeout <= 0:
        return False, "not started: the environment's time budget is spent"
    with log.open("a") as f:
        f.write(f"\n$ {shlex.join(cmd)}\n")
        f.flush()
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return False, f"timed out after {timeout:.0f} s"
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    return rc == 0, (f"failed: {lines[-1].strip()[:200]}" if rc and lines else "")


def tensorrt_version(python: str) -> Optional[str]:
    proc = subprocess.run([python, "-c", "import tensorrt; print(tensorrt.__version__)"], capture_output=True,
                          text=True, timeout=120)
    return proc.stdout.strip() if proc.returncode == 0 else None


def tensorrt_status(python: str) -> str:
    version = tensorrt_version(python)
    return f"present ({version})" if version else "absent"


# -- the steps ------------------------------------------------------------------------------------------------
def run_step(step: Step, python: str, work: Path, timeout: float) -> Result:
    """Run one step within ``timeout`` seconds; its one-line result."""
    if timeout < 5:
        return Result(step.name, "SKIPPED", f"the {BUDGET} s budget is spent")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "XVLA_BENCH_CACHE": str(work / "bench-cache"),
           "XVLA_GPU_BENCH_INFO": str(work / f"{step.name}-info.json"), **dict(step.env)}
    t0 = time.monotonic()
    try:
        proc = subprocess.run(step.command(python, work), cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        (work / f"{step.name}.log").write_text(out)
        return Result(step.name, "FAIL", f"timed out after {timeout:.0f} s", time.monotonic() - t0)
    seconds = time.monotonic() - t0
    (work / f"{step.name}.log").write_text(proc.stdout + proc.stderr)
    if step.script:
        return script_result(step, proc, seconds)
    result = pytest_result(step.name, proc.returncode, work / f"{step.name}.xml", proc.stdout + proc.stderr)
    result.seconds = seconds
    if step.timing and (work / f"{step.name}.json").is_file():
        result.data["benchmark"] = json.loads((work / f"{step.name}.json").read_text())
        info = work / f"{step.name}-info.json"
        result.data["info"] = json.loads(info.read_text()) if info.is_file() else {}
    return result


def script_result(step: Step, proc: subprocess.CompletedProcess, seconds: float) -> Result:
    """A script step prints ``<TAG> <json>``; exit 0: PASS."""
    tag = "PROBE" if step.script == PROBE else "FLOOR"
    found = [line[len(tag) + 1:] for line in proc.stdout.splitlines() if line.startswith(tag + " ")]
    data = json.loads(found[-1]) if found else {}
    if proc.returncode != 0:
        why = "; ".join(data.get("problems", [])) or (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return Result(step.name, "FAIL", why[:300], seconds, data)
    if tag == "PROBE":
        gpu = data.get("gpu", {})
        detail = (f"{gpu.get('name')} (cc {gpu.get('compute_capability')}), driver CUDA {data.get('driver_cuda')}, "
                  f"torch {data['versions'].get('torch')} (CUDA {data.get('torch_cuda')}), TensorRT "
                  f"{data.get('tensorrt') or 'absent'}")
    else:
        detail = ", ".join(f"{p} {v['tflops']:.1f} TFLOP/s" for p, v in data.items()) + \
            f", {data['fp32']['gbps']:.0f} GB/s"
    return Result(step.name, "PASS", detail, seconds, data)


def pytest_result(name: str, rc: int, junit: Path, output: str) -> Result:
    """PASS (something passed, nothing failed), FAIL (a failure or error, or nothing collected), or SKIPPED with the
    skip reasons, from pytest's JUnit XML."""
    if not junit.is_file():
        last = (output.strip().splitlines() or [f"exit status {rc}"])[-1]
        return Result(name, "FAIL", f"pytest wrote no report ({last[:200]})")
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    failed = [c for c in cases if c.find("failure") is not None or c.find("error") is not None]
    skipped = [c for c in cases if c.find("skipped") is not None]
    passed = len(cases) - len(failed) - len(skipped)
    reasons = list(dict.fromkeys((c.find("skipped").get("message") or "").removeprefix("Skipped: ") for c in skipped))
    if failed:
        first = failed[0].find("failure") if failed[0].find("failure") is not None else failed[0].find("error")
        why = (first.get("message") or "").strip().splitlines() or ["no message"]
        names = ", ".join(c.get("name", "?") for c in failed[:4]) + (", ..." if len(failed) > 4 else "")
        return Result(name, "FAIL", f"{len(failed)} failed ({names}): {why[0][:200]}")
    if rc not in (0, 5):
        return Result(name, "FAIL", f"pytest exited with status {rc} (interrupted, or a usage or internal error)")
    if not cases:
        return Result(name, "FAIL", "no test collected (the step is not wired)")
    if passed == 0:
        return Result(name, "SKIPPED", "; ".join(reasons)[:300])
    return Result(name, "PASS", f"{passed} passed" + (f", {len(skipped)} skipped ({'; '.join(reasons)[:200]})"
                                                      if skipped else ""))


# -- the dry run ------------------------------------------------------------------------------------------------
def check_wiring(steps: Sequence[Step], python: str, work: Path) -> list[Result]:
    """Without a GPU: every step's command line and timeout, its tests collected by pytest (at least one, each
    one named by ``-k``/``-m`` selecting something, none selected by two steps), the scripts compiled."""
    results = []
    owner: dict[str, str] = {}  # test id → the step that runs it
    for step in steps:
        t0 = time.monotonic()
        problems = []
        if not 0 < step.timeout <= BUDGET:
            problems.append(f"timeout {step.timeout} s is not within (0, {BUDGET}]")
        cmd = step.command(python, work)
        if shlex.split(shlex.join(cmd)) != cmd:
            problems.append("its command line does not survive shell quoting")
        if step.script:
            try:
                compile(step.script, step.name, "exec")
            except SyntaxError as e:
                problems.append(f"script does not compile: {e}")
            detail = "script compiles"
        else:
            missing = [t for t in step.tests if not (REPO / t.split("::")[0]).is_file()]
            problems += [f"{t}: no such file" for t in missing]
            collect = [python, "-m", "pytest", *step.tests, *step.args, "--collect-only", "-q", "-p", "no:cacheprovider"]
            proc = subprocess.run(collect, cwd=REPO, capture_output=True, text=True, timeout=300,
                                  env={**os.environ, "PYTHONPATH": str(REPO), **dict(step.env)})
            ids = [line for line in proc.stdout.splitlines() if "::" in line]
            if proc.returncode != 0 or not ids:
                tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
                problems.append(f"pytest collects nothing: {tail[0][:200]}")
            twice = [i for i in ids if i in owner]
            if twice:
                problems.append(f"{len(twice)} test(s) also run by step {owner[twice[0]]} ({twice[0]})")
            owner.update((i, step.name) for i in ids)
            detail = f"{len(ids)} test(s) collected"
        status = "FAIL" if problems else "PASS"
        results.append(Result(step.name, status, "; ".join(problems) if problems else
                              f"wired: {detail}, timeout {step.timeout} s", time.monotonic() - t0))
    return results


def check_env_plan() -> Result:
    """The environment's pip arguments for both CUDA majors, x86 and Jetson, read from setup.cfg."""
    problems = []
    requirement = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[a-z0-9,-]+\])?\s*([<>=!~]=?[^;\s]+(,[<>=!~]=?[^;\s]+)*)?"
                             r"(\s*;\s*python_version\s*[<>=!]=?\s*\"[0-9.]+\")?$")
    for major in (12, 13):
        for jetson in (False, True):
            editable, *named = [w for a in install_plan(major, jetson) for w in a[1:]]
            extras = set(editable.partition("[")[2].rstrip("]").split(","))
            # from the index: torch (in export) and onnxruntime-gpu; on a Jetson neither (JetPack's wheels)
            wanted = {"test", f"cuda{major}"} | (set() if jetson else {"export", "onnxruntime-gpu"})
            if extras != wanted or not editable.startswith(str(REPO)):
                problems.append(f"cuda{major}{' jetson' if jetson else ''}: extras {sorted(extras)}")
            problems += [f"requirement {r!r} does not parse" for r in named if not requirement.match(r)]
            problems += [f"{r!r} on a Jetson" for r in named if re.match(r"(torch|onnxruntime|tensorrt)\b", r)]
    return Result("env", "FAIL" if problems else "PASS", "; ".join(problems) or
                  f"wired: pip {shlex.join(install_plan(12, False)[0])} (cuda12|cuda13 by the driver), "
                  f"then TensorRT if present or from the index; budget {ENV_BUDGET} s")


# -- results ------------------------------------------------------------------------------------------------------
def results_dir(root: Path, probe: dict[str, Any]) -> Path:
    name = (probe.get("gpu") or {}).get("name") or "unknown-gpu"
    return root / f"{probe.get('machine', platform.machine())}-{slug(name)}"


def timing_rows(results: Sequence[Result]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        for b in r.data.get("benchmark", {}).get("benchmarks", []):
            info = b["extra_info"]
            if "variant" in info:
                rows.append({**info, "median_s": b["stats"]["median"], "iqr_s": b["stats"]["iqr"],
                             "rounds": b["stats"]["rounds"], "ratio": b["stats"]["median"] / info["floor_s"]})
    return rows


def _t(seconds: float) -> str:
    for scale, unit in ((1, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def markdown(results: Sequence[Result], probe: dict[str, Any], when: str, commit: str) -> str:
    gpu = probe.get("gpu") or {}
    lines = [f"# GPU check: {gpu.get('name', '?')}", "",
             f"`make gpu-check` at commit `{commit}`, {when} UTC. Environment: [ENVIRONMENT.md](ENVIRONMENT.md).", "",
             "| step | result | seconds | detail |", "|---|---|---|---|"]
    lines += [f"| {r.name} | {r.status} | {r.seconds:.0f} | {r.detail} |" for r in results]
    rows = timing_rows(results)
    if rows:
        lines += ["", "## Timings against the floor", "",
                  "median of `rounds` (pytest-benchmark); floor = max(FLOPs / measured matmul rate at the variant's "
                  "precision, weight bytes / measured copy bandwidth); ratio = median / floor.", "",
                  "| stage | size | variant | median | IQR | rounds | floor | ratio |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['stage']} | {r['size']} | {r['variant']} | {_t(r['median_s'])} | {_t(r['iqr_s'])} | "
                  f"{r['rounds']} | {_t(r['floor_s'])} | {r['ratio']:.1f} |" for r in rows]
    side = [c for r in results for c in r.data.get("info", {}).get("side_by_side", [])]
    if side:
        lines += ["", "## Side by side", "",
                  "The variants of a size round by round (A B A B ..., same inputs); a ratio is the median of the "
                  "per-round ratios with their min–max (< 1: the numerator is faster).", "",
                  "| stage | size | ratio | median | min–max | rounds |", "|---|---|---|---|---|---|"]
        lines += [f"| {c['stage']} | {c['size']} | {x['numerator']} / {x['denominator']} | {x['median']:.2f} | "
                  f"{x['min']:.2f}–{x['max']:.2f} | {x['rounds']} |" for c in side for x in c["ratios"]]
    return "\n".join(lines) + "\n"


def environment_md(env: Result, probe: dict[str, Any], floors: dict[str, Any]) -> str:
    gpu = probe.get("gpu") or {}
    lines = ["# Environment of the GPU check", "",
             f"- GPU: {gpu.get('name', '?')}, compute capability {gpu.get('compute_capability', '?')}, "
             f"{gpu.get('sms', '?')} SMs, {gpu.get('memory_gib', '?')} GiB",
             f"- nvidia-smi: {probe.get('nvidia_smi') or 'not available'}",
             f"- Driver: supports CUDA {probe.get('driver_cuda')}; torch built for CUDA {probe.get('torch_cuda')}",
             f"- Python {probe.get('python')} on {probe.get('machine')}; CPU {cpu_model()}",
             f"- Environment: {env.detail}",
             f"- ONNX Runtime providers: {', '.join(probe.get('onnxruntime_providers', [])) or 'none'}",
             "- Versions: " + ", ".join(f"{k} {v}" for k, v in probe.get("versions", {}).items())]
    for precision, f in floors.items():
        lines.append(f"- Floor ({precision}): {f['tflops']:.1f} TFLOP/s, {f['gbps']:.0f} GB/s ({f['method']})")
    return "\n".join(lines) + "\n"


def write_results(root: Path, results: Sequence[Result]) -> Path:
    by_name = {r.name: r for r in results}
    probe = by_name["machine"].data if "machine" in by_name else {}
    floors = by_name["floor"].data if "floor" in by_name else {}
    out = results_dir(root, probe)
    out.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip() or "?"
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    raw = {r.name: r.data.pop("benchmark") for r in results if "benchmark" in r.data}
    (out / "gpu-check.json").write_text(json.dumps(
        {"when": when, "commit": commit, "steps": [{"name": r.name, "status": r.status, "detail": r.detail,
                                                    "seconds": r.seconds, "data": r.data} for r in results]},
        indent=2))
    if raw:
        (out / "gpu-latency.json").write_text(json.dumps(raw, indent=2))
        for r in results:
            if r.name in raw:
                r.data["benchmark"] = raw[r.name]
    (out / "gpu-check.md").write_text(markdown(results, probe, when, commit))
    (out / "ENVIRONMENT.md").write_text(environment_md(by_name["env"], probe, floors))
    return out


def summary(results: Sequence[Result]) -> str:
    lines = [f"{'step':<18} {'result':<8} {'seconds':>7}  detail"]
    lines += [f"{r.name:<18} {r.status:<8} {r.seconds:>7.0f}  {r.detail}" for r in results]
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------------------------
def parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=REPO / ".gpu-check", help="environment, caches and logs")
    ap.add_argument("--env", choices=("venv", "current"), default="venv",
                    help="venv: build one from the index (default); current: use --python as it is")
    ap.add_argument("--python", default=None, help="--env current and the dry run: the interpreter (default: this "
                                                   "one; for the dry run the repository's .venv where there is one)")
    ap.add_argument("--jetson", action="store_true", help="JetPack 6/7: the venv sees JetPack's TensorRT, torch and "
                                                          "onnxruntime-gpu; none of those comes from the index")
    ap.add_argument("--wheels", type=Path, default=None, help="install from this directory of wheels only")
    ap.add_argument("--steps", nargs="+", default=None, choices=[s.name for s in STEPS], help="run only these")
    ap.add_argument("--env-budget", type=int, default=ENV_BUDGET, help=f"seconds (default {ENV_BUDGET})")
    ap.add_argument("--budget", type=int, default=BUDGET, help=f"seconds for the steps (default {BUDGET})")
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results", help="results root")
    ap.add_argument("--dry-run", action="store_true", help="check the wiring only, as on a machine without a GPU")
    args = ap.parse_args(argv)
    args.work = args.work.resolve()
    return args


def selected_steps(args: argparse.Namespace) -> list[Step]:
    """``--steps``, else every step; on a Jetson no timing-full unless named (the 0.9 B model's exports, several GB
    per variant in its shared memory)."""
    default = [s.name for s in STEPS if not (args.jetson and s.name == "timing-full")]
    return [s for s in STEPS if s.name in (args.steps or default)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    steps = selected_steps(args)
    cuda = driver_cuda()
    if cuda is None or args.dry_run:
        dev = REPO / ".venv" / "bin" / "python"  # the development environment (make), where there is one
        python = args.python or (str(dev) if dev.is_file() else sys.executable)
        wiring = [check_env_plan(), *check_wiring(steps, python, args.work)]
        for r in wiring:
            print(r.line())
        broken = [r.name for r in wiring if r.status != "PASS"]
        why = "no NVIDIA GPU here (libcuda.so.1 does not load)" if cuda is None else "--dry-run"
        print(f"gpu-check: {why}: dry run only, nothing installed or run on a GPU; "
              + (f"NOT WIRED: {', '.join(broken)}" if broken else f"all {len(wiring)} steps wired"))
        return 1 if broken else 0
    print(f"gpu-check: NVIDIA driver for CUDA {cuda // 1000}.{cuda % 1000 // 10}; work directory {args.work}",
          flush=True)
    env, python = build_env(args, cuda // 1000)
    print(env.line(), flush=True)
    results = [env]
    if python is not None:
        t0 = time.monotonic()
        for step in steps:
            result = run_step(step, python, args.work, min(step.timeout, args.budget - (time.monotonic() - t0)))
            print(result.line(), flush=True)
            results.append(result)
        out = write_results(args.results, results)
        print(f"results: {out}/{{gpu-check.json,gpu-check.md,ENVIRONMENT.md}}")
    print(summary(results))
    if python is None:
        return 2
    return 1 if any(r.status == "FAIL" for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
