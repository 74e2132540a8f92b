"""Physical floors of an X-VLA configuration: counted work, measured machine rates, published targets.

Work is counted analytically from an :class:`~xvla.config.XVLAConfig` and the bundle's shapes:

- **FLOPs**: 2 per multiply-accumulate of every matmul, convolution and attention product (what
  ``torch.utils.flop_counter`` counts; element-wise ops, norms and softmax are not counted).
- **Weight bytes**: every parameter of the layers a stage runs (matmul / conv / norm weights and biases,
  constants folded into the graph) at the bundle's precision. Embedding-table gathers (token ids,
  positional tables) read a few rows and are not counted.

Stages follow the bundle graphs: the **encoder** (DaViT on each of the robot's views, the image projector,
the BART encoder over main-view image tokens + text, ``vlm_proj`` / ``aux_visual_proj`` over all context
tokens) and one **denoising step** (the action encoder, ``depth`` blocks over action + context +
soft-prompt tokens, the final norm and the action decoder). A chunk is one encoder call plus N steps.

floor(stage) = max(FLOPs / peak rate, weight bytes / memory bandwidth): an ideal roofline with weights
re-read from memory on every call, no activation traffic, no launch overhead. ``python -m benchmarks.floor``
measures this machine and prints the floors of every named size here and on the published targets.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from benchmarks.names import SIZES, STAGES
from runtime.manifest import Manifest
from xvla.config import XVLAConfig
from xvla.constants import NUM_VIEWS

BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "int8": 1}


@dataclass(frozen=True)
class Shapes:
    """What a bundle runs: its manifest's inputs and action shapes, and its precision."""

    image_size: int
    views: int = NUM_VIEWS
    text_tokens: int = 50
    precision: str = "fp32"

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> Shapes:
        """A bundle's image size, views, token length and precision."""
        inputs = manifest.inputs
        return cls(image_size=int(inputs["image_size"]), views=int(inputs["views"]),
                   text_tokens=int(inputs["token_length"]), precision=manifest.precision)


@dataclass(frozen=True)
class Work:
    """FLOPs and weight bytes of one call of a stage."""

    flops: float
    weight_bytes: float

    def __add__(self, other: Work) -> Work:
        return Work(self.flops + other.flops, self.weight_bytes + other.weight_bytes)

    def __mul__(self, n: float) -> Work:
        return Work(self.flops * n, self.weight_bytes * n)


@dataclass(frozen=True)
class Machine:
    """A peak matmul rate and a memory bandwidth, with where they come from."""

    name: str
    flops_per_s: float
    bytes_per_s: float
    source: str
    precision: str = "fp32"

    def floor(self, work: Work) -> float:
        """Seconds of the ideal roofline: max(compute time, weight-streaming time)."""
        return max(work.flops / self.flops_per_s, work.weight_bytes / self.bytes_per_s)


# Dense FP16 tensor-core rates and DRAM bandwidths of the deployment targets (the project's edge-deployment
# anchors note, §8.1 and §9.4, which collects them from the sources named here). The Jetson FP16 rates are
# derived from NVIDIA's INT8 / FP4 headline figures, not read from a datasheet.
TARGETS: tuple[Machine, ...] = (
    Machine("Jetson AGX Orin 64GB", 42.5e12, 204.8e9,
            "Orin technical brief: 170 sparse INT8 GPU TOPS / 4 (derived), 204.8 GB/s LPDDR5", "fp16"),
    Machine("Jetson Orin NX 16GB", 15e12, 102.4e9,
            "Orin technical brief: 8 SMs at 918 MHz, ~15 TFLOPS FP16 (derived), 102.4 GB/s", "fp16"),
    Machine("Jetson AGX Thor T5000", 120e12, 273e9,
            "measured torch/cuBLAS GEMM 97-135 TFLOPS (zzc0721/torch-performance-test-data#151, "
            "mlc-ai/TIRx-kernels#160; spec-derived 257), 273 GB/s (antirez/ds4#788)", "fp16"),
    Machine("H100 SXM", 989e12, 3.35e12, "NVIDIA H100 datasheet: 989 TFLOPS dense FP16, 3.35 TB/s", "fp16"),
    Machine("H100 PCIe", 756e12, 2.0e12, "NVIDIA H100 datasheet: 756 TFLOPS dense FP16, 2.0 TB/s", "fp16"),
)


# ---------------------------------------------------------------------------------------------------
# counting
# ---------------------------------------------------------------------------------------------------
def _linear(tokens: int, n_in: int, n_out: int, bias: bool = True) -> tuple[float, int]:
    """(FLOPs, parameters) of a dense layer over ``tokens`` rows."""
    return 2.0 * tokens * n_in * n_out, n_in * n_out + (n_out if bias else 0)


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def davit_work(cfg: XVLAConfig, image_size: int) -> tuple[float, int, int]:
    """(FLOPs, parameters, output grid side) of the DaViT tower on one square image.

    Per stage: a strided conv embedding, then ``depths[i]`` pairs of a spatial block (depthwise 3×3 conv,
    window attention over the grid padded to a multiple of ``window_size``, depthwise conv, MLP) and a
    channel block (depthwise conv, grouped channel attention, depthwise conv, MLP).
    """
    v = cfg.vision
    flops, params = 0.0, 0
    side, c_in = image_size, 3
    for i, c in enumerate(v.embed_dim):
        k = v.patch_size[i]
        side = _conv_out(side, k, v.patch_stride[i], v.patch_padding[i])
        n = side * side
        flops += 2.0 * n * c * c_in * k * k
        params += c * c_in * k * k + c + 2 * (c_in if v.patch_prenorm[i] else c)
        hidden = int(c * v.mlp_ratio)
        ws = v.window_size
        padded = math.ceil(side / ws) * ws
        n_pad = padded * padded
        dwconv = 2.0 * n * c * 9
        mlp = _linear(n, c, hidden)[0] + _linear(n, hidden, c)[0]
        spatial = (2 * dwconv + _linear(n_pad, c, 3 * c)[0] + 2 * (2.0 * n_pad * ws * ws * c)
                   + _linear(n_pad, c, c)[0] + mlp)
        channel = (2 * dwconv + _linear(n, c, 3 * c)[0] + 2 * (2.0 * n * c * c / v.num_groups[i])
                   + _linear(n, c, c)[0] + mlp)
        flops += v.depths[i] * (spatial + channel)
        sub_block = (2 * (9 * c + c) + 2 * 2 * c + _linear(1, c, 3 * c, v.qkv_bias)[1] + _linear(1, c, c)[1]
                     + _linear(1, c, hidden)[1] + _linear(1, hidden, c)[1])
        params += v.depths[i] * 2 * sub_block
        c_in = c
    return flops, params, side


def _transformer_layer(tokens: int, d: int, ffn: int) -> tuple[float, int]:
    """(FLOPs, parameters) of a layer with separate or fused q/k/v/o projections, full attention, 2 norms."""
    flops = _linear(tokens, d, 4 * d)[0] + 2 * (2.0 * tokens * tokens * d) + 2 * _linear(tokens, d, ffn)[0]
    params = 4 * (d * d + d) + d * ffn + ffn + ffn * d + d + 2 * 2 * d
    return flops, params


def context_tokens(cfg: XVLAConfig, shapes: Shapes) -> tuple[int, int]:
    """(VLM tokens = main-view image tokens + text, aux tokens = the other view slots' image tokens)."""
    n = cfg.tokens_per_view(shapes.image_size)
    return n + shapes.text_tokens, (cfg.view_slots - 1) * n


def encoder_work(cfg: XVLAConfig, shapes: Shapes) -> Work:
    """One encoder call: DaViT × views, projector, BART encoder, context projections."""
    t, b = cfg.text, BYTES_PER_ELEMENT[shapes.precision]
    davit_flops, davit_params, grid = davit_work(cfg, shapes.image_size)
    img_tokens = 1 + grid * grid
    proj_flops, proj_params = _linear(img_tokens, cfg.vision.embed_dim[-1], cfg.projection_dim, bias=False)
    proj_params += 2 * cfg.projection_dim  # image_proj_norm
    vlm, aux = context_tokens(cfg, shapes)
    layer_flops, layer_params = _transformer_layer(vlm, t.d_model, t.encoder_ffn_dim)
    bart_flops = t.encoder_layers * layer_flops
    bart_params = t.encoder_layers * layer_params + 2 * t.d_model  # + layernorm_embedding
    p, d = cfg.projection_dim, cfg.hidden_size
    ctx_flops = _linear(vlm, p, d)[0] + _linear(aux, p, d)[0]
    ctx_params = 2 * _linear(1, p, d)[1]
    flops = shapes.views * (davit_flops + proj_flops) + bart_flops + ctx_flops
    params = davit_params + proj_params + bart_params + ctx_params
    return Work(flops, params * b)


def step_sequence(cfg: XVLAConfig, shapes: Shapes) -> int:
    """Tokens through the action transformer: actions + VLM + aux + soft prompts."""
    vlm, aux = context_tokens(cfg, shapes)
    return cfg.num_actions + vlm + aux + cfg.len_soft_prompts


def step_work(cfg: XVLAConfig, shapes: Shapes) -> Work:
    """One denoising step as the bundle runs it (one domain's weights and soft prompt folded in)."""
    d, T, A = cfg.hidden_size, cfg.num_actions, cfg.dim_action
    seq = step_sequence(cfg, shapes)
    hidden = int(d * cfg.mlp_ratio)
    block_flops, block_params = _transformer_layer(seq, d, hidden)
    enc_flops, enc_params = _linear(T, A + cfg.dim_proprio + cfg.dim_time, d)
    dec_flops, dec_params = _linear(T, d, A)
    flops = enc_flops + cfg.depth * block_flops + dec_flops
    params = (cfg.depth * block_params + 2 * d + enc_params + (T - 1) * d  # bias + T position rows folded
              + dec_params + cfg.len_soft_prompts * d)
    return Work(flops, params * BYTES_PER_ELEMENT[shapes.precision])


def stage_calls(stage: str, steps: int) -> tuple[int, int]:
    """(encoder calls, denoising-step calls) of a benchmarked stage; ``act`` runs the same network as a chunk."""
    return {"encoder": (1, 0), "step": (0, 1)}.get(stage, (1, steps))


def stage_floor(machine: Machine, encoder: Work, step: Work, stage: str, steps: int) -> float:
    """Floor in seconds of a stage: the sum of its calls' floors (no floor for preprocessing)."""
    n_enc, n_step = stage_calls(stage, steps)
    return n_enc * machine.floor(encoder) + n_step * machine.floor(step)


def stage_floors(cfg: XVLAConfig, shapes: Shapes, machine: Machine, steps: int) -> dict[str, float]:
    """Floor in seconds of each benchmarked stage (encoder, step, chunk, act)."""
    enc, step = encoder_work(cfg, shapes), step_work(cfg, shapes)
    return {stage: stage_floor(machine, enc, step, stage, steps) for stage in STAGES}


# ---------------------------------------------------------------------------------------------------
# measuring this machine
# ---------------------------------------------------------------------------------------------------
def measure_gemm(m: int = 262, k: int = 1024, n: int = 4096, runs: int = 10, seconds: float = 1.0) -> float:
    """Best fp32 numpy (BLAS) GEMM rate in FLOP/s over at least ``runs`` runs and ``seconds``.

    The default shape is the full model's MLP fc1 in one denoising step. Taking the best of many short runs
    finds the quiet moments on a machine shared with other processes.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    out = np.empty((m, n), dtype=np.float32)
    np.matmul(a, b, out=out)
    best, start, done = math.inf, time.perf_counter(), 0
    while done < runs or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
        done += 1
    return 2.0 * m * k * n / best


def measure_bandwidth(nbytes: int = 256 << 20, runs: int = 5, threads: int | None = None) -> float:
    """Best-of-``runs`` copy bandwidth in B/s (bytes read + bytes written), one slice per core."""
    threads = threads or os.cpu_count() or 1
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    bounds = np.linspace(0, src.size, threads + 1).astype(int)
    slices = [slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
    def copy(s: slice) -> None:
        np.copyto(dst[s], src[s])

    best = math.inf
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(copy, slices))  # faults the pages in
        for _ in range(runs):
            t0 = time.perf_counter()
            list(pool.map(copy, slices))
            best = min(best, time.perf_counter() - t0)
    return 2.0 * src.nbytes / best


def measure_machine(threads: int | None = None, best: Machine | None = None) -> Machine:
    """This machine's fp32 GEMM rate (BLAS threads: its environment) and copy bandwidth, or ``best``'s
    where those were higher (the best seen over repeated measurements is the least disturbed one)."""
    flops, bw = measure_gemm(), measure_bandwidth(threads=threads)
    if best is not None:
        flops, bw = max(flops, best.flops_per_s), max(bw, best.bytes_per_s)
    return Machine("this machine (measured)", flops, bw,
                   "numpy fp32 GEMM 262x1024x4096, best over 1 s; threaded 256 MiB copy, best of 5; "
                   "the best of the measurements before every case and at the end of the session")


def measure_cuda(precision: str = "fp16", n: int = 8192, copy_bytes: int = 1 << 30, runs: int = 10) -> Machine:
    """The current CUDA device's matmul rate at ``precision`` (fp32: no TF32; fp16, bf16: tensor cores) and its
    device-to-device copy bandwidth (bytes read + written), each the best of ``runs`` timed with CUDA events after
    a warm-up, through torch (imported here). The roofline of that GPU as it runs now, not its datasheet."""
    import torch

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here, as in an fp32 bundle
    try:
        a = torch.randn(n, n, device="cuda", dtype=dtype)
        b = torch.randn(n, n, device="cuda", dtype=dtype)
        gemm = _best_cuda_seconds(lambda: torch.matmul(a, b), runs)
        del a, b
        src = torch.empty(copy_bytes // 4, device="cuda", dtype=torch.float32)
        dst = torch.empty_like(src)
        copy = _best_cuda_seconds(lambda: dst.copy_(src), runs)
        del src, dst
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return Machine(f"{props.name} (measured)", 2.0 * n ** 3 / gemm, 2.0 * copy_bytes / copy,
                   f"torch {precision} matmul {n}x{n}x{n} and a {copy_bytes >> 20} MiB device copy, best of {runs} "
                   f"(CUDA events); {props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB",
                   precision)


def _best_cuda_seconds(fn, runs: int) -> float:
    import torch

    fn()
    torch.cuda.synchronize()
    best = math.inf
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return best


# ---------------------------------------------------------------------------------------------------
def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def report(steps: int = 10) -> str:
    """Work and floors of every named size, on this machine and on the published targets."""
    from xvla.sizes import size_config

    here = measure_machine()
    lines = [f"this machine: {here.flops_per_s / 1e9:.1f} GFLOP/s fp32 GEMM, {here.bytes_per_s / 1e9:.1f} GB/s copy"]
    for size in SIZES:
        cfg, image_size = size_config(size)
        shapes = Shapes(image_size)
        enc, step = encoder_work(cfg, shapes), step_work(cfg, shapes)
        lines.append(f"\n{size}: encoder {enc.flops / 1e9:.3g} GFLOP / {enc.weight_bytes / 1e6:.4g} MB fp32; "
                     f"step ({step_sequence(cfg, shapes)} tokens) {step.flops / 1e9:.3g} GFLOP / "
                     f"{step.weight_bytes / 1e6:.4g} MB fp32")
        for machine in (here, *TARGETS):
            s = Shapes(image_size, precision=machine.precision)
            f = stage_floors(cfg, s, machine, steps)
            lines.append(f"  {machine.name:<30} {machine.precision}: encoder {_ms(f['encoder'])}, "
                         f"step {_ms(f['step'])}, {steps}-step chunk {_ms(f['chunk'])}")
    lines.append("\nsources: " + "; ".join(f"{m.name}: {m.source}" for m in TARGETS))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    print(report(ap.parse_args(argv).steps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
