"""Checkpoint → bundle: export the graphs, verify them in ONNX Runtime, write the manifest, atomically.

Everything is written into a temporary directory beside ``out``; the bundle appears under its name only
after every graph exported and passed its parity check. A failure (or Ctrl-C) leaves ``out`` as it was:
absent, or the previous bundle when ``force`` replaces one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import datetime as dt
import json
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator

import torch

from export.domains import domain_defaults
from export.graphs import DenoiseStepGraph, EncoderGraph, ServerDenoiseStepGraph
from calibration.graph_check import GraphCheckError, check_graph
from export.mixed_precision import Fp16Refused, fp16_graphs, record
from export.onnx_graphs import OPSET, export_graph, io_specs, stamp
from export.options import PRECISIONS, ExportOptions
from export.verify import measure_batch_parity, measure_parity
from runtime.graph_stamp import DOMAIN_KEY, DOMAINS_KEY
from runtime.manifest import MANIFEST_FILE, SCHEMA_VERSION
from runtime.manifest_schema import DOMAIN_INPUT, MAX_BATCH, MAX_BATCH_SIZES, PREFIX_INPUTS
from xvla.checkpoint import load_checkpoint
from xvla.config import load_config
from xvla.constants import (CONFIG_FILE, GRIPPER_CHANNELS, INDEX_FILE, MAX_STEPS, NUM_VIEWS, PREPROCESSOR_FILE,
                            TOKENIZER_FILES, WEIGHTS_FILE)
from xvla.errors import XVLAError
from xvla.files import atomic_directory, check_target, inventory, sha256_file
from xvla.lora import LoraAdapter, read_adapter
from xvla.preprocessing import ImageProcessor, TextTokenizer, tokenizer_dir

__all__ = ["ExportError", "ExportOptions", "PRECISIONS", "export_bundle"]


class ExportError(XVLAError, RuntimeError):
    """The export could not be done; nothing was written to the bundle directory."""


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("xvla-edge", "torch", "transformers", "onnx", "onnxscript", "onnxruntime"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def check_options(ckpt_dir: Path, out: Path, opts: ExportOptions) -> None:
    """Fail before any work on arguments that cannot succeed."""
    if not ckpt_dir.is_dir():
        raise ExportError(f"checkpoint {ckpt_dir}: directory not found")
    cfg = load_config(ckpt_dir)
    if (opts.domain_id is None) == (opts.domains is None):
        raise ExportError("give one of --domain-id N (a robot's bundle, the domain folded in) and --domains "
                          "(a server bundle: 'all', or ids such as 0,3,6)")
    if opts.domain_id is not None and not 0 <= opts.domain_id < cfg.num_domains:
        raise ExportError(f"--domain-id {opts.domain_id} is out of range: this checkpoint has domains "
                          f"0..{cfg.num_domains - 1}")
    if opts.domains is not None:
        _check_domains(opts, cfg.num_domains)
    if opts.precision not in PRECISIONS:
        raise ExportError(f"--precision {opts.precision!r} is not supported; expected one of {list(PRECISIONS)} "
                          "(INT8 bundles are made from an fp32 bundle by `xvla-edge quantize`)")
    if opts.views is not None and not 1 <= opts.views <= cfg.view_slots:
        raise ExportError(f"--views {opts.views} is out of range; expected 1..{cfg.view_slots} (the checkpoint's view "
                          f"slots{'' if cfg.view_slots == NUM_VIEWS else ': LeRobot num_image_views'})")
    if opts.arms not in (None, 1, 2):
        raise ExportError(f"--arms {opts.arms} must be 1 or 2")
    if not 1 <= opts.steps <= MAX_STEPS:
        raise ExportError(f"--steps {opts.steps}: expected 1 ... {MAX_STEPS}")
    sizes = opts.batch_sizes
    if (not sizes or sizes[0] != 1 or len(sizes) > MAX_BATCH_SIZES or any(a >= b for a, b in zip(sizes, sizes[1:]))
            or not all(isinstance(n, int) and 1 <= n <= MAX_BATCH for n in sizes)):
        raise ExportError(f"--batch-sizes {' '.join(map(str, sizes))}: expected sizes 1 ... {MAX_BATCH}, increasing, "
                          f"starting with 1, at most {MAX_BATCH_SIZES}")
    if opts.chunk_seconds is not None and not opts.chunk_seconds > 0:
        raise ExportError(f"--chunk-seconds {opts.chunk_seconds} must be > 0")
    check_target(out, force=opts.force)
    ImageProcessor.from_dir(ckpt_dir, opts.image_size)  # the files the bundle copies, read now, not after tracing
    TextTokenizer(ckpt_dir, cfg.text_tokens)


def _check_domains(opts: ExportOptions, num_domains: int) -> None:
    """A server bundle's ``--domains``: ``all``, or distinct ids of the checkpoint; no one robot's values."""
    for flag, value in (("--chunk-seconds", opts.chunk_seconds), ("--arms", opts.arms)):
        if value is not None:
            raise ExportError(f"{flag} names one robot's value; a server bundle records each domain's own "
                              "(export a robot's bundle with --domain-id for a value of your own)")
    listed = opts.domains
    if listed == "all":
        return
    if (not isinstance(listed, (tuple, list)) or not listed
            or not all(isinstance(d, int) and not isinstance(d, bool) for d in listed)):
        raise ExportError(f"--domains {listed!r}: expected 'all' or at least one domain id")
    outside = [d for d in listed if not 0 <= d < num_domains]
    if outside:
        raise ExportError(f"--domains: {', '.join(map(str, outside))} out of range: this checkpoint has domains "
                          f"0..{num_domains - 1}")
    twice = sorted({d for d in listed if list(listed).count(d) > 1})
    if twice:
        raise ExportError(f"--domains: {', '.join(map(str, twice))} listed twice")


def export_bundle(ckpt_dir: str | Path, out: str | Path, opts: ExportOptions,
                  progress: Callable[[str], None] = print) -> dict:
    """Export ``ckpt_dir`` (with ``opts.lora`` merged, if given) for one domain (``opts.domain_id``), or as a
    server bundle of ``opts.domains``, into the bundle directory ``out``; returns the manifest."""
    ckpt_dir, out = Path(ckpt_dir), Path(out)
    check_options(ckpt_dir, out, opts)
    adapter = None if opts.lora is None else read_adapter(opts.lora)  # refused here, before any work
    cfg = load_config(ckpt_dir)
    if opts.views is None:
        opts = dataclasses.replace(opts, views=cfg.view_slots)
    if opts.domains is not None:
        listed = range(cfg.num_domains) if opts.domains == "all" else opts.domains
        opts = dataclasses.replace(opts, domains=tuple(sorted(listed)))
    with atomic_directory(out, force=opts.force) as tmp:
        return _build(ckpt_dir, tmp, opts, progress, adapter)


@contextlib.contextmanager
def _step(progress: Callable[[str], None], label: str) -> Iterator[None]:
    t0 = time.perf_counter()
    progress(f"  {label} ...")
    yield
    progress(f"  {label}: done in {time.perf_counter() - t0:.1f} s")


def _build(ckpt_dir: Path, tmp: Path, opts: ExportOptions, progress: Callable[[str], None],
           adapter: LoraAdapter | None) -> dict:
    merging = "" if adapter is None else (f" + LoRA adapter {adapter.directory} (r {adapter.rank}, alpha "
                                          f"{adapter.alpha:g}: {len(adapter.pairs)} layers, "
                                          f"{len(adapter.modules_to_save)} saved modules)")
    with _step(progress, f"loading checkpoint {ckpt_dir}{merging}"):
        model = load_checkpoint(ckpt_dir, lora=adapter)
    cfg = model.config
    proc = ImageProcessor.from_dir(ckpt_dir, opts.image_size)
    size = proc.output_size[0]
    V, A, T = opts.views, cfg.dim_action, cfg.num_actions
    batched = opts.batch_sizes != (1,)
    B = 2 if batched else 1  # a dynamic batch dimension is traced above 1 (the exporter specialises a 1)
    enc_args = (torch.zeros(B, V, 3, size, size), torch.ones(B, V, dtype=torch.bool),
                torch.ones(B, cfg.text_tokens, dtype=torch.long))
    encoder = EncoderGraph(model, V)
    with torch.no_grad():
        context = encoder(*enc_args)
    den_args = (context, torch.zeros(B, T, A), torch.zeros(B, T, A), torch.zeros(B, cfg.dim_proprio), torch.ones(1))
    enc_path, den_path = tmp / "encoder.onnx", tmp / "denoise.onnx"
    enc_inputs, den_inputs = ["pixel_values", "image_mask", "input_ids"], ["context", "x1", "prev", "proprio", "t"]
    served = opts.domains or (opts.domain_id,)
    if opts.domains is None:
        denoise, what = DenoiseStepGraph(model, opts.domain_id), f"domain {opts.domain_id} folded in"
    else:
        denoise, what = ServerDenoiseStepGraph(model, list(opts.domains)), f"{len(served)} domains, an input"
        den_args += (torch.tensor(served[:B] * B)[:B],)
        den_inputs.append(DOMAIN_INPUT)
    if opts.prefix_inputs:
        den_args += (torch.zeros(B, T, A), torch.zeros(B, T))
        den_inputs += PREFIX_INPUTS
        what += ", real-time chunking's prefix inputs"
    with _step(progress, "tracing encoder (DaViT + BART encoder + context projections)"
                         + (f", batch sizes {list(opts.batch_sizes)}" if batched else "")):
        export_graph(encoder, enc_args, enc_path, enc_inputs, ["context"], batched=enc_inputs if batched else ())
    with _step(progress, f"tracing denoise step ({what})"):
        export_graph(denoise, den_args, den_path, den_inputs, ["x0", "action"],
                     batched=[n for n in den_inputs if n != "t"] if batched else ())  # t: one for the whole batch
    parity_of = functools.partial(measure_parity, model, ckpt_dir, domains={d: _arms(opts, d) for d in served},
                                  server=opts.domains is not None, prefix=opts.prefix_inputs, views=V,
                                  steps=opts.steps, precision=opts.precision, rot6d_layout=opts.rot6d_layout,
                                  processor=proc)
    parity = mixed = None
    if opts.precision == "fp16":
        keep_fp32_from = {"encoder": [],
                          "denoise": ["x1", "prev", "proprio", "t", *(PREFIX_INPUTS if opts.prefix_inputs else ())]}
        with _step(progress, "converting to fp16 and verifying in ONNX Runtime against PyTorch"):
            try:
                outcome = fp16_graphs({"encoder": enc_path, "denoise": den_path}, keep_fp32_from, parity_of, progress)
            except Fp16Refused as exc:
                raise ExportError(f"{exc}. Nothing was written.") from exc
        parity, mixed = outcome.parity, record(outcome, keep_fp32_from)
    stamp(den_path, {DOMAIN_KEY: str(opts.domain_id)} if opts.domains is None  # checked against the manifest
          else {DOMAINS_KEY: ",".join(map(str, served))})                      # when a policy loads
    with _step(progress, "checking both graphs with onnx.checker (full check)"):
        for path in (enc_path, den_path):
            try:
                check_graph(path)
            except GraphCheckError as exc:
                raise ExportError(f"{exc}. Nothing was written.") from exc
    if parity is None:
        with _step(progress, "verifying in ONNX Runtime against PyTorch"):
            parity = parity_of(enc_path, den_path)
    if not parity["passed"]:
        raise ExportError(f"parity check failed ({opts.precision}): {'; '.join(parity['failures'])}. "
                          f"Figures: {json.dumps(parity['max_abs'])}. Nothing was written.")
    if batched:
        with _step(progress, f"checking batches {list(opts.batch_sizes[1:])} against batch 1 in ONNX Runtime"):
            parity["batch"] = measure_batch_parity(model, ckpt_dir, enc_path, den_path, views=V, steps=opts.steps,
                                                   sizes=opts.batch_sizes, precision=opts.precision, processor=proc,
                                                   domains=opts.domains, prefix=opts.prefix_inputs)
        if not parity["batch"]["passed"]:
            raise ExportError(f"batch check failed ({opts.precision}): {'; '.join(parity['batch']['failures'])}. "
                              "Nothing was written.")
    for name in TOKENIZER_FILES:
        if (tokenizer_dir(ckpt_dir) / name).is_file():
            shutil.copy2(tokenizer_dir(ckpt_dir) / name, tmp / name)
    if (ckpt_dir / PREPROCESSOR_FILE).is_file():
        shutil.copy2(ckpt_dir / PREPROCESSOR_FILE, tmp / PREPROCESSOR_FILE)
    if not (tmp / PREPROCESSOR_FILE).is_file():  # made from --image-size: the bundle says what it was
        (tmp / PREPROCESSOR_FILE).write_text(json.dumps(proc.to_dict(), indent=2))
    manifest = _manifest(ckpt_dir, tmp, cfg, opts, size, parity, adapter)
    if mixed is not None:
        manifest["mixed_precision"] = mixed
    (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return manifest


def _arms(opts: ExportOptions, domain_id: int) -> int:
    """The arms a domain of the bundle drives: ``--arms``, else the domain's."""
    return opts.arms or domain_defaults(domain_id)[2]


def _served(opts: ExportOptions) -> dict:
    """The manifest's fields naming what the bundle serves: ``embodiment`` and ``domain_id`` (``chunk_seconds``
    and ``arms`` in ``action``) for a robot's bundle, ``embodiment`` and ``domains`` for a server bundle."""
    if opts.domains is None:
        name, seconds, _ = domain_defaults(opts.domain_id)
        return {"embodiment": opts.embodiment or name, "domain_id": opts.domain_id,
                "action": {"chunk_seconds": opts.chunk_seconds or seconds, "arms": _arms(opts, opts.domain_id)}}
    domains = []
    for d in opts.domains:
        name, seconds, arms = domain_defaults(d)
        domains.append({"domain_id": d, "embodiment": name, "chunk_seconds": seconds, "arms": arms})
    return {"embodiment": opts.embodiment or "server", "domains": domains, "action": {}}


def _manifest(ckpt_dir: Path, tmp: Path, cfg, opts: ExportOptions, image_size: int, parity: dict,
              adapter: LoraAdapter | None) -> dict:
    served = _served(opts)
    weights = ckpt_dir / WEIGHTS_FILE if (ckpt_dir / WEIGHTS_FILE).is_file() else ckpt_dir / INDEX_FILE
    graphs = {}
    for key in ("encoder", "denoise"):
        inputs, outputs = io_specs(tmp / f"{key}.onnx")
        graphs[key] = {"file": f"{key}.onnx", "inputs": inputs, "outputs": outputs}
    files = inventory(tmp, exclude=[MANIFEST_FILE])
    return {
        "schema_version": SCHEMA_VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {"checkpoint": str(ckpt_dir.resolve()), "config_sha256": sha256_file(ckpt_dir / CONFIG_FILE),
                   "weights_sha256": sha256_file(weights), **({"lora": adapter.record()} if adapter else {})},
        **{k: v for k, v in served.items() if k != "action"},
        "action": {"mode": cfg.action_mode, "dim": cfg.dim_action,
                   "output_dim": cfg.real_action_dim if cfg.action_mode == "auto" else cfg.dim_action,
                   "chunk_length": cfg.num_actions, "gripper_channels": list(GRIPPER_CHANNELS[cfg.action_mode]),
                   "rot6d_layout": opts.rot6d_layout, **served["action"]},
        "sampler": {"default_steps": opts.steps},
        "inputs": {"token_length": cfg.text_tokens, "image_size": image_size, "view_slots": cfg.view_slots,
                   "views": opts.views, "proprio_dim": cfg.dim_proprio,
                   **({"state_dim": cfg.state_width} if cfg.state_width is not None else {})},
        "precision": opts.precision,
        "export": {"opset": OPSET, "exporter": "torch.onnx.export(dynamo=True)", "versions": _versions()},
        "graphs": graphs, "files": files, "parity": parity,
        **({"batch_sizes": list(opts.batch_sizes)} if opts.batch_sizes != (1,) else {}),
    }
