"""The robot install, as a Jetson gets it: a wheel built from this tree, installed with the robot profile only
(``xvla-edge[onnxruntime]``: no torch, transformers or onnx) into a fresh virtual environment of the given
Python (3.10 by default: JetPack 6's), then, from outside the source tree:

1. nothing of the workstation stack is importable (torch, transformers, onnx);
2. ``xvla-edge flash`` installs a bundle of the committed sim checkpoint (exported here, by this Python);
3. ``xvla-edge config check`` accepts a robot.toml for it;
4. ``Policy.load(...).act(...)`` gives a finite chunk of the manifest's shape;
5. the daemon (``xvla-edge sim eval --daemon``: the daemon in real time, the xvla-serial emulator on a pty,
   the simulated cameras) runs episodes of the task and grasps;
6. with the test extra added (pytest-benchmark, matplotlib; still no torch), ``xvla-edge bench --bundle``
   measures the flashed bundle;
7. with the serve extra added, ``xvla-edge serve`` serves the flashed bundle and a ``RemotePolicy`` chunk
   over its websocket equals the local ``Policy.act`` chunk for the same observation and noise.

Prints the footprint (the environment's size on disk, and what the wheel pulled in). Exit 0 when every step
passed; the first failure is printed with its output. Run by ``make test``:

    python tools/check_robot_wheel.py --python /path/to/python3.10 [--work DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKSTATION_ONLY = ("torch", "transformers", "onnx", "onnxscript", "safetensors")

ACT = """
import json, sys, numpy as np
from runtime.policy import Policy
from runtime.types import Observation
policy = Policy.load(sys.argv[1])
inputs = policy.manifest.inputs
views = [np.full((240, 320, 3), 128, np.uint8) for _ in range(int(inputs["views"]))]  # any size: preprocessed
obs = Observation(images=views, instruction="pick up the red block",
                  proprio=np.zeros(int(inputs["proprio_dim"]), np.float32), timestamp=0.0)
chunk = policy.act(obs)
print(json.dumps({"shape": list(chunk.actions.shape), "finite": bool(np.isfinite(chunk.actions).all()),
                  "expected": list(policy.chunk_shape[1:]), "module": Policy.__module__,
                  "file": sys.modules["runtime.policy"].__file__}))
"""

REMOTE = """
import json, socket, subprocess, sys, time, numpy as np
from runtime.policy import Policy
from runtime.remote.client import RemotePolicy
from runtime.types import Observation
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
server = subprocess.Popen([sys.argv[2], "serve", sys.argv[1], "--port", str(port)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.STDOUT)
try:
    end = time.monotonic() + 120
    while True:
        try:
            remote = RemotePolicy(f"ws://127.0.0.1:{port}", timeout_s=60)
            break
        except Exception:
            if server.poll() is not None or time.monotonic() > end:
                raise
            time.sleep(0.5)
    local = Policy.load(sys.argv[1])
    inputs = local.manifest.inputs
    rng = np.random.default_rng(0)
    obs = Observation(images=[rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(int(inputs["views"]))],
                      instruction="pick up the red block", proprio=np.zeros(local.state_dim, np.float32),
                      noise=rng.standard_normal(local.chunk_shape[1:]).astype(np.float32))
    print(json.dumps({"equal": bool(np.array_equal(remote.act(obs).actions, local.act(obs).actions))}))
finally:
    server.kill()
"""

TOML = """
import sys
from pathlib import Path
from xvla_edge.daemon.robot_toml import toml_text
from xvla_edge.sim.evaluate import sim_robot
Path(sys.argv[2]).write_text(toml_text(sim_robot(Path(sys.argv[1]), "/dev/ttyUSB0", Path(sys.argv[3]), "pick up the red block")))
"""


def step(title: str, cmd: list[str], *, cwd: Path, env: dict | None = None, timeout: float = 900) -> str:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        print(f"[robot-wheel] FAILED: {title} (exit {proc.returncode}, {took:.0f} s)\n$ {' '.join(cmd)}\n"
              f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}", file=sys.stderr)
        raise SystemExit(1)
    print(f"[robot-wheel] ok: {title} ({took:.1f} s)", flush=True)
    return proc.stdout


def size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", required=True, help="the interpreter of the robot environment (e.g. 3.10)")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="xvla-robot-wheel-")).resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    outside = work / "elsewhere"  # run from here, so nothing is imported from the source tree
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HF_HUB_OFFLINE"] = "1"

    # Python 3.12's venvs come without setuptools: then pip builds in an isolated environment of its own
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    step("wheel built", [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q",
                         "-w", str(work / "dist"), str(REPO)], cwd=REPO, env=env)
    (wheel,) = (work / "dist").glob("xvla_edge-*.whl")
    checkpoint = step("sim checkpoint found", [sys.executable, "-m", "xvla_edge", "sim", "checkpoint"], cwd=outside,
                      env=env).strip()
    step("sim checkpoint exported (workstation side)",
         [sys.executable, "-m", "xvla_edge", "export", checkpoint, "--out", str(work / "bundle"),
          "--domain-id", "3", "--views", "2"], cwd=outside, env=env)

    venv = work / "venv"
    step(f"fresh environment ({args.python})", [args.python, "-m", "venv", str(venv)], cwd=outside, env=env)
    python, cli = str(venv / "bin" / "python"), str(venv / "bin" / "xvla-edge")
    step("wheel installed with the robot profile",
         [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{wheel}[onnxruntime]"],
         cwd=outside, env=env)
    version = step("python version", [python, "-c", "import sys; print(sys.version.split()[0])"], cwd=outside)
    listed = json.loads(step("installed packages", [python, "-m", "pip", "list", "--format", "json"], cwd=outside))
    names = {p["name"].lower().replace("_", "-") for p in listed}
    present = [name for name in WORKSTATION_ONLY if name in names]
    if present:
        print(f"[robot-wheel] FAILED: the robot profile pulled in {present}", file=sys.stderr)
        return 1
    probe = "import importlib.util as u; print([m for m in %r if u.find_spec(m)])" % (WORKSTATION_ONLY,)
    if step("no workstation packages importable", [python, "-c", probe], cwd=outside).strip() != "[]":
        print("[robot-wheel] FAILED: a workstation package imports in the robot environment", file=sys.stderr)
        return 1

    robot = work / "robot"
    step("xvla-edge flash", [cli, "flash", str(work / "bundle"), "--robot", str(robot)], cwd=outside, env=env)
    current = robot / "current"
    toml = work / "robot.toml"
    step("robot.toml written", [python, "-c", TOML, str(current), str(toml), str(work / "recordings")],
         cwd=outside, env=env)
    step("xvla-edge config check", [cli, "config", "check", str(toml)], cwd=outside, env=env)
    acted = json.loads(step("Policy.load(...).act(...)", [python, "-c", ACT, str(current)], cwd=outside, env=env))
    if acted["shape"] != acted["expected"] or not acted["finite"] or not acted["file"].startswith(str(venv)):
        print(f"[robot-wheel] FAILED: act gave {acted}", file=sys.stderr)
        return 1
    out = step("daemon on the emulated arm (sim eval --daemon, 2 episodes)",
               [cli, "sim", "eval", "--bundle", str(current), "--daemon", "--episodes", "2", "--seed", "1",
                "--quiet"], cwd=outside, env=env)
    summary = out.strip().splitlines()[-1]
    print(f"[robot-wheel] {summary}")
    if "0/2 =" in summary:
        print("[robot-wheel] FAILED: the daemon did no episode", file=sys.stderr)
        return 1
    site = size_mb(venv / "lib")
    # pytest-benchmark and matplotlib (the test extra) on top: the latency of the flashed bundle, still no torch
    step("test extra added", [python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                              f"{wheel}[onnxruntime,test]"], cwd=outside, env=env)
    bench = step("xvla-edge bench --bundle (the flashed bundle)",
                 [cli, "bench", "--bundle", str(current), "--steps", "2", "--rounds", "2", "--out",
                  str(work / "results")], cwd=outside, env=env)
    if not list((work / "results").glob("*/bundle-*.json")) or "torch" in step(
            "still no torch", [python, "-c", probe], cwd=outside):
        print(f"[robot-wheel] FAILED: bench --bundle wrote no results\n{bench[-2000:]}", file=sys.stderr)
        return 1
    step("serve extra added", [python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                               f"{wheel}[onnxruntime,serve,test]"], cwd=outside, env=env)
    served = json.loads(step("xvla-edge serve + RemotePolicy == Policy.act", [python, "-c", REMOTE, str(current), cli],
                             cwd=outside, env=env).strip().splitlines()[-1])
    if not served["equal"]:
        print(f"[robot-wheel] FAILED: the served chunk differs from the local one: {served}", file=sys.stderr)
        return 1
    print(f"[robot-wheel] passed on Python {version.strip()}: robot environment {site:.0f} MB on disk, "
          f"{len(listed)} packages ({', '.join(sorted(names))})")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
