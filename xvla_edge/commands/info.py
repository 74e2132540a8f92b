"""``xvla-edge info BUNDLE``: what a bundle is, by its id, after validating its manifest.

Example: ``xvla-edge info /var/lib/xvla-edge/current --verify``

The bundle id is the sha256 of the canonical manifest (:attr:`runtime.manifest.Manifest.bundle_id`); the
daemon logs it and exports it in ``/metrics``, and flash records it. ``--verify`` also checks that the
directory holds exactly the listed files with their sizes and sha256. Exit status: 0 valid, 1 invalid.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime.manifest import Manifest


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="bundle directory (or a robot's `current` link)")
    p.add_argument("--verify", action="store_true", help="also check every file's size and sha256")
    p.add_argument("--json", action="store_true", help="print the id and the manifest's fields as JSON")


def run(args: argparse.Namespace) -> int:
    from runtime.manifest import Manifest

    manifest = Manifest.load(args.bundle)
    if args.verify:
        manifest.verify_files(args.bundle)
    if args.json:
        print(json.dumps({"bundle_id": manifest.bundle_id, **manifest.raw}, indent=2))
        return 0
    print(summary(manifest, args.bundle, verified=args.verify))
    return 0


def summary(manifest: Manifest, bundle: Path, *, verified: bool) -> str:
    """A few lines: id, robot, action, inputs, files, real-time chunking, export-time parity."""
    a, i = manifest.action, manifest.inputs
    total = sum(entry["bytes"] for entry in manifest.files.values())
    if manifest.is_server:
        served = [f"  server:    {manifest.embodiment}, {len(manifest.domains)} domains (the domain an input of the "
                  "denoise graph)"]
        served += [f"    domain {d.domain_id}: {d.embodiment}, {d.arms} arm(s), {d.chunk_seconds:g} s per chunk"
                   for d in manifest.domains.values()]
        span = "each domain's span"
    else:
        served = [f"  robot:     {manifest.embodiment}, domain {manifest.domain_id}, {a['arms']} arm(s)"]
        span = f"{a['chunk_seconds']:g} s"
    lines = [f"{bundle}: bundle {manifest.bundle_id}", *served,
             f"  action:    {a['mode']} ({a['output_dim']} of {a['dim']} channels), {a['chunk_length']} steps over "
             f"{span}, rot6d {a['rot6d_layout']}",
             f"  inputs:    {i['views']} of {i['view_slots']} views at {i['image_size']}², {i['token_length']} tokens; "
             f"{manifest.default_steps} denoising steps by default",
             f"  precision: {manifest.precision}; {len(manifest.files)} files, {total / 1e6:.1f} MB"
             + (" (sizes and sha256 verified)" if verified else "")]
    lora = manifest.raw.get("source", {}).get("lora")
    if lora:
        lines.append(f"  lora:      {lora['name']} merged (r {lora['r']}, alpha {lora['lora_alpha']:g}, "
                     f"{lora['layers']} layers; saved {', '.join(lora['modules_to_save']) or 'nothing'})")
    lines.append("  chunking:  " + ("real-time chunking supported (the denoise graph takes a prefix)"
                                    if manifest.supports_prefix else "no real-time chunking (exported before it: "
                                    "re-export the bundle to continue chunks with a prefix)"))
    lines.append(f"  engines:   {_engines(manifest, bundle)}")
    parity = manifest.raw.get("parity")
    if isinstance(parity, dict) and isinstance(parity.get("max_abs"), dict):
        lines.append("  parity:    " + ", ".join(f"{k} max abs {v:.2e}" for k, v in parity["max_abs"].items()
                                                  if isinstance(v, (int, float))))
    return "\n".join(lines)


def _engines(manifest: Manifest, bundle: Path) -> str:
    """What the bundle holds for TensorRT, and where its CUDA-graph state shows at run time."""
    from runtime.backends.base import BackendError
    from runtime.backends.tensorrt.backend import read_engines_json
    from runtime.manifest import ENGINES_DIR

    int8 = "" if manifest.precision != "int8" else (
        "; Q/DQ placement checked for TensorRT" if manifest.qdq_placement == "tensorrt"
        else "; Q/DQ placement not checked for TensorRT (quantize again before `xvla-edge build`)")
    if not (Path(bundle) / ENGINES_DIR).exists():
        return f"none (TensorRT engines are built on the robot: `xvla-edge build {bundle}`){int8}"
    try:
        records = read_engines_json(Path(bundle))
    except BackendError as exc:
        return f"unusable: {exc}"
    first = next(iter(records.values()))
    return (f"TensorRT {first.tensorrt} for {first.gpu} (compute capability {first.compute_capability}){int8}; "
            "CUDA graphs are captured at run time — a failed capture shows as xvla_backend_graph_fallback 1 in "
            "the daemon's /metrics")
