"""``xvla-edge quantize``: an INT8 (Q/DQ) bundle from an fp32 bundle, calibrated and gated on a set.

    xvla-edge quantize bundles/widowx --set bundles/widowx.calib --out bundles/widowx-int8 [--json report.json]

Exit 0: the INT8 bundle was written and passed the gate; 1: no INT8 configuration passed (nothing written);
2: a usage or input error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xvla.extras import needs
from xvla_edge.commands.calibrate import parse_tolerances


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="an fp32 bundle (from xvla-edge export)")
    p.add_argument("--set", type=Path, required=True, dest="set_dir",
                   help="calibration set (xvla-edge calibrate capture)")
    p.add_argument("--out", type=Path, required=True, help="INT8 bundle directory to create")
    p.add_argument("--force", action="store_true", help="replace an existing --out (only once the new one passes)")
    p.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"],
                   help="activation range calibration (default minmax)")
    p.add_argument("--probe", type=int, default=8, help="observations used to rank block sensitivity (default 8)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the manifest's)")
    p.add_argument("--tolerance", action="append", default=[], metavar="KEY=VALUE",
                   help="override a limit of the INT8 tolerance, e.g. position_mm=2 (repeatable)")
    p.add_argument("--speed-observations", type=int, default=8,
                   help="observations timed for the CPU speed comparison (0: skip)")
    p.add_argument("--json", type=Path, help="write the report (gate, excluded layers, speed) as JSON")


def run(args: argparse.Namespace) -> int:
    with needs("export"):  # onnx
        from calibration.quantize import QuantizeFailed, QuantizeOptions, quantize_bundle
    from calibration.report import format_table
    from calibration.sets import load_set
    from xvla.errors import XVLAError

    try:
        opts = QuantizeOptions(method=args.method, probe=args.probe, steps=args.steps,
                               overrides=parse_tolerances(args.tolerance), speed_observations=args.speed_observations,
                               force=args.force)
        cset = load_set(args.set_dir)
        print(f"quantizing {args.bundle} → {args.out} on {args.set_dir}: {cset.describe()}")
        result = quantize_bundle(args.bundle, cset, args.out, opts, progress=print)
    except QuantizeFailed as e:
        print(f"xvla-edge quantize: {e}", file=sys.stderr)
        return 1
    except XVLAError as e:
        print(f"xvla-edge quantize: error: {e}", file=sys.stderr)
        return 2
    print(format_table(result.gate))
    d = result.to_dict()
    print(f"INT8 nodes: {d['quantized_nodes']}; kept in fp32: {len(result.excluded)} of {d['blocks']} blocks "
          f"({len(d['excluded_nodes'])} nodes){': ' + ', '.join(result.excluded) if result.excluded else ''}")
    if result.speed:
        s = result.speed
        print(f"CPU speed ({s['chunks']} chunks each, {s['threads']} threads): fp32 {s['fp32_s'] * 1e3:.1f} ms, "
              f"int8 {s['int8_s'] * 1e3:.1f} ms per chunk; fp32 / int8 = {s['speedup']:.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps(d, indent=2))
    print(f"bundle {args.out} written")
    return 0
