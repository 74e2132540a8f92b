"""Build a bundle's TensorRT engines on this machine (the robot's Jetson); ``xvla-edge build`` runs it.

fp32, fp16 and INT8 bundles build the same way, as strongly typed networks: the types come from the ONNX graph,
and an INT8 bundle's Q/DQ nodes are TensorRT's explicit quantization (the rest of its graph runs in fp32, as
in the bundle). INT8 bundles are built only when their manifest records that ``xvla-edge quantize`` checked
the Q/DQ placement against TensorRT's rules.

Engines only run on the GPU and TensorRT version they were built with, so this runs on the target. Both
engines are built into a temporary directory inside the bundle, which then replaces ``BUNDLE/engines/``
(:func:`xvla.files.atomic_directory`: a failed build leaves the previous engines, or none, never half of
them). ``engines/engines.json`` records each engine's stamp; ``manifest.json`` is left as exported. A timing
cache kept in ``engines/timing.cache`` speeds up rebuilds on the same machine. A batched bundle's engines get
one optimisation profile per batch size, each pinned (min = opt = max) so every profile runs static shapes and
its steps can be captured as CUDA graphs.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from runtime.backends.tensorrt import api as trt_api
from runtime.backends.tensorrt.backend import (ENGINES_DIR, GRAPHS, TIMING_CACHE, EngineRecord, engine_file,
                                               graph_sources, profiles, write_engines_json)
from runtime.manifest import BundleError, Manifest
from xvla.files import atomic_directory

BUILDABLE_PRECISIONS = ("fp16", "fp32", "int8")
QDQ_PLACEMENT = "tensorrt"  # what ``xvla-edge quantize`` records once its Q/DQ graphs follow TensorRT's rules


def check_buildable(bundle_dir: Path, *, force: bool) -> Manifest:
    """The bundle's manifest once TensorRT and a GPU are here and the bundle may be built."""
    manifest = Manifest.load(bundle_dir)
    if manifest.precision not in BUILDABLE_PRECISIONS:
        raise BundleError(f"{bundle_dir} is a {manifest.precision} bundle; TensorRT engines are built from "
                          f"{', '.join(BUILDABLE_PRECISIONS)} bundles (export one with `--precision fp16`)")
    placement = manifest.qdq_placement
    if manifest.precision == "int8" and placement != QDQ_PLACEMENT:
        raise BundleError(f"{bundle_dir}: its Q/DQ graphs were not checked against TensorRT's placement rules "
                          f"(manifest quantization.qdq_placement = {placement!r}, expected {QDQ_PLACEMENT!r}); "
                          "quantize its fp32 bundle again with this version of `xvla-edge quantize`")
    if (bundle_dir / ENGINES_DIR).exists() and not force:
        raise BundleError(f"{bundle_dir / ENGINES_DIR} already exists; pass --force to rebuild it")
    machine = trt_api.machine_stamp()  # needs tensorrt and a CUDA device
    print(f"building on {machine['gpu']} (compute capability {machine['compute_capability']}) "
          f"with TensorRT {machine['tensorrt']}; checking {bundle_dir}'s checksums")
    manifest.verify_files(bundle_dir)
    return manifest


def build_engines(bundle_dir: Path, manifest: Manifest, *, workspace_bytes: int | None = None,
                  timing_cache: Path | None = None) -> Path:
    """Build both engines and swap them in as ``BUNDLE/engines`` (replacing any there); returns that path. The
    build starts from the bundle's own timing cache, else from ``timing_cache`` (a flash passes the active
    bundle's: same machine, so its timings apply)."""
    target = Path(bundle_dir) / ENGINES_DIR
    with atomic_directory(target, force=True) as tmp:
        cache = tmp / TIMING_CACHE
        seed = target / TIMING_CACHE if (target / TIMING_CACHE).is_file() else timing_cache
        if seed is not None and seed.is_file():
            shutil.copyfile(seed, cache)
        machine = trt_api.machine_stamp()
        records = {}
        for graph in GRAPHS:
            spec = getattr(manifest, graph)
            out = tmp / engine_file(graph)
            kind = "int8 Q/DQ: explicit quantization" if manifest.precision == "int8" else manifest.precision
            sizes = manifest.batch_sizes
            print(f"building {out.name} from {spec.file} ({kind}, strongly typed"
                  + (f", one optimisation profile per batch size {list(sizes)})" if len(sizes) > 1 else ")"))
            t0 = time.perf_counter()
            try:
                trt_api.build_engine(target.parent / spec.file, profiles(spec, sizes), out,
                                     timing_cache=cache, workspace_bytes=workspace_bytes)
            except Exception as exc:  # TensorRT's own exceptions too (pybind RuntimeError, MemoryError, ...)
                raise trt_api.TensorRTError(
                    f"building {out.name} from {spec.file} on {machine['gpu']} (compute capability "
                    f"{machine['compute_capability']}, TensorRT {machine['tensorrt']}) failed: "
                    f"{type(exc).__name__}: {exc}; the bundle's previous engines, if any, are untouched") from exc
            print(f"  {out.name}: {out.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.0f} s")
            records[graph] = EngineRecord(file=out.name, bytes=out.stat().st_size, **machine,
                                          onnx=graph_sources(manifest, graph))
        write_engines_json(tmp, records)
    return target
