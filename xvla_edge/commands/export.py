"""``xvla-edge export``: a checkpoint directory → a verified per-robot bundle, or a server bundle of many domains.

Examples::

    xvla-edge export ./X-VLA-WidowX --domain-id 0 --precision fp16 --views 2 --out ./bundles/widowx
    xvla-edge export ./X-VLA-Pt --lora ./X-VLA-libero-spatial-peft --domain-id 3 --rot6d-layout columns \
        --out ./bundles/libero-spatial     # an official LoRA fine-tune, merged into its base
    xvla-edge export ./X-VLA-Pt --domains all --out ./bundles/server   # a server bundle of every domain
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from export.options import PRECISIONS, ExportOptions, parse_domains
from xvla.extras import needs


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help="checkpoint directory (config.json, model.safetensors, tokenizer)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--domain-id", type=int, help="domain row whose soft prompt is folded in (a robot's bundle)")
    which.add_argument("--domains", type=_domains, metavar="all|ID,ID,...",
                       help="a server bundle: the domain is an input of the denoise graph, these domains' rows in it")
    p.add_argument("--lora", type=Path, default=None, metavar="ADAPTER_DIR",
                   help="a PEFT LoRA adapter of the checkpoint (adapter_config.json, adapter_model.safetensors, as "
                        "the official fine-tunes ship) merged into its weights before export")
    p.add_argument("--embodiment", default=None, help="robot name recorded in the manifest")
    p.add_argument("--precision", default="fp32", metavar="{" + ",".join(PRECISIONS) + "}",
                   help="numeric precision of the graphs (INT8: `xvla-edge quantize` an fp32 bundle)")
    p.add_argument("--views", type=int, default=None,
                   help="camera views the robot has (1..3; default: the checkpoint's view slots, 3 for official "
                        "checkpoints); others get zero features")
    p.add_argument("--chunk-seconds", type=float, default=None, help="time span of one chunk (default: per domain)")
    p.add_argument("--arms", type=int, default=None, help="arms the robot has, 1 or 2 (default: per domain)")
    p.add_argument("--steps", type=int, default=10, help="default denoising steps")
    p.add_argument("--rot6d-layout", default="rows", choices=["rows", "columns"],
                   help="rot6d layout the checkpoint speaks (LIBERO: columns)")
    p.add_argument("--image-size", type=int, default=None,
                   help="camera image side, only for a checkpoint without preprocessor_config.json "
                        "(X-VLA's usual bicubic resize and ImageNet normalisation at that size)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1], metavar="N",
                   help="batch sizes the graphs run at, e.g. 2 4 8 for a policy server (1 is always included; "
                        "more than 1: a dynamic batch dimension, each size checked against batch 1)")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to create")
    p.add_argument("--force", action="store_true", help="replace an existing bundle (only once the new one passes)")


def _domains(text: str) -> tuple[int, ...] | str:
    try:
        return parse_domains(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    opts = ExportOptions(domain_id=args.domain_id, domains=args.domains, embodiment=args.embodiment,
                         precision=args.precision,
                         views=args.views, chunk_seconds=args.chunk_seconds, arms=args.arms, steps=args.steps,
                         rot6d_layout=args.rot6d_layout, image_size=args.image_size,
                         force=args.force, batch_sizes=(1, *sorted(set(args.batch_sizes) - {1})),
                         lora=None if args.lora is None else str(args.lora))
    with needs("export"):
        from export.bundle import export_bundle
    from xvla.errors import XVLAError

    t0 = time.perf_counter()
    served = (f"domain {args.domain_id}" if args.domains is None
              else f"domains {args.domains if args.domains == 'all' else ','.join(map(str, args.domains))}")
    lora = f" + {args.lora}" if args.lora else ""
    print(f"exporting {args.checkpoint}{lora} → {args.out} ({args.precision}, {served}, {args.views or 'all'} views)")
    try:
        manifest = export_bundle(args.checkpoint, args.out, opts)
    except XVLAError as e:
        print(f"xvla-edge export: error: {e}", file=sys.stderr)
        return 1
    print(summary(manifest, args.out, time.perf_counter() - t0))
    return 0


def summary(manifest: dict, out: Path, seconds: float) -> str:
    lines = [f"bundle {out} written in {seconds:.1f} s:"]
    lora = manifest["source"].get("lora")
    if lora:
        lines.append(f"  LoRA adapter {lora['name']} merged: r {lora['r']}, alpha {lora['lora_alpha']:g}, "
                     f"{lora['layers']} layers, saved modules {', '.join(lora['modules_to_save']) or 'none'}")
    for name, entry in manifest["files"].items():
        lines.append(f"  {name:<28} {entry['bytes'] / 1e6:10.2f} MB")
    p = manifest["parity"]
    lines.append(f"parity vs PyTorch ({p['observations']} observations, {p['steps']} steps): "
                 + ", ".join(f"{k} max abs {v:.2e}" for k, v in p["max_abs"].items()))
    chunk = p["chunk"]
    for key, unit in (("position_mm", "mm"), ("rotation_deg", "deg"), ("joint_deg", "deg")):
        if key in chunk:
            lines.append(f"  {key}: p50 {chunk[key]['p50']:.3g} / p99 {chunk[key]['p99']:.3g} / max {chunk[key]['max']:.3g} {unit}")
    lines.append(f"  gripper decisions flipped: {chunk['gripper_flips']}; tolerance {p['tolerance']}: PASSED")
    if "domains" in p:
        lines.append(f"  each of the {len(p['domains'])} domains checked; the largest action max abs "
                     f"{max(d['action'] for d in p['domains'].values()):.2e}")
    mixed = manifest.get("mixed_precision")
    if mixed:
        rule = sum(map(len, mixed["rule"]["nodes"].values()))
        search = mixed["search"]
        if search is None:
            lines.append(f"fp16: the rule islands ({rule} nodes in fp32) passed the gate; no search")
        else:
            kept = sum(map(len, search["nodes"].values()))
            before = search["before"]["chunk"].get("position_mm", {}).get("max")
            lines.append(f"fp16: the rule islands ({rule} nodes in fp32) missed the gate (severity "
                         f"{search['before']['severity']:.3g}{f', position max {before:.3g} mm' if before else ''}); "
                         f"the search kept {kept} more nodes in fp32 ({', '.join(search['kept_blocks'])}) after "
                         f"{search['candidates']} gated candidates in {search['seconds']:.0f} s")
    if "batch" in p:
        b = p["batch"]
        lines.append(f"batch sizes {b['sizes']}: each row against the observation alone, "
                     + ", ".join(f"{k} max abs {v:.2e}" for k, v in b["max_abs"].items())
                     + f" (at most {b['tolerance']:g}): PASSED")
    return "\n".join(lines)
