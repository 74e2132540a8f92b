"""Export-time parity: run the bundle's graphs in ONNX Runtime (CPU) against the PyTorch model.

Same generated observations, same noise, same steps. Records the max abs error of each output (context,
x0, action) and, through :mod:`calibration.metrics`, the chunk error in physical units; a server bundle, for each
domain it serves (the observation encoded once, then each domain's sampler). A denoise graph with real-time
chunking's prefix inputs is checked twice per observation and domain: with all-zero weights (today's chunk) and
with a scheduled prefix (:func:`parity_prefix`: the reference chunk itself, shifted by the delay, as the daemon
commits the executing one), against the reference sampler's mix (:func:`xvla.model.mix_prefix`); the second's
largest differences are recorded as ``prefix``, and both count for the gate. A bundle with batch sizes is also
checked batch against batch 1: each row of a batched run (rows with a prefix and rows without, when the graph
takes one) must equal the same observation run alone within :data:`BATCH_TOLERANCE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import onnxruntime as ort
import torch

from calibration.metrics import TOLERANCES, ChunkErrors, accumulate
from runtime.backends.onnxruntime import create_session
from runtime.manifest_schema import DOMAIN_INPUT, PREFIX_INPUTS
from xvla.model import XVLA, mix_prefix
from xvla.realtime_chunking import Prefix, scheduled_prefix, stack_prefixes
from xvla.preprocessing import ImageProcessor, TextTokenizer
from xvla.random_checkpoint import INSTRUCTIONS


@dataclass(frozen=True)
class Observation:
    pixels: np.ndarray  # [3, 3, S, S] float32
    mask: np.ndarray  # [3] bool
    input_ids: np.ndarray  # [L] int64
    proprio: np.ndarray  # [A] float32
    noise: np.ndarray  # [T, A] float32


def generated_observations(ckpt_dir: Path, model: XVLA, views: int, count: int = 3, seed: int = 0,
                           processor: ImageProcessor | None = None) -> list[Observation]:
    """Random images through the checkpoint's own preprocessing (``processor``, default its
    preprocessor_config.json), real instructions, varied view masks."""
    rng = np.random.default_rng(seed)
    proc = processor or ImageProcessor.from_dir(ckpt_dir)
    tok = TextTokenizer(ckpt_dir, model.config.text_tokens)
    cfg = model.config
    masks = [[True] * views, [True] + [False] * (views - 1), [True, False, True][:views]]
    out = []
    for i in range(count):
        present = masks[i % len(masks)]
        images = [rng.integers(0, 256, (120 + 40 * v, 160, 3), dtype=np.uint8) if p else None
                  for v, p in enumerate(present)]
        pixels, mask = proc(images)
        out.append(Observation(
            pixels=pixels, mask=mask, input_ids=tok(INSTRUCTIONS[i % len(INSTRUCTIONS)]),
            proprio=rng.normal(0, 0.3, cfg.dim_proprio).astype(np.float32),
            noise=rng.standard_normal((cfg.num_actions, cfg.dim_action)).astype(np.float32),
        ))
    return out


def ort_session(path: Path) -> ort.InferenceSession:
    """A CPU session configured as the robot's runtime configures it."""
    return create_session(path, "cpu", None)


#: the prefix rows :func:`parity_prefix` holds: the first ``length // PREFIX_DELAY`` rows frozen (the delay), guided
#: up to row ``length // 2`` (the horizon)
PREFIX_DELAY = 5


def parity_prefix(chunk: np.ndarray) -> Prefix:
    """A committed prefix for the parity checks from a chunk [T, A] of the model's representation: its rows from
    the delay on (the executing chunk seen from the next chunk's first row), weighted by the soft mask."""
    T, A = chunk.shape
    delay = T // PREFIX_DELAY
    return scheduled_prefix(chunk[delay:], length=T, dim=A, delay=delay, horizon=max(T // 2, delay))


def run_bundle_graphs(encoder: ort.InferenceSession, denoise: ort.InferenceSession, obs: Observation, views: int,
                      steps: int, domain_id: int | None = None,
                      prefix: Prefix | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(context, x0, action) of one observation through the ONNX graphs (``domain_id``: fed to a server
    bundle's denoise graph; ``prefix``: to one that takes a prefix)."""
    context = _encode(encoder, obs, views)
    return (context, *_denoise_loop(denoise, context, obs.noise[None], obs.proprio[None], steps,
                                    None if domain_id is None else [domain_id], [prefix]))


def _encode(encoder: ort.InferenceSession, obs: Observation, views: int) -> np.ndarray:
    """The context of one observation through the encoder graph."""
    return encoder.run(None, {"pixel_values": obs.pixels[None, :views], "image_mask": obs.mask[None, :views],
                              "input_ids": obs.input_ids[None]})[0]


def _denoise_loop(denoise: ort.InferenceSession, context: np.ndarray, x1: np.ndarray, proprio: np.ndarray, steps: int,
                  domain_ids: Sequence[int] | None,
                  prefixes: Sequence[Prefix | None] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(x0, action) of the sampler's ``steps`` denoise-graph runs on ``context`` (``domain_ids``: one per row, for a
    server bundle's graph; ``prefixes``: one per row or none, for a graph that takes a prefix: zero weights where
    None or not given)."""
    feed = {} if domain_ids is None else {DOMAIN_INPUT: np.asarray(domain_ids, np.int64)}
    if PREFIX_INPUTS[0] in {i.name for i in denoise.get_inputs()}:
        feed.update(zip(PREFIX_INPUTS, stack_prefixes(prefixes or [None] * x1.shape[0], length=x1.shape[1],
                                                          dim=x1.shape[2])))
    x0 = np.zeros_like(x1)
    for i in range(steps, 0, -1):
        x0, action = denoise.run(None, {"context": context, "x1": x1, "prev": x0, "proprio": proprio,
                                        "t": np.array([i / steps], np.float32), **feed})
    return x0, action


@torch.no_grad()
def reference(model: XVLA, obs: Observation, domain_ids: Sequence[int], steps: int,
              prefixes: Mapping[int, Prefix] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(context, x0, action) of the PyTorch model for the same observation and noise, for each of ``domain_ids``
    (the observation encoded once), with each domain's prefix of ``prefixes`` mixed into every prediction.

    The loop is the sampler of :meth:`XVLA.generate_actions`, written out to keep the last x0.
    """
    slots = model.config.view_slots  # the processor fills 3; a LeRobot checkpoint may have fewer slots
    ids, px = torch.from_numpy(obs.input_ids)[None], torch.from_numpy(obs.pixels[:slots])[None]
    mask = torch.from_numpy(obs.mask[:slots])[None]
    proprio, x1 = torch.from_numpy(obs.proprio)[None], torch.from_numpy(obs.noise)[None]
    enc = model.encode(ids, px, mask)
    context = model.transformer.context(*enc, model.config.num_actions).numpy()
    for domain_id in domain_ids:
        d = torch.tensor([domain_id])
        prefix = (prefixes or {}).get(domain_id)
        if prefix is not None:
            rows, weights = (torch.from_numpy(a)[None] for a in prefix.padded(x1.shape[1]))
        a = torch.zeros_like(x1)
        for i in range(steps, 0, -1):
            t = torch.full((1,), i / steps)
            a = model.denoise_step(enc, x1 * t + a * (1 - t), proprio, t, d)
            if prefix is not None:
                a = mix_prefix(a, rows, weights)
        yield context, a.numpy(), model.action_space.postprocess(a).numpy()


def measure_parity(model: XVLA, ckpt_dir: Path, encoder_path: Path, denoise_path: Path, *, domains: Mapping[int, int],
                   server: bool, views: int, steps: int, precision: str, rot6d_layout: str = "rows",
                   processor: ImageProcessor | None = None, prefix: bool = False) -> dict:
    """Parity figures of a pair of graphs for each of ``domains`` (domain id → the arms it drives; ``server``: the
    denoise graph takes the domain as an input; ``prefix``: it takes a prefix, checked as well with
    :func:`parity_prefix`); ``passed`` and ``failures`` against the precision's tolerance, scored on the arms each
    domain drives (an unused arm's channels are whatever the network left there: a near-zero rot6d has no
    meaningful rotation, and its error would fail a sound bundle). A server bundle's figures also hold each
    domain's own largest differences (``domains``); with ``prefix``, ``prefix`` holds the largest differences of
    the runs with one and the delay and horizon of its schedule."""
    encoder, denoise = ort_session(encoder_path), ort_session(denoise_path)
    observations = generated_observations(ckpt_dir, model, views, processor=processor)
    max_abs = {"context": 0.0, "x0": 0.0, "action": 0.0}
    per_domain = {str(d): {"x0": 0.0, "action": 0.0} for d in domains}
    with_prefix = {"x0": 0.0, "action": 0.0}
    errors = ChunkErrors()

    def compare(ours: tuple[np.ndarray, ...], ref: tuple[np.ndarray, ...], domain_id: int,
                figures: list[dict[str, float]]) -> str | None:
        for name, value in zip(max_abs, ours):
            if not np.isfinite(value).all():
                return f"the {precision} graphs produced non-finite values in '{name}' (overflow)"
        for name, a, b in zip(max_abs, ours, ref):
            diff = float(np.max(np.abs(a - b)))
            for table in figures:
                if name in table:
                    table[name] = max(table[name], diff)
        accumulate(errors, ref[2], ours[2], model.config.action_mode, rot6d_layout, tuple(range(domains[domain_id])))
        return None

    for obs in observations:
        context = _encode(encoder, obs, views)
        refs = dict(zip(domains, reference(model, obs, list(domains), steps)))
        prefixes = {d: parity_prefix(ref[1][0]) for d, ref in refs.items()} if prefix else {}
        runs = [(d, refs[d], None, [max_abs, per_domain[str(d)]]) for d in domains]
        runs += [(d, ref, prefixes[d], [with_prefix]) for d, ref in
                 zip(prefixes, reference(model, obs, list(prefixes), steps, prefixes))]
        for domain_id, ref, committed, figures in runs:
            ours = (context, *_denoise_loop(denoise, context, obs.noise[None], obs.proprio[None], steps,
                                            [domain_id] if server else None, [committed]))
            overflow = compare(ours, ref, domain_id, figures)
            if overflow:
                return {"observations": len(observations), "steps": steps, "max_abs": max_abs, "chunk": {},
                        "tolerance": {}, "passed": False, "failures": [overflow]}
    tolerance = TOLERANCES[precision]
    failures = errors.failures(tolerance)
    T = model.config.num_actions
    schedule = {"delay": T // PREFIX_DELAY, "horizon": max(T // 2, T // PREFIX_DELAY)}
    return {
        "observations": len(observations), "steps": steps, "max_abs": max_abs, "chunk": errors.summary(),
        "tolerance": {k: v for k, v in vars(tolerance).items() if v is not None},
        "passed": not failures, "failures": failures, **({"domains": per_domain} if server else {}),
        **({"prefix": {**schedule, "max_abs": with_prefix}} if prefix else {}),
    }


#: max |batched row − the same observation alone| per output, by precision (fp16: its own rounding per GEMM shape)
BATCH_TOLERANCE = {"fp32": 1e-5, "fp16": 2e-3}


def measure_batch_parity(model: XVLA, ckpt_dir: Path, encoder_path: Path, denoise_path: Path, *, views: int,
                         steps: int, sizes: tuple[int, ...], precision: str,
                         processor: ImageProcessor | None = None, domains: Sequence[int] | None = None,
                         prefix: bool = False) -> dict:
    """For each batch size above 1: ``size`` different observations (images, instructions, view masks, proprio,
    noise) in one batched run against each alone; the largest difference per output and ``passed``. A server
    bundle's (``domains``) rows take its domains in turn, so a batch mixes them; with ``prefix`` (the graph takes
    one) every other row has a prefix (:func:`parity_prefix` of random rows), the others none."""
    encoder, denoise = ort_session(encoder_path), ort_session(denoise_path)
    observations = generated_observations(ckpt_dir, model, views, count=max(sizes), seed=1, processor=processor)
    row_domains = None if domains is None else [domains[i % len(domains)] for i in range(len(observations))]
    rng = np.random.default_rng(2)
    prefixes = [parity_prefix(rng.normal(0, 0.5, obs.noise.shape).astype(np.float32)) if prefix and i % 2 == 0
                else None for i, obs in enumerate(observations)]
    alone = [run_bundle_graphs(encoder, denoise, obs, views, steps, None if domains is None else row_domains[i],
                               prefixes[i]) for i, obs in enumerate(observations)]
    max_abs = {"context": 0.0, "x0": 0.0, "action": 0.0}
    for size in sizes[1:]:
        batch = observations[:size]
        stacked = Observation(pixels=np.stack([o.pixels for o in batch]), mask=np.stack([o.mask for o in batch]),
                              input_ids=np.stack([o.input_ids for o in batch]),
                              proprio=np.stack([o.proprio for o in batch]), noise=np.stack([o.noise for o in batch]))
        together = run_batch_graphs(encoder, denoise, stacked, views, steps,
                                    None if row_domains is None else row_domains[:size], prefixes[:size])
        for k, name in enumerate(max_abs):
            for row in range(size):
                diff = np.abs(together[k][row] - alone[row][k][0])
                max_abs[name] = max(max_abs[name], float(diff.max()) if np.isfinite(diff).all() else float("inf"))
    tolerance = BATCH_TOLERANCE[precision]
    failures = [f"{name}: a batched row differs from the observation alone by {value:.3g} (at most {tolerance:g})"
                for name, value in max_abs.items() if not value <= tolerance]
    return {"sizes": list(sizes), "max_abs": max_abs, "tolerance": tolerance, "passed": not failures,
            "failures": failures}


def run_batch_graphs(encoder: ort.InferenceSession, denoise: ort.InferenceSession, obs: Observation, views: int,
                     steps: int, domain_ids: Sequence[int] | None = None,
                     prefixes: Sequence[Prefix | None] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(context, x0, action) of a stacked batch ``obs`` (every field with a leading batch dimension; ``prefixes``:
    one per row, or none)."""
    context = encoder.run(None, {"pixel_values": obs.pixels[:, :views], "image_mask": obs.mask[:, :views],
                                 "input_ids": obs.input_ids})[0]
    return (context, *_denoise_loop(denoise, context, obs.noise, obs.proprio, steps, domain_ids, prefixes))
