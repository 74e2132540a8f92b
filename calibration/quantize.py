"""INT8 bundles: static quantization with explicit Q/DQ nodes, calibrated on a set, gated, written atomically.

Recipe (``onnxruntime.quantization.quantize_static``): ``QuantFormat.QDQ`` (explicit QuantizeLinear /
DequantizeLinear pairs, the form TensorRT 10/11 builds explicitly quantized engines from); weights int8,
symmetric, per output channel; activations int8, symmetric (zero point 0), per tensor, ranges calibrated on the
set (MinMax by default); Q/DQ on the inputs of the quantized MatMul/Gemm only, not on their outputs (ONNX
Runtime's default quantizes outputs too, which puts Q/DQ before Softmax and residual Adds — against TensorRT's
placement guidance), and a dedicated pair per quantized consumer, so a tensor that also feeds a residual Add
reaches it unquantized. The written graphs pass ONNX's full checker and
:func:`calibration.graph_check.tensorrt_qdq_problems`. The encoder is calibrated on the set's observations through the bundle's own
preprocessing (:meth:`runtime.policy.Policy.preprocess`); the denoise step on the inputs of every step of the
fp32 encoder + sampler loop over the set.

Search: start with every MatMul/Gemm of both graphs quantized and gate it — each observation's chunk against the
fp32 bundle's (the reference here; the fp32 bundle itself matches its checkpoint to ~1e-7), same noise, per arm,
against the INT8 tolerance. If that fails, rank blocks by sensitivity: the gate severity (worst error / limit) of
a candidate where only that block is quantized, on ``probe`` observations. A block is a module scope from the
exporter's ``pkg.torch.onnx.name_scopes`` metadata, cut after its layer index (one DaViT block, one BART encoder
layer, one action-head block) or, for a projection outside any layer, the module itself (graphs without that
metadata: one node per block). The k most sensitive blocks stay fp32, k the smallest a bisection over full-set
gates finds; every accepted candidate passed the full gate. If nothing short of no INT8 at all passes,
:class:`QuantizeFailed` is raised and nothing is written.

The result is a new bundle (manifest ``precision`` int8, new sha256s, ``parity`` = the final gate through
:class:`~runtime.policy.Policy` with its INT8 tolerance, a ``quantization`` section with the recipe, the set
and the blocks and nodes kept in fp32), written atomically; the input bundle is only read. Its CPU speed against
the fp32 bundle is then measured in the same process (interleaved rounds, median per chunk).
"""

from __future__ import annotations

import ast
import contextlib
import copy
import datetime as dt
import hashlib
import json
import logging
import os
import inspect
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)

from calibration.capture import evenly
from calibration.check import GateReport, Progress, chunks, compare
from calibration.errors import CalibrationError
from calibration.graph_check import QUANTIZABLE_OPS, GraphCheckError, check_graph, tensorrt_qdq_problems
from calibration.metrics import TOLERANCES, Tolerance
from calibration.sets import CalibrationSet
from runtime.backends.onnxruntime import create_session
from runtime.backends.tensorrt.build import QDQ_PLACEMENT  # what `xvla-edge build` requires of an INT8 bundle
from runtime.manifest import MANIFEST_FILE, Manifest
from runtime.manifest_schema import PREFIX_INPUTS
from runtime.policy import Policy
from xvla.errors import XVLAError
from xvla.files import atomic_directory, check_target, inventory, sha256_file

#: Whether quantize_static can keep calibrated ranges in a file (newer ONNX Runtime): candidates then share one
#: calibration instead of repeating it.
_CACHES_RANGES = "calibration_cache_path" in inspect.signature(quantize_static).parameters

METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}
GRAPHS = ("encoder", "denoise")


class QuantizeFailed(XVLAError, RuntimeError):
    """No INT8 configuration passed the gate; nothing was written."""


@dataclass(frozen=True)
class QuantizeOptions:
    method: str = "minmax"
    op_types: tuple[str, ...] = ("MatMul", "Gemm")
    probe: int = 8  # observations that rank the blocks
    steps: int | None = None  # default: the manifest's
    overrides: dict[str, float] = field(default_factory=dict)  # of the INT8 tolerance
    speed_observations: int = 8  # 0: skip the speed measurement
    force: bool = False


@dataclass
class QuantizeResult:
    out: Path
    gate: GateReport
    blocks: dict[str, list[str]]  # block → its quantizable nodes ("graph/node")
    sensitivity: dict[str, float]  # block → severity when only it is quantized (empty: not needed)
    excluded: list[str]  # blocks kept in fp32, most sensitive first
    speed: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "gate": self.gate.to_dict(), "excluded_blocks": self.excluded,
                "excluded_nodes": [n for b in self.excluded for n in self.blocks[b]],
                "quantized_nodes": sum(len(v) for b, v in self.blocks.items() if b not in self.excluded),
                "blocks": len(self.blocks), "sensitivity": self.sensitivity, "speed": self.speed}


# -- calibration data ----------------------------------------------------------------------------------
@dataclass
class Sample:
    """One observation, preprocessed: the encoder's feed, x1, proprio, and the fp32 chunk."""

    encoder: dict[str, np.ndarray]
    x1: np.ndarray
    proprio: np.ndarray
    reference: np.ndarray | None = None


def sample_chunk(encoder: ort.InferenceSession, denoiser: ort.InferenceSession, sample: Sample, steps: int,
                 record: list[dict[str, np.ndarray]] | None = None) -> np.ndarray:
    """The sampler loop of the runtime's backends (x0 from zeros, t = i / steps for i = steps..1) on plain
    sessions; ``record`` collects every step's denoise feed. A denoise graph with real-time chunking's prefix
    inputs gets zero weights: the chunk without a prefix (the mix after the last MatMul is not quantized)."""
    context = encoder.run(["context"], sample.encoder)[0]
    x0 = np.zeros_like(sample.x1)
    B, T, A = sample.x1.shape
    names = {i.name for i in denoiser.get_inputs()}
    no_prefix = {PREFIX_INPUTS[0]: np.zeros((B, T, A), np.float32), PREFIX_INPUTS[1]: np.zeros((B, T), np.float32)}
    for i in range(steps, 0, -1):
        feed = {"context": context, "x1": sample.x1, "prev": x0, "proprio": sample.proprio,
                "t": np.array([i / steps], np.float32), **{k: v for k, v in no_prefix.items() if k in names}}
        if record is not None:
            record.append(feed)
        x0, action = denoiser.run(["x0", "action"], feed)
    return action[0]


def collect(policy: Policy, cset: CalibrationSet, steps: int) -> tuple[list[Sample], list[dict[str, np.ndarray]]]:
    """Preprocessed samples with their fp32 chunks, and the denoise feeds of every step (calibration data)."""
    action, bundle = policy.manifest.action, policy.bundle_dir
    shape = (int(action["chunk_length"]), int(action["dim"]))
    encoder = create_session(bundle / policy.manifest.encoder.file, "cpu", None)
    denoiser = create_session(bundle / policy.manifest.denoise.file, "cpu", None)
    samples, feeds = [], []
    for i in range(len(cset)):
        pixels, mask, ids, proprio, x1 = policy.preprocess(cset.observation(i, shape))
        s = Sample({"pixel_values": pixels, "image_mask": mask, "input_ids": ids}, x1, proprio)
        s.reference = sample_chunk(encoder, denoiser, s, steps, feeds)
        samples.append(s)
    return samples, feeds


class _Feeds(CalibrationDataReader):
    """Feeds in ranges: with ``CalibStridedMinMax`` quantize_static collects one range at a time and merges the
    results, so a histogram calibrator (entropy, percentile) holds one stride of whole tensors, not all."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds
        self.set_range(0, len(feeds))

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self.feeds[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


# -- blocks ---------------------------------------------------------------------------------------------
def block_of(node: onnx.NodeProto) -> str:
    """The layer a node belongs to (see the module docstring); its own name without scope metadata."""
    scopes = next((ast.literal_eval(p.value) for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"),
                  None)
    modules = [s for s in (scopes or [])[:-1] if s]  # the last entry names the op itself
    if not modules:
        return node.name
    parts = modules[-1].split(".")
    for j, part in enumerate(parts):
        if part.isdigit():
            while j + 1 < len(parts) and parts[j + 1].isdigit():
                j += 1
            return ".".join(parts[: j + 1])
    return modules[-1]


def quantizable_blocks(bundle: Path, manifest: Manifest, op_types: tuple[str, ...]) -> dict[str, list[str]]:
    """``"graph/block"`` → the ``"graph/node"`` names of its ``op_types`` nodes, in graph order."""
    blocks: dict[str, list[str]] = {}
    for graph in GRAPHS:
        model = onnx.load(str(bundle / getattr(manifest, graph).file), load_external_data=False)
        for node in model.graph.node:
            if node.op_type in op_types:
                blocks.setdefault(f"{graph}/{block_of(node)}", []).append(f"{graph}/{node.name}")
    return blocks


# -- graph variants -------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence onnxruntime.quantization's advice printed through the root logger."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


class Variants:
    """Quantized versions of the bundle's two graphs, by the set of nodes quantized, built once each.

    Calibration runs once per graph (its ranges are cached in the work directory); every later variant reuses
    the ranges. A graph with no node quantized is the input bundle's file.
    """

    def __init__(self, bundle: Path, manifest: Manifest, work: Path, feeds: dict[str, list[dict[str, np.ndarray]]],
                 strides: dict[str, int], opts: QuantizeOptions) -> None:
        self.bundle, self.manifest, self.work, self.opts = bundle, manifest, work, opts
        self.feeds, self.strides = feeds, strides
        self.paths: dict[tuple[str, frozenset[str]], Path] = {}

    def path(self, graph: str, nodes: frozenset[str]) -> Path:
        """The graph file with ``nodes`` (bare node names) quantized."""
        source = self.bundle / getattr(self.manifest, graph).file
        if not nodes:
            return source
        key = (graph, nodes)
        if key not in self.paths:
            digest = hashlib.sha256("\n".join(sorted(nodes)).encode()).hexdigest()[:12]
            out = self.work / f"{graph}-{digest}" / source.name
            out.parent.mkdir()
            cache = self.work / f"{graph}.ranges.json"
            if _CACHES_RANGES:
                reader = None if cache.exists() else _Feeds(self.feeds.pop(graph))
                cached = {"calibration_cache_path": str(cache)}
            else:  # an ONNX Runtime without the range cache (Python 3.10's last, 1.23): calibrate every candidate
                reader, cached = _Feeds(self.feeds[graph]), {}
            # one observation per stride (its denoise steps together). Not CalibMaxIntermediateOutputs: in ORT
            # 1.32 it discards each full batch of outputs without merging its ranges
            stride = self.strides[graph]
            with _quiet():
                quantize_static(str(source), str(out), reader, quant_format=QuantFormat.QDQ,
                                op_types_to_quantize=list(self.opts.op_types), per_channel=True,
                                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                nodes_to_quantize=sorted(nodes), use_external_data_format=True,
                                calibrate_method=METHODS[self.opts.method], **cached,
                                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                               "CalibStridedMinMax": stride,
                                               # Q/DQ on the inputs of the quantized ops only (TensorRT's
                                               # placement): ONNX Runtime also quantizes their outputs by default
                                               "OpTypesToExcludeOutputQuantization": list(self.opts.op_types),
                                               # a tensor that also feeds a residual Add stays unquantized there
                                               "DedicatedQDQPair": True})
            unquantize_other_consumers(out)
            self.paths[key] = out
        return self.paths[key]

    def pair(self, quantized: set[str]) -> tuple[Path, Path]:
        """(encoder, denoise) files with the ``"graph/node"`` names in ``quantized`` quantized."""
        return tuple(self.path(g, frozenset(n.split("/", 1)[1] for n in quantized if n.startswith(g + "/")))
                     for g in GRAPHS)  # type: ignore[return-value]


def unquantize_other_consumers(path: Path) -> None:
    """Rewire every consumer of a DequantizeLinear that is not a quantized op (a residual Add reading the same
    LayerNorm output as a MatMul) to the float tensor before the Q/DQ pair, in place: ONNX Runtime shares one
    pair between a tensor's consumers in some of these cases even with ``DedicatedQDQPair``, which would add
    quantization noise to the residual stream and puts Q/DQ where TensorRT's placement guidance does not."""
    model = onnx.load(str(path))
    source = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    float_of = {n.output[0]: source[n.input[0]] for n in model.graph.node
                if n.op_type == "DequantizeLinear" and n.input[0] in source}
    changed = False
    for node in model.graph.node:
        if node.op_type in QUANTIZABLE_OPS or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(node.input):
            if name in float_of:
                node.input[i] = float_of[name]
                changed = True
    if changed:  # the weights are in memory: the old files go first (onnx appends to an existing data file)
        for old in [path, *(path.parent / f for f in _external_files(path))]:
            old.unlink()
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)


def run_pair(paths: tuple[Path, Path], samples: list[Sample], steps: int) -> np.ndarray:
    encoder, denoiser = (create_session(p, "cpu", None) for p in paths)
    return np.stack([sample_chunk(encoder, denoiser, s, steps) for s in samples])


# -- the whole command ----------------------------------------------------------------------------------
def quantize_bundle(bundle: str | Path, cset: CalibrationSet, out: str | Path,
                    opts: QuantizeOptions = QuantizeOptions(), progress: Progress = lambda _: None) -> QuantizeResult:
    """Make the INT8 bundle ``out`` from the fp32 ``bundle`` (see the module docstring)."""
    bundle, out = Path(bundle), Path(out)
    manifest = Manifest.load(bundle)
    manifest.verify_files(bundle)
    if manifest.precision != "fp32":
        raise CalibrationError(f"{bundle}: precision {manifest.precision!r}; quantize starts from an fp32 bundle")
    if manifest.batch_sizes != (1,):
        raise CalibrationError(f"{bundle}: exported for batch sizes {list(manifest.batch_sizes)}; quantize starts from "
                               "a batch-1 fp32 bundle (export without --batch-sizes): INT8 bundles run batch 1")
    if opts.method not in METHODS:
        raise CalibrationError(f"--method {opts.method!r}; expected one of {sorted(METHODS)}")
    if out.resolve() == bundle.resolve() or bundle.resolve() in out.resolve().parents:
        raise CalibrationError(f"--out {out}: must not be the input bundle {bundle} or inside it")
    check_target(out, force=opts.force)
    cset.check_bundle(manifest, bundle)
    steps = manifest.default_steps if opts.steps is None else opts.steps
    tolerance = replace(TOLERANCES["int8"], **opts.overrides)
    action = manifest.action
    blocks = quantizable_blocks(bundle, manifest, opts.op_types)
    if not blocks:
        raise CalibrationError(f"{bundle}: no node of type {list(opts.op_types)} to quantize")

    with Policy.load(bundle, backend="onnxruntime", device="cpu", verify=False) as fp32:
        progress(f"  running the fp32 bundle on {len(cset)} observations (calibration data and reference) ...")
        samples, feeds = collect(fp32, cset, steps)
    reference = np.stack([s.reference for s in samples])

    with tempfile.TemporaryDirectory(prefix="xvla-quantize-") as work:
        variants = Variants(bundle, manifest, Path(work),
                            {"encoder": [s.encoder for s in samples], "denoise": feeds},
                            {"encoder": 1, "denoise": steps}, opts)

        def trial(excluded: list[str], idx: np.ndarray) -> tuple[float, list[str]]:
            """(severity, failures) of the candidate with ``excluded`` blocks in fp32, on observations ``idx``."""
            quantized = {n for b, nodes in blocks.items() if b not in excluded for n in nodes}
            got = run_pair(variants.pair(quantized), [samples[i] for i in idx], steps)
            arms, combined = compare(reference[idx], got, action, tolerance)
            return combined.severity(tolerance), [f for a in arms for f in a.failures]

        progress(f"  calibrating ({opts.method}) and gating every {'/'.join(opts.op_types)} in INT8 "
                 f"({sum(map(len, blocks.values()))} nodes in {len(blocks)} blocks) ...")
        excluded, sensitivity = _search(list(blocks), trial, len(samples), evenly(len(samples), opts.probe), progress)
        progress(f"  keeping {len(excluded)} block(s) in fp32: {excluded or 'none'}; writing {out} ...")
        quantized = {n for b, nodes in blocks.items() if b not in excluded for n in nodes}
        with atomic_directory(out, force=opts.force) as tmp:
            _write_files(bundle, manifest, variants.pair(quantized), tmp)
            for graph in GRAPHS:
                path = tmp / getattr(manifest, graph).file
                try:
                    check_graph(path)
                except GraphCheckError as exc:
                    raise QuantizeFailed(f"the INT8 graph {exc}") from exc
                problems = tensorrt_qdq_problems(onnx.load(str(path)))
                if problems:
                    raise QuantizeFailed(f"the INT8 graph {path.name} departs from TensorRT's Q/DQ rules in "
                                         f"{len(problems)} place(s): " + "; ".join(problems[:5]))
            raw = _manifest(manifest, tmp, cset, bundle, opts, blocks, excluded, sensitivity)
            (tmp / MANIFEST_FILE).write_text(json.dumps(raw, indent=2))
            gate = _final_gate(tmp, out, manifest, cset, reference, steps, tolerance, bundle)
            if not gate.passed:  # the search's sessions and the Policy's should agree; refuse if they do not
                raise QuantizeFailed(f"the written INT8 bundle fails the gate: {'; '.join(gate.failures)}")
            raw["parity"] = gate.to_dict()
            (tmp / MANIFEST_FILE).write_text(json.dumps(raw, indent=2))
    result = QuantizeResult(out, gate, blocks, sensitivity, excluded)
    if opts.speed_observations > 0:
        progress("  measuring CPU speed against the fp32 bundle ...")
        result.speed = measure_speed(bundle, out, cset, steps, opts.speed_observations)
    return result


def _search(blocks: list[str], trial: Callable[[list[str], np.ndarray], tuple[float, list[str]]], count: int,
            probe: np.ndarray, progress: Progress) -> tuple[list[str], dict[str, float]]:
    """(blocks to keep in fp32, sensitivity of every block); nothing to keep when all-INT8 passes.

    ``trial(excluded, observations)`` gates a candidate and returns its (severity, failures)."""
    everything = np.arange(count)
    failures = trial([], everything)[1]
    if not failures:
        return [], {}
    progress(f"  gate fails ({'; '.join(failures)}); ranking {len(blocks)} blocks on {probe.size} observations")
    sensitivity = {b: trial([o for o in blocks if o != b], probe)[0] for b in blocks}
    order = sorted(blocks, key=lambda b: -sensitivity[b])
    return _fewest_exclusions(order, lambda k: not trial(order[:k], everything)[1], progress), sensitivity


def _fewest_exclusions(order: list[str], passes: Callable[[int], bool], progress: Progress) -> list[str]:
    """The shortest prefix of ``order`` whose exclusion passes (bisection; ``passes(k)`` runs a full gate)."""
    lo, hi, best = 0, len(order), None  # lo fails; excluding all len(order) blocks would leave no INT8
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ok = passes(mid)
        progress(f"    {mid} most sensitive block(s) in fp32: {'passes' if ok else 'fails'}")
        if ok:
            hi, best = mid, mid
        else:
            lo = mid
    if best is None:
        raise QuantizeFailed(f"no INT8 configuration passes the gate: it fails even with the {len(order) - 1} most "
                             f"sensitive of {len(order)} blocks in fp32; nothing was written")
    return order[:best]


def _final_gate(tmp: Path, out: Path, manifest: Manifest, cset: CalibrationSet, reference: np.ndarray, steps: int,
                tolerance: Tolerance, source: Path) -> GateReport:
    """The bundle written in ``tmp`` (to become ``out``) through :class:`Policy` against the fp32 reference."""
    with Policy.load(tmp, backend="onnxruntime", device="cpu") as policy:
        t0 = time.perf_counter()
        got = chunks(policy, cset, steps)
        seconds = time.perf_counter() - t0
    arms, combined = compare(reference, got, manifest.action, tolerance)
    return GateReport(bundle=str(out), precision="int8", backend="onnxruntime-cpu",
                      reference={"kind": "bundle", "path": str(source), "backend": "onnxruntime-cpu"},
                      set={"path": cset.source.get("set", cset.where), "observations": len(cset),
                           "index_sha256": cset.source.get("index_sha256")},
                      mode=manifest.action["mode"], steps=steps, tolerance=tolerance, arms=arms, combined=combined,
                      seconds={"candidate": seconds})


def _external_files(path: Path) -> set[str]:
    model = onnx.load(str(path), load_external_data=False)
    return {e.value for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
            for e in t.external_data if e.key == "location"}


def _write_files(bundle: Path, manifest: Manifest, graphs: tuple[Path, Path], tmp: Path) -> None:
    """The two graphs (with their external data) and every other file of the input bundle."""
    graph_files = set()
    for graph in GRAPHS:
        name = getattr(manifest, graph).file
        graph_files |= {name, *_external_files(bundle / name)}
    for name in manifest.files:
        if name not in graph_files:
            shutil.copy2(bundle / name, tmp / name)
    for graph, path in zip(GRAPHS, graphs):
        name = getattr(manifest, graph).file
        shutil.copy2(path, tmp / name)
        for data in _external_files(path):
            shutil.copy2(path.parent / data, tmp / data)


def _manifest(manifest: Manifest, tmp: Path, cset: CalibrationSet, source: Path, opts: QuantizeOptions,
              blocks: dict[str, list[str]], excluded: list[str], sensitivity: dict[str, float]) -> dict[str, Any]:
    """The INT8 bundle's manifest, without ``parity`` (added once the written bundle passed the gate)."""
    raw = copy.deepcopy(manifest.raw)
    del raw["parity"]
    raw["created"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    raw["precision"] = "int8"
    raw["files"] = inventory(tmp, exclude=[MANIFEST_FILE])
    raw["quantization"] = {
        "tool": "onnxruntime.quantization.quantize_static", "onnxruntime": ort.__version__, "onnx": onnx.__version__,
        "format": "QDQ", "weights": "int8 symmetric per-channel", "activations": "int8 symmetric per-tensor",
        "qdq_placement": QDQ_PLACEMENT,
        "calibration": opts.method, "op_types": list(opts.op_types),
        "quantized_nodes": sum(len(v) for b, v in blocks.items() if b not in excluded),
        "excluded_blocks": excluded, "excluded_nodes": [n for b in excluded for n in blocks[b]],
        "sensitivity": sensitivity,
        "source_bundle": {"path": str(source.resolve()), "manifest_sha256": sha256_file(source / MANIFEST_FILE)},
        "set": {"path": cset.source.get("set", cset.where), "observations": len(cset),
                "index_sha256": cset.source.get("index_sha256")},
    }
    return raw


def measure_speed(fp32: Path, int8: Path, cset: CalibrationSet, steps: int, count: int, rounds: int = 3
                  ) -> dict[str, float]:
    """Median ``Policy.act`` seconds of both bundles on the same observations, interleaved; ``speedup`` > 1:
    INT8 is faster."""
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    with Policy.load(fp32, "onnxruntime", "cpu", verify=False) as a, \
            Policy.load(int8, "onnxruntime", "cpu", verify=False) as b:
        action = a.manifest.action
        obs = [cset.observation(int(i), (int(action["chunk_length"]), int(action["dim"])))
               for i in evenly(len(cset), count)]
        a.act(obs[0], steps=steps), b.act(obs[0], steps=steps)  # warm-up
        for _ in range(rounds):
            for o in obs:
                for name, policy in (("fp32", a), ("int8", b)):
                    t0 = time.perf_counter()
                    policy.act(o, steps=steps)
                    times[name].append(time.perf_counter() - t0)
    fp32_s, int8_s = float(np.median(times["fp32"])), float(np.median(times["int8"]))
    return {"fp32_s": fp32_s, "int8_s": int8_s, "speedup": fp32_s / int8_s, "chunks": len(times["fp32"]),
            "threads": os.cpu_count() or 1}
