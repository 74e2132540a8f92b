"""``xvla-edge build BUNDLE``: build the bundle's TensorRT engines on this machine (the robot's Jetson).

Example: ``xvla-edge build ./bundles/widowx --workspace-gb 4``

Engines only run on the GPU and TensorRT version they were built with, so this runs on the target. Both
engines are built into a temporary directory inside the bundle, which then replaces ``BUNDLE/engines/``
(a failed build leaves the previous engines, or none, never half of them). ``engines/engines.json``
records each engine's stamp; ``manifest.json`` is left as exported. A timing cache kept in
``engines/timing.cache`` speeds up rebuilds on the same machine.

Exit status: 0 built; 1 the build failed; 2 nothing was built (no TensorRT or GPU here, an int8 bundle,
a bundle that fails its checksums, or engines already there without ``--force``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from runtime import cuda_graph, trt_api
from runtime.backends.base import BackendError
from runtime.backends.tensorrt import (ENGINES_DIR, GRAPHS, TIMING_CACHE, EngineRecord, engine_file, graph_sources,
                                       write_engines_json)
from runtime.manifest import BundleError, Manifest

BUILDABLE_PRECISIONS = ("fp16", "fp32")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="bundle directory made by `xvla-edge export` (fp16 or fp32)")
    p.add_argument("--workspace-gb", type=float, default=None,
                   help="builder workspace memory limit in GiB (default: TensorRT's, the device's memory)")
    p.add_argument("--force", action="store_true", help="replace the bundle's existing engines")


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    try:
        manifest = check_buildable(args.bundle, force=args.force)
    except (BundleError, BackendError, cuda_graph.CudaError) as e:
        print(f"xvla-edge build: {e}", file=sys.stderr)
        return 2
    workspace = None if args.workspace_gb is None else int(args.workspace_gb * 2**30)
    try:
        engines = build_engines(args.bundle, manifest, workspace_bytes=workspace)
    except (BackendError, cuda_graph.CudaError, OSError) as e:
        print(f"xvla-edge build: build failed: {e}", file=sys.stderr)
        return 1
    print(f"engines in {engines} built in {time.perf_counter() - t0:.0f} s:")
    for graph in GRAPHS:
        path = engines / engine_file(graph)
        print(f"  {path.name:<16} {path.stat().st_size / 1e6:10.1f} MB")
    return 0


def check_buildable(bundle_dir: Path, *, force: bool) -> Manifest:
    """The bundle's manifest once TensorRT and a GPU are here and the bundle may be built."""
    manifest = Manifest.load(bundle_dir)
    if manifest.precision not in BUILDABLE_PRECISIONS:
        raise BundleError(f"{bundle_dir} is a {manifest.precision} bundle; TensorRT engines are built from "
                          f"{' or '.join(BUILDABLE_PRECISIONS)} bundles (export one with `--precision fp16`)")
    if (bundle_dir / ENGINES_DIR).exists() and not force:
        raise BundleError(f"{bundle_dir / ENGINES_DIR} already exists; pass --force to rebuild it")
    machine = trt_api.machine_stamp()  # needs tensorrt and a CUDA device
    print(f"building on {machine['gpu']} (compute capability {machine['compute_capability']}) "
          f"with TensorRT {machine['tensorrt']}; checking {bundle_dir}'s checksums")
    manifest.verify_files(bundle_dir)
    return manifest


def build_engines(bundle_dir: Path, manifest: Manifest, *, workspace_bytes: int | None = None) -> Path:
    """Build both engines and swap them in as ``BUNDLE/engines`` (replacing any there); returns that path."""
    bundle_dir = Path(bundle_dir)
    target = bundle_dir / ENGINES_DIR
    tmp = Path(tempfile.mkdtemp(prefix=f".{ENGINES_DIR}-build-", dir=bundle_dir))
    try:
        cache = tmp / TIMING_CACHE
        if (target / TIMING_CACHE).is_file():
            shutil.copyfile(target / TIMING_CACHE, cache)
        machine = trt_api.machine_stamp()
        records = {}
        for graph in GRAPHS:
            spec = getattr(manifest, graph)
            out = tmp / engine_file(graph)
            print(f"building {out.name} from {spec.file} ({manifest.precision}, strongly typed)")
            t0 = time.perf_counter()
            trt_api.build_engine(bundle_dir / spec.file, {s.name: s.shape for s in spec.inputs}, out,
                                 timing_cache=cache, workspace_bytes=workspace_bytes)
            print(f"  {out.name}: {out.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.0f} s")
            records[graph] = EngineRecord(file=out.name, bytes=out.stat().st_size, **machine,
                                          onnx=graph_sources(manifest, graph))
        write_engines_json(tmp, records)
        _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _swap_in(new: Path, target: Path) -> None:
    """Make directory ``new`` be ``target``: two renames, and the old ``target`` is back if the second fails."""
    if not target.exists():
        new.rename(target)
        return
    old = target.with_name(f".{target.name}-old-{os.getpid()}")
    target.rename(old)
    try:
        new.rename(target)
    except BaseException:
        old.rename(target)
        raise
    shutil.rmtree(old)
