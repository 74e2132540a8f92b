"""``xvla-edge calibrate``: build calibration sets, and gate a bundle against its fp32 reference on one.

    xvla-edge calibrate capture --from-recording RECORDING_DIR --out bundles/widowx.calib [--bundle bundles/widowx]
    xvla-edge calibrate capture --from-folder shots/ --table shots/obs.csv --domain-id 0 --out bundles/widowx.calib
    xvla-edge calibrate capture --synthetic 64 --bundle bundles/widowx --out bundles/widowx.calib
    xvla-edge calibrate check bundles/widowx-int8 --set bundles/widowx.calib [--reference CKPT | --reference-bundle
        bundles/widowx] [--reference-lora ADAPTER_DIR] [--json gate.json] [--plot gate.png]

``check`` exits 0 when the bundle passes, 1 when it fails, 2 on a usage or input error; so does ``capture``
(0 or 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.backends.names import AUTO, BUNDLE_CHOICES, DEVICES


def parse_tolerances(items: list[str]) -> dict[str, float]:
    """``["position_mm=2", "gripper_flips=0"]`` → overrides of :class:`~calibration.metrics.Tolerance` fields."""
    from calibration.errors import CalibrationError
    from calibration.metrics import Tolerance

    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError(item)
            out[key] = float(value)
        except ValueError:
            raise CalibrationError(f"--tolerance {item!r}: expected KEY=NUMBER, e.g. position_mm=2") from None
    try:
        Tolerance.from_dict(out, "--tolerance")
    except ValueError as e:
        raise CalibrationError(str(e)) from None
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="calibrate_command", metavar="SUBCOMMAND", required=True)
    cap = sub.add_parser("capture", help="build a calibration set")
    source = cap.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-recording", type=Path, metavar="DIR",
                        help="a recorder dump of the daemon (observations.npz + meta.json)")
    source.add_argument("--from-folder", type=Path, metavar="DIR", help="a folder of images (needs --table)")
    source.add_argument("--synthetic", type=int, metavar="N", help="N generated observations (needs --bundle)")
    cap.add_argument("--table", type=Path, help="JSON or CSV of images, instructions and proprio (--from-folder)")
    cap.add_argument("--domain-id", type=int, help="domain of rows that do not name one (--from-folder)")
    cap.add_argument("--bundle", type=Path, help="check the set fits this bundle (shapes the --synthetic set)")
    cap.add_argument("--max", type=int, default=256, dest="limit",
                     help="keep at most this many evenly spaced observations (default 256)")
    cap.add_argument("--seed", type=int, default=0, help="noise seeds are SEED + i where the source has none")
    cap.add_argument("--out", type=Path, required=True, help="set directory to create (e.g. beside the bundle)")
    cap.add_argument("--force", action="store_true", help="replace an existing set")

    chk = sub.add_parser("check", help="gate a bundle against its fp32 reference (exit 0 pass, 1 fail, 2 error)")
    chk.add_argument("bundle", type=Path)
    chk.add_argument("--set", type=Path, required=True, dest="set_dir", help="calibration set directory")
    ref = chk.add_mutually_exclusive_group()
    ref.add_argument("--reference", type=Path, metavar="CHECKPOINT_DIR",
                     help="the fp32 PyTorch reference (default: the manifest's source.checkpoint)")
    ref.add_argument("--reference-bundle", type=Path, metavar="FP32_BUNDLE",
                     help="use an fp32 bundle of the same checkpoint in ONNX Runtime as the reference (no torch)")
    chk.add_argument("--reference-lora", type=Path, metavar="ADAPTER_DIR",
                     help="where the LoRA adapter merged at export is now (default: the manifest's source.lora.path)")
    chk.add_argument("--backend", default=AUTO, choices=BUNDLE_CHOICES,
                     help="backend that runs the bundle (default: tensorrt on cuda when built, else onnxruntime)")
    chk.add_argument("--device", default="cpu", choices=DEVICES)
    chk.add_argument("--steps", type=int, default=None, help="denoising steps (default: the manifest's)")
    chk.add_argument("--tolerance", action="append", default=[], metavar="KEY=VALUE",
                     help="override a limit of the manifest's tolerance, e.g. position_mm=2 (repeatable)")
    chk.add_argument("--json", type=Path, help="write the report as JSON")
    chk.add_argument("--plot", type=Path, help="write a PNG of the error distributions")


def run(args: argparse.Namespace) -> int:
    from xvla.errors import XVLAError

    try:
        return _capture(args) if args.calibrate_command == "capture" else _check(args)
    except XVLAError as e:
        print(f"xvla-edge calibrate {args.calibrate_command}: error: {e}", file=sys.stderr)
        return 2


def _capture(args: argparse.Namespace) -> int:
    from calibration.capture import from_folder, from_recording, synthetic
    from calibration.errors import CalibrationError
    from calibration.sets import write_set
    from runtime.manifest import Manifest

    if args.from_folder is None and (args.table is not None or args.domain_id is not None):
        raise CalibrationError("--table and --domain-id go with --from-folder")
    manifest = Manifest.load(args.bundle) if args.bundle is not None else None
    if args.from_recording is not None:
        cset = from_recording(args.from_recording, limit=args.limit, seed=args.seed)
    elif args.from_folder is not None:
        if args.table is None:
            raise CalibrationError("--from-folder needs --table FILE.json|FILE.csv")
        cset = from_folder(args.from_folder, args.table, domain_id=args.domain_id, limit=args.limit, seed=args.seed)
    else:
        if manifest is None:
            raise CalibrationError("--synthetic needs --bundle (the set is shaped for that bundle)")
        cset = synthetic(manifest, args.synthetic, seed=args.seed)
    if manifest is not None:
        cset.check_bundle(manifest, args.bundle)
    write_set(cset, args.out, force=args.force)
    print(f"calibration set {args.out}: {cset.describe()}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from calibration.check import run_gate
    from calibration.report import format_table, plot, write_json
    from calibration.sets import load_set

    overrides = parse_tolerances(args.tolerance)
    cset = load_set(args.set_dir)
    report = run_gate(args.bundle, cset, checkpoint=args.reference, lora=args.reference_lora,
                      reference_bundle=args.reference_bundle,
                      backend=args.backend, device=args.device, steps=args.steps, overrides=overrides,
                      progress=lambda line: print(line, file=sys.stderr))
    print(format_table(report))
    if args.json is not None:
        write_json(report, args.json)
    if args.plot is not None:
        plot(report, args.plot)
    return 0 if report.passed else 1
