"""What the latency suites run: cached checkpoints and bundles, fixed inputs, and one runner per backend.

Checkpoints and bundles are built once into ``XVLA_BENCH_CACHE`` (default ``benchmarks/.cache`` of the current
directory), keyed by size and precision (``<size>/checkpoint``, ``<size>/bundle-fp32`` ...), by the
``xvla-edge`` commands in a child process (the full-size export needs several GB that the benchmark process
should not keep). Delete the directory to rebuild.

Runners: ``onnxruntime-fp32`` / ``onnxruntime-fp16`` / ``torch-fp32`` (our :class:`runtime.policy.Policy`
over each backend) and ``official-fp32`` (the official implementation in a worker process, see
:mod:`benchmarks.official_runner`), all on the same random weights, inputs and noise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from benchmarks import floor
from benchmarks.names import BACKENDS, DEFAULT_SIZES, SIZES
from xvla.config import XVLAConfig
from xvla.errors import XVLAError
from xvla.constants import NUM_VIEWS

DOMAIN_ID = 0
CAMERA_SHAPE = (480, 640, 3)  # raw images handed to Policy.act (resized by the checkpoint's preprocessing)

RESULTS: list[dict[str, Any]] = []  # extra_info (with the median) of every latency benchmark of the session
SIDE_BY_SIDE: list[dict[str, Any]] = []  # interleaved rounds of every backend per (size, stage), with their ratios
SESSION: dict[str, Any] = {}  # measured machine rates, load averages, the official side's library versions
_BEST: list[floor.Machine] = []  # the best rates measured so far this session


def measure_machine() -> floor.Machine:
    """Measure this machine again; the best GEMM rate and bandwidth seen this session."""
    best = floor.measure_machine(threads(), _BEST[0] if _BEST else None)
    _BEST[:] = [best]
    SESSION["machine"] = {"gflops": best.flops_per_s / 1e9, "gbps": best.bytes_per_s / 1e9, "method": best.source}
    return best


def best_machine() -> floor.Machine:
    """The best rates measured so far (measuring once if nothing was measured yet)."""
    return _BEST[0] if _BEST else measure_machine()


def refloor(info: dict[str, Any], machine: floor.Machine) -> None:
    """Set ``floor_s`` and ``ratio`` of a benchmark's extra_info from its recorded work and ``machine``."""
    enc = floor.Work(info["encoder_flops"], info["encoder_weight_bytes"])
    step = floor.Work(info["step_flops"], info["step_weight_bytes"])
    info["floor_s"] = floor.stage_floor(machine, enc, step, info["stage"], info["chunk_steps"])
    info.update(machine_gflops=machine.flops_per_s / 1e9, machine_gbps=machine.bytes_per_s / 1e9)
    if "median_s" in info:
        info["ratio"] = info["median_s"] / info["floor_s"]


def cache_dir() -> Path:
    return Path(os.environ.get("XVLA_BENCH_CACHE", Path.cwd() / "benchmarks" / ".cache"))


def selected(variable: str, default: Sequence[str], allowed: Sequence[str], what: str) -> list[str]:
    """The comma-separated names of environment ``variable``, else ``default``; a name outside ``allowed`` is a
    ValueError naming the variable and the ``what`` it lists."""
    env = os.environ.get(variable)
    names = env.split(",") if env else list(default)
    unknown = set(names) - set(allowed)
    if unknown:
        raise ValueError(f"{variable}: unknown {what} {sorted(unknown)}; expected some of {tuple(allowed)}")
    return names


def selected_sizes() -> list[str]:
    """``XVLA_BENCH_SIZES`` (comma-separated), else tiny and small, plus full with ``XVLA_BENCH_FULL=1``."""
    full = ["full"] if os.environ.get("XVLA_BENCH_FULL") == "1" else []
    return selected("XVLA_BENCH_SIZES", [*DEFAULT_SIZES, *full], SIZES, "sizes")


def selected_backends() -> list[str]:
    """``XVLA_BENCH_BACKENDS`` (comma-separated), else every backend (official only when configured)."""
    return selected("XVLA_BENCH_BACKENDS", BACKENDS, BACKENDS, "backends")


def steps() -> int:
    """Denoising steps of a chunk: ``XVLA_BENCH_STEPS``, else 10."""
    return int(os.environ.get("XVLA_BENCH_STEPS") or 10)


def threads() -> int:
    """Intra-op threads of every backend: ``XVLA_BENCH_THREADS``, else one per core."""
    return int(os.environ.get("XVLA_BENCH_THREADS") or os.cpu_count() or 1)


def official_setup() -> tuple[Path, Path] | None:
    """(official source, its python) from ``XVLA_OFFICIAL_SRC`` / ``XVLA_OFFICIAL_PYTHON``, if both are set."""
    src, python = os.environ.get("XVLA_OFFICIAL_SRC"), os.environ.get("XVLA_OFFICIAL_PYTHON")
    return (Path(src), Path(python)) if src and python else None


class BuildError(XVLAError, RuntimeError):
    """A checkpoint or bundle could not be built; the message is the command's last error line."""


def _xvla_edge(*args: str) -> None:
    """Run an ``xvla-edge`` command in a child process."""
    proc = subprocess.run([sys.executable, "-m", "xvla_edge.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode:
        lines = proc.stderr.splitlines()
        errors = [line.split("error: ", 1)[1] for line in lines if "error: " in line] or lines[-1:]
        raise BuildError(f"xvla-edge {args[0]} failed: {errors[-1] if errors else f'exit status {proc.returncode}'}")


def checkpoint(size: str) -> Path:
    """The cached random-weight checkpoint of a size (seed 0), written on first use."""
    path = cache_dir() / size / "checkpoint"
    if not (path / "config.json").is_file():
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        _xvla_edge("checkpoint", "--out", str(path), "--size", size, "--seed", "0")
    return path


def bundle(size: str, precision: str, batch_sizes: tuple[int, ...] = (1,)) -> Path:
    """The cached bundle (domain 0, 3 views) of a size, precision and batch sizes, exported on first use.

    A failed export is remembered in ``bundle-<precision>[-b<sizes>].failed`` and raised again without retrying
    (delete that file to retry).
    """
    batched = batch_sizes != (1,)
    path = cache_dir() / size / (f"bundle-{precision}" + (f"-b{'-'.join(map(str, batch_sizes))}" if batched else ""))
    failed = path.with_name(path.name + ".failed")
    if failed.is_file():
        raise BuildError(failed.read_text())
    if not (path / "manifest.json").is_file():
        try:
            _xvla_edge("export", str(checkpoint(size)), "--domain-id", str(DOMAIN_ID), "--precision", precision,
                       *(["--batch-sizes", *map(str, batch_sizes)] if batched else []), "--out", str(path), "--force")
        except BuildError as e:
            failed.write_text(str(e))
            raise
    return path


def engines(size: str, precision: str, batch_sizes: tuple[int, ...] = (1,)) -> Path:
    """The cached bundle of :func:`bundle` with TensorRT engines built on this machine (``xvla-edge build``; again
    with ``--force`` when the engines there were built elsewhere or from another export)."""
    from runtime.backends.tensorrt.backend import engines_problem

    path = bundle(size, precision, batch_sizes)
    if not (path / "engines").is_dir():
        _xvla_edge("build", str(path))
    elif engines_problem(path) is not None:
        _xvla_edge("build", str(path), "--force")
    return path


@dataclass(frozen=True)
class Inputs:
    """One observation at the network's shapes, and the same observation as a robot hands it over."""

    pixel_values: np.ndarray  # [1, 3, 3, S, S] float32, normalised
    image_mask: np.ndarray  # [1, 3] bool
    input_ids: np.ndarray  # [1, L] int64
    proprio: np.ndarray  # [1, A] float32
    noise: np.ndarray  # [1, T, A] float32 (x1)
    camera_images: tuple[np.ndarray, ...]  # raw uint8 views for Policy.act
    instruction: str

    @classmethod
    def make(cls, cfg: XVLAConfig, image_size: int, views: int = NUM_VIEWS, seed: int = 0) -> Inputs:
        rng = np.random.default_rng(seed)
        s, length, dim = image_size, cfg.text_tokens, cfg.dim_action
        ids = rng.integers(3, cfg.text.vocab_size, (1, length), dtype=np.int64)
        ids[0, 0], ids[0, -1] = 0, 2  # <s> ... </s>
        return cls(
            pixel_values=rng.standard_normal((1, views, 3, s, s), dtype=np.float32),
            image_mask=np.ones((1, views), dtype=bool), input_ids=ids,
            proprio=(0.3 * rng.standard_normal((1, cfg.dim_proprio))).astype(np.float32),
            noise=rng.standard_normal((1, cfg.num_actions, dim), dtype=np.float32),
            camera_images=tuple(rng.integers(0, 256, CAMERA_SHAPE, dtype=np.uint8) for _ in range(views)),
            instruction="put the spoon on the towel",
        )

    def save_official(self, path: Path) -> None:
        """The same observation as the official ``generate_actions`` arguments (3 view slots, domain 0)."""
        np.savez(path, input_ids=self.input_ids, image_input=self.pixel_values, image_mask=self.image_mask,
                 domain_id=np.array([DOMAIN_ID], dtype=np.int64), proprio=self.proprio, noise=self.noise)


TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # the torch backend's dtype per precision


class OursRunner:
    """Our Policy over one backend: the stages go through ``policy.backend`` / ``policy.act``.

    ``backend``: ``<name>-<precision>``; the torch backend runs the fp32 bundle's checkpoint in that precision's
    dtype, ONNX Runtime the bundle of that precision, TensorRT its engines (built here on first use). ``device`` and
    ``options`` go to :meth:`runtime.policy.Policy.load` (e.g. ``cuda_graph=True``).
    """

    def __init__(self, size: str, backend: str, device: str = "cpu", **options: Any) -> None:
        from runtime.policy import Policy

        name, precision = backend.rsplit("-", 1)
        if name == "torch":
            import torch

            torch.set_num_threads(threads())
            options = {"checkpoint": checkpoint(size), "dtype": TORCH_DTYPES[precision], **options}
            path = bundle(size, "fp32")
        elif name == "tensorrt":
            path = engines(size, precision)
        else:
            options = {"threads": threads(), **options} if device == "cpu" else options
            path = bundle(size, precision)
        self.policy = Policy.load(path, backend=name, device=device, **options)
        self.manifest = self.policy.manifest

    def prepare(self, inputs: Inputs) -> None:
        """Bind the inputs and run each stage once (allocations, lazy initialisation)."""
        from runtime.types import Observation

        self.inputs = inputs
        self.observation = Observation(images=inputs.camera_images, instruction=inputs.instruction,
                                       proprio=inputs.proprio[0], noise=inputs.noise[0])
        self.encode()
        self.step()

    def encode(self) -> None:
        i = self.inputs
        self.policy.backend.encode(i.pixel_values, i.image_mask, i.input_ids)

    def step(self) -> None:
        self.policy.backend.denoise(self.inputs.noise, self.inputs.proprio, 1)

    def chunk(self, steps: int) -> None:
        self.encode()
        self._actions = self.policy.backend.denoise(self.inputs.noise, self.inputs.proprio, steps)

    def actions(self) -> np.ndarray:
        """The last chunk's actions [1, T, out] (copied: the backend reuses its buffers)."""
        return np.array(self._actions)

    def act(self, steps: int) -> None:
        self.policy.act(self.observation, steps=steps)

    def close(self) -> None:
        self.policy.close()


def worker_directory(parent: Path) -> Path:
    """``parent/worker``, holding only a link to this package: the official worker's working directory.

    ``python -m benchmarks.official_runner`` run there imports this package and nothing else of the project or of
    its environment (the official interpreter has its own transformers and timm).
    """
    path = parent / "worker"
    path.mkdir()
    (path / "benchmarks").symlink_to(Path(__file__).resolve().parent, target_is_directory=True)
    return path


class OfficialRunner:
    """The official implementation in a worker process under ``XVLA_OFFICIAL_PYTHON``."""

    def __init__(self, size: str, src: Path, python: Path) -> None:
        self.ckpt = checkpoint(size)
        self.src, self.python = src, python
        self.proc: subprocess.Popen[str] | None = None
        self.tmp = Path(tempfile.mkdtemp(prefix="xvla-official-"))
        self.last_seconds = 0.0

    def prepare(self, inputs: Inputs) -> None:
        inputs.save_official(self.tmp / "inputs.npz")
        self.log = open(self.tmp / "worker.log", "w")
        # the worker runs in another directory: paths are made absolute (a bare interpreter name is found on PATH)
        python = self.python if len(self.python.parts) == 1 else self.python.absolute()
        self.proc = subprocess.Popen(
            [str(python), "-m", "benchmarks.official_runner", "--official-src", str(self.src.resolve()),
             "--checkpoint", str(self.ckpt.absolute()), "--inputs", str(self.tmp / "inputs.npz"),
             "--threads", str(threads())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1,
            cwd=worker_directory(self.tmp), env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""},
        )
        _, load_seconds, missing, libs = self._reply().split()
        SESSION["official"] = {"source": str(self.src), "python": str(self.python), "load_s": float(load_seconds),
                               "missing_keys": [] if missing == "-" else missing.split(","),
                               "versions": dict(item.split("=") for item in libs.split(","))}
        self.encode()
        self.step()

    def _reply(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.log.flush()
            raise RuntimeError(f"official worker died:\n{(self.tmp / 'worker.log').read_text()[-4000:]}")
        return line.strip()

    def _call(self, command: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.last_seconds = float(self._reply().split()[1])

    def encode(self) -> None:
        self._call("encode")

    def step(self) -> None:
        self._call("step")

    def chunk(self, steps: int) -> None:
        self._call(f"chunk {steps}")

    def actions(self) -> np.ndarray:
        """The last chunk's actions [1, T, out]."""
        self._call(f"save {self.tmp / 'actions.npy'}")
        return np.load(self.tmp / "actions.npy")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(60)
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
