"""fp16 graphs that pass the parity gate by construction: the rule islands, then a search when they are not enough.

Step 1 is the rule conversion (:func:`export.onnx_graphs.convert_fp16`: the ops fp16 is known to break, and the
denoise graph's arithmetic before its first MatMul, kept in fp32). If those graphs pass the gate, they are the
bundle's: no search, no extra cost.

Otherwise the nodes that still run in fp16 are grouped into blocks (:func:`calibration.quantize.block_of`: one
DaViT block, one BART layer, one action-transformer block, or a node outside any layer) and the search runs,
every candidate gated by the same parity function as the bundle, on the same observations:

1. each graph alone in fp16 (the other one fp32). If one of them passes alone, only the other graph's blocks are
   searched (the first one stays as the rules made it); otherwise both graphs' blocks are, and the upper bound,
   every node in fp32, is gated first: if even that misses the tolerance, the export is refused with both
   measurements (:class:`Fp16Refused`).
2. sensitivity: for each searched block, the gate severity (worst error / its limit) of a candidate where only
   that block runs in fp16.
3. the k most sensitive blocks (ties by name) stay fp32, k the smallest a bisection over gated candidates finds;
   every accepted candidate passed the gate, so the bundle's graphs are one that passed. If nothing short of
   every node in fp32 passes, the export is refused too (that bundle would be fp32 under an fp16 label).

Deterministic (fixed observations and noise, ties broken by name): the same checkpoint gives the same node set.
Bounded: at most ``max_candidates`` gated candidates and ``max_seconds``; past either, the export is refused
with what was measured. The manifest's ``mixed_precision`` records which nodes stayed fp32 and why
(:func:`record`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import onnx

from calibration.metrics import ChunkErrors, Tolerance
from calibration.quantize import block_of
from export.onnx_graphs import FP32_OPS, convert_fp16
from xvla.errors import XVLAError

#: (encoder, denoise) graph files → the bundle's parity figures for them (``passed``, ``failures``, ``chunk``)
Gate = Callable[[Path, Path], dict]
GRAPHS = ("encoder", "denoise")
MAX_CANDIDATES = 400
MAX_SECONDS = 3600.0


class Fp16Refused(XVLAError, RuntimeError):
    """No fp16 graph met the tolerance (or the search ran out of its bounds); the message holds the errors."""


@dataclass
class Outcome:
    """The graphs written in place and what the manifest records of them."""

    parity: dict  # the gate's figures for the written graphs
    fp32_nodes: dict[str, list[str]]  # graph → nodes kept in fp32 by the search (empty: the rules sufficed)
    search: dict | None = None  # the search's measurements (None: not run)
    rule_nodes: dict[str, list[str]] = field(default_factory=dict)  # graph → fp32 nodes of the rule conversion


def fp16_graphs(paths: Mapping[str, Path], keep_fp32_from: Mapping[str, Sequence[str]], gate: Gate,
                progress: Callable[[str], None], *, max_candidates: int = MAX_CANDIDATES,
                max_seconds: float = MAX_SECONDS) -> Outcome:
    """Rewrite the fp32 ``paths`` (``encoder``, ``denoise``) in place as fp16 graphs that pass ``gate``.

    ``keep_fp32_from``: per graph, the inputs whose arithmetic up to the first MatMul stays fp32 (the rule).
    Raises :class:`Fp16Refused` when nothing passes; the files are then left in an unspecified state (the export
    writes into a temporary directory)."""
    work = paths["encoder"].parent / ".fp16-search"
    work.mkdir()
    try:
        search = _Search(paths, keep_fp32_from, gate, work, max_candidates, max_seconds)
        return search.run(progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def node_precisions(path: Path) -> dict[str, str]:
    """Node name → ``"float16"`` / ``"float32"``: the float type a node computes in (its float outputs; fp16 if
    any is). Casts, Identities (the fp16 conversion's own plumbing: a round trip it removed leaves one at a graph
    output) and nodes without float outputs are left out."""
    model = onnx.load(str(path), load_external_data=False)
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input)}
    out = {}
    for node in inferred.graph.node:
        if node.op_type in ("Cast", "Identity"):
            continue
        kinds = {types.get(name) for name in node.output}
        if onnx.TensorProto.FLOAT16 in kinds:
            out[node.name] = "float16"
        elif onnx.TensorProto.FLOAT in kinds:
            out[node.name] = "float32"
    return out


def severity(parity: dict) -> float:
    """The gate's worst error as a fraction of its limit (> 1 fails; non-finite outputs: inf)."""
    chunk, tol = parity.get("chunk") or {}, parity.get("tolerance") or {}
    if not chunk:
        return float("inf")
    maxima = {k: [np.array([chunk[k]["max"]])] for k in ("position_mm", "rotation_deg", "joint_deg") if k in chunk}
    errors = ChunkErrors(**maxima, gripper_flips=int(chunk.get("gripper_flips", 0)),
                         max_abs=float(chunk.get("max_abs", 0.0)))
    return errors.severity(Tolerance.from_dict(tol))


def errors_line(parity: dict) -> str:
    """The measured errors of a parity result in physical units, one line."""
    chunk = parity.get("chunk") or {}
    if not chunk:
        return "; ".join(parity.get("failures", [])) or "no figures"
    parts = [f"{k.split('_')[0]} max {chunk[k]['max']:.4g} {'mm' if k == 'position_mm' else 'deg'}"
             for k in ("position_mm", "rotation_deg", "joint_deg") if k in chunk]
    parts += [f"gripper flips {chunk.get('gripper_flips', 0)}", f"max abs {chunk.get('max_abs', 0):.3g}"]
    return ", ".join(parts)


class _Search:
    """One search over a pair of fp32 graphs (moved into ``work``), its candidates built once each and counted."""

    def __init__(self, paths: Mapping[str, Path], keep_fp32_from: Mapping[str, Sequence[str]], gate: Gate,
                 work: Path, max_candidates: int, max_seconds: float) -> None:
        self.paths, self.keep_from, self.gate, self.work = dict(paths), keep_fp32_from, gate, work
        self.max_candidates, self.deadline = max_candidates, time.monotonic() + max_seconds
        self.max_seconds, self.gated, self.last, self.before = max_seconds, 0, {}, {}
        self.sources: dict[str, Path] = {}
        for graph, path in self.paths.items():  # the fp32 graphs, moved aside for the candidates
            self.sources[graph] = _move_graph(path, work / "fp32" / path.name)
        self.built: dict[tuple[str, frozenset[str]], Path] = {}

    def run(self, progress: Callable[[str], None]) -> Outcome:
        t0 = time.perf_counter()
        rule = {g: self.convert(g, frozenset(), self.work / "rule") for g in GRAPHS}
        before = self.before = self.measure(rule)
        rule_nodes = {g: sorted(n for n, p in node_precisions(rule[g]).items() if p == "float32") for g in GRAPHS}
        if before["passed"]:
            self.install(rule)
            return Outcome(parity=before, fp32_nodes={g: [] for g in GRAPHS}, rule_nodes=rule_nodes)
        blocks = self.blocks(rule)
        progress(f"  fp16 with the rule islands fails the gate ({errors_line(before)}); searching {len(blocks)} "
                 "blocks for the nodes to keep in fp32")
        alone = {g: self.measure({o: rule[o] if o == g else self.sources[o] for o in GRAPHS}) for g in GRAPHS}
        worst = max(GRAPHS, key=lambda g: (severity(alone[g]), g))
        other = next(g for g in GRAPHS if g != worst)
        if alone[other]["passed"]:  # the other graph may stay as the rules made it: search this one's blocks
            scope, upper = [b for b in blocks if b.startswith(worst + "/")], alone[other]
        else:
            scope, upper = list(blocks), self.measure(self.sources)
            if not upper["passed"]:
                raise Fp16Refused(
                    f"fp16 cannot meet the tolerance {before['tolerance']}: with the rule islands "
                    f"{errors_line(before)}; even with every node in fp32 {errors_line(upper)}")
        sensitivity = {}
        for name in sorted(scope):
            sensitivity[name] = severity(self.measure(self.candidate(blocks, [b for b in scope if b != name])))
        order = sorted(scope, key=lambda b: (-sensitivity[b], b))
        progress("  most sensitive: " + ", ".join(f"{b} {sensitivity[b]:.3g}" for b in order[:5]))
        trials, lo, hi, best = [], 0, len(order), upper  # keeping none fails (the rule graphs); all passes (upper)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            parity = self.measure(self.candidate(blocks, order[:mid]))
            trials.append({"fp32_blocks": mid, "severity": severity(parity), "passed": parity["passed"]})
            progress(f"    {mid} most sensitive block(s) in fp32: {'passes' if parity['passed'] else 'fails'} "
                     f"({errors_line(parity)})")
            if parity["passed"]:
                hi, best = mid, parity
            else:
                lo = mid
        if hi == len(blocks):  # only every node in fp32 passes: that bundle would be fp32 under an fp16 label
            raise Fp16Refused(
                f"fp16 cannot meet the tolerance {before['tolerance']} with any node in fp16: with the rule islands "
                f"{errors_line(before)}; with all but the least sensitive of {len(order)} blocks in fp32 "
                f"{errors_line(self.last)}; only every node in fp32 passes ({errors_line(upper)}): export fp32")
        kept = order[:hi]
        self.install(self.candidate(blocks, kept))
        fp32_nodes = {g: sorted(n for b in kept if b.startswith(g + "/") for n in blocks[b]) for g in GRAPHS}
        search = {
            "before": _figures(before), "after": _figures(best),
            "graph_alone_in_fp16": {g: _figures(alone[g]) for g in GRAPHS},
            "blocks": len(blocks), "searched_blocks": len(scope), "kept_blocks": kept, "sensitivity": sensitivity,
            "trials": trials, "candidates": self.gated, "seconds": round(time.perf_counter() - t0, 1),
        }
        return Outcome(parity=best, fp32_nodes=fp32_nodes, search=search, rule_nodes=rule_nodes)

    def blocks(self, rule: Mapping[str, Path]) -> dict[str, list[str]]:
        """``"graph/block"`` → the nodes of that block that run in fp16 in the rule conversion."""
        out: dict[str, list[str]] = {}
        for graph in GRAPHS:
            half = {n for n, p in node_precisions(rule[graph]).items() if p == "float16"}
            model = onnx.load(str(rule[graph]), load_external_data=False)
            for node in model.graph.node:
                if node.name in half:
                    out.setdefault(f"{graph}/{block_of(node)}", []).append(node.name)
        return out

    def candidate(self, blocks: Mapping[str, list[str]], fp32_blocks: Sequence[str]) -> dict[str, Path]:
        """The graph pair with the rule islands and ``fp32_blocks`` in fp32 (a graph with every block in fp32:
        its fp32 source)."""
        out = {}
        for graph in GRAPHS:
            mine = [b for b in blocks if b.startswith(graph + "/")]
            kept = frozenset(n for b in fp32_blocks if b in mine for n in blocks[b])
            if mine and all(b in fp32_blocks for b in mine):
                out[graph] = self.sources[graph]
            else:
                digest = hashlib.sha256("\n".join(sorted(kept)).encode()).hexdigest()[:12]
                out[graph] = self.convert(graph, kept, self.work / f"{graph}-{digest}")
        return out

    def convert(self, graph: str, kept: frozenset[str], folder: Path) -> Path:
        key = (graph, kept)
        if key not in self.built:
            folder.mkdir(parents=True, exist_ok=True)
            out = folder / self.paths[graph].name
            convert_fp16(self.sources[graph], list(self.keep_from.get(graph, ())), sorted(kept), out=out)
            self.built[key] = out
        return self.built[key]

    def measure(self, pair: Mapping[str, Path]) -> dict:
        if self.gated >= self.max_candidates or time.monotonic() > self.deadline:
            raise Fp16Refused(f"the fp16 search stopped at its bound ({self.max_candidates} candidates, "
                              f"{self.max_seconds:g} s) before a graph passed the gate; with the rule islands "
                              f"{errors_line(self.before)}")
        self.gated += 1
        self.last = self.gate(pair["encoder"], pair["denoise"])
        return self.last

    def install(self, pair: Mapping[str, Path]) -> None:
        """Move the chosen graphs (with their external data) to the bundle's paths."""
        for graph in GRAPHS:
            _move_graph(pair[graph], self.paths[graph])


def _figures(parity: dict) -> dict:
    """What the manifest keeps of one gated candidate."""
    return {"chunk": parity.get("chunk", {}), "max_abs": parity.get("max_abs", {}), "passed": parity["passed"],
            "severity": severity(parity)}


def _move_graph(source: Path, target: Path) -> Path:
    """Move a graph and its external data (``<name>.data``; the name is kept, so is the data's location)."""
    assert source.name == target.name, (source, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for a, b in ((source, target), (source.with_name(source.name + ".data"), target.with_name(target.name + ".data"))):
        if a.exists():
            os.replace(a, b)
    return target


def record(outcome: Outcome, keep_fp32_from: Mapping[str, Sequence[str]]) -> dict:
    """The manifest's ``mixed_precision``: the nodes in fp32 and why (rule: the op or the input it follows;
    search: the gate's figures before and after, each block's sensitivity)."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    return {
        "rule": {"ops": sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS)),
                 "before_first_matmul_from": {g: list(v) for g, v in keep_fp32_from.items() if v},
                 "nodes": outcome.rule_nodes},
        "search": None if outcome.search is None else {**outcome.search, "nodes": outcome.fp32_nodes},
    }
