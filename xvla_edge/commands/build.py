"""``xvla-edge build BUNDLE``: build the bundle's TensorRT engines on this machine (the robot's Jetson).

Example: ``xvla-edge build ./bundles/widowx --workspace-gb 4``

Engines only run on the GPU and TensorRT version they were built with, so this runs on the target
(library: :mod:`runtime.backends.tensorrt.build`).

Exit status: 0 built; 1 the build failed; 2 nothing was built (no TensorRT or GPU here, an int8 bundle,
a bundle that fails its checksums, or engines already there without ``--force``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="bundle directory made by `xvla-edge export` (fp16 or fp32)")
    p.add_argument("--workspace-gb", type=float, default=None,
                   help="builder workspace memory limit in GiB (default: TensorRT's, the device's memory)")
    p.add_argument("--force", action="store_true", help="replace the bundle's existing engines")


def run(args: argparse.Namespace) -> int:
    from runtime.backends.base import BackendError
    from runtime.backends.tensorrt import cuda_graph
    from runtime.backends.tensorrt.backend import GRAPHS, engine_file
    from runtime.backends.tensorrt.build import build_engines, check_buildable
    from runtime.manifest import BundleError

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
