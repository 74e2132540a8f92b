"""The bundle manifest (``manifest.json``): what a bundle holds and how to run it.

Written by ``xvla-edge export``, read by everything else; nobody guesses a shape. Every field is validated
on load (:mod:`runtime.manifest_schema`: types, ranges, shapes against each other). Schema version 1:

| key | meaning |
|---|---|
| ``schema_version`` | 1 |
| ``source`` | ``checkpoint`` path, ``config_sha256``, ``weights_sha256`` of the checkpoint exported; optional ``lora``: the PEFT LoRA adapter merged into it (name, path, its files' sha256 and size, ``r``, ``lora_alpha``, ``target_modules``, ``modules_to_save``, ``layers``, ``base_model_name_or_path``) |
| ``embodiment``, ``domain_id`` | the robot and the domain row folded into ``denoise.onnx`` |
| ``domains`` | a server bundle instead of ``domain_id``: ``[{domain_id, embodiment, chunk_seconds, arms}, ...]``, the domains whose rows ``denoise.onnx`` holds (it takes ``domain_id`` per batch row as an input); ``embodiment`` then names the bundle, and ``action`` has no ``chunk_seconds`` / ``arms`` |
| ``action`` | ``mode``, ``dim`` (network width), ``output_dim``, ``chunk_length``, ``chunk_seconds`` (time span of one chunk), ``gripper_channels``, ``rot6d_layout``, ``arms`` (1 or 2) |
| ``sampler`` | ``default_steps`` |
| ``inputs`` | ``token_length``, ``image_size``, ``view_slots`` (3), ``views`` (slots the encoder computes; the rest get zero features), ``proprio_dim`` |
| ``precision`` | ``fp32`` / ``fp16`` / ``int8`` |
| ``mixed_precision`` | fp16 bundles: the nodes kept in fp32 and why — ``rule`` (the op types and inputs the rules name, and the nodes they kept) and ``search`` (null when the rules passed the gate; else the gate's figures before and after, each block's sensitivity, the bisection's trials, the nodes kept) |
| ``export`` | ``opset``, ``exporter``, library ``versions`` |
| ``graphs`` | ``encoder`` / ``denoise``: ``file`` and the ``inputs`` / ``outputs`` (name, shape, dtype); a denoise graph with the inputs ``prefix`` and ``prefix_weights`` supports real-time chunking (:attr:`Manifest.supports_prefix`; bundles exported before it have neither and run as before) |
| ``batch_sizes`` | optional: the batch sizes the graphs were exported and checked for, ``[1, ...]`` increasing; then dimension 0 of every tensor but ``t`` is ``"batch"`` (absent: batch 1 only, every dimension a number) |
| ``files`` | every file of the bundle except the manifest: ``sha256`` and ``bytes`` (nothing else may be in the directory but ``engines/``) |
| ``parity`` | figures measured at export time against the PyTorch checkpoint, and the tolerances they met |
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime import manifest_schema
from runtime.manifest_schema import BATCH_DIM, PREFIX_INPUTS
from xvla.errors import XVLAError
from xvla.files import file_problem

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 20  # exported manifests are a few kB; a larger file is not one
ENGINES_DIR = "engines"  # TensorRT engines built on the target (not in the manifest: see verify_files)


class BundleError(XVLAError, ValueError):
    """A bundle is missing, malformed, or its files do not match its manifest."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]  # numbers, and :data:`BATCH_DIM` first in a batched bundle
    dtype: str

    def at(self, batch: int) -> tuple[int, ...]:
        """The concrete shape for ``batch`` observations."""
        return tuple(batch if d == BATCH_DIM else int(d) for d in self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class GraphSpec:
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "inputs": [s.to_dict() for s in self.inputs],
                "outputs": [s.to_dict() for s in self.outputs]}


@dataclass(frozen=True)
class DomainSpec:
    """One domain a bundle serves: its id, embodiment name, chunk time span and arms."""

    domain_id: int
    embodiment: str
    chunk_seconds: float
    arms: int


@dataclass(frozen=True)
class Manifest:
    """A parsed, validated ``manifest.json``; ``raw`` keeps every field."""

    raw: dict[str, Any]
    encoder: GraphSpec
    denoise: GraphSpec

    # -- accessors of the fields the runtime uses -------------------------------------------------
    @property
    def qdq_placement(self) -> str | None:
        """``quantization.qdq_placement`` (what ``xvla-edge quantize`` checked its Q/DQ graphs against); None when
        absent or not a string (the field is informational, so it is read defensively rather than validated)."""
        quantization = self.raw.get("quantization")
        value = quantization.get("qdq_placement") if isinstance(quantization, dict) else None
        return value if isinstance(value, str) else None

    @property
    def is_server(self) -> bool:
        """A server bundle: several domains, the domain an input of the denoise graph (``domains``)."""
        return "domains" in self.raw

    @property
    def domain_id(self) -> int:
        """The domain folded into a robot's bundle; :class:`BundleError` for a server bundle (it has several)."""
        if self.is_server:
            raise BundleError(f"this is a server bundle (domains {list(self.domain_ids)}): it has no single domain; "
                              "a robot runs a bundle exported with `xvla-edge export --domain-id N`")
        return int(self.raw["domain_id"])

    @functools.cached_property
    def domains(self) -> dict[int, DomainSpec]:
        """Every domain the bundle serves, by id (a robot's bundle: its one domain)."""
        if not self.is_server:
            action = self.raw["action"]
            return {self.domain_id: DomainSpec(self.domain_id, self.embodiment, float(action["chunk_seconds"]),
                                               int(action["arms"]))}
        return {int(e["domain_id"]): DomainSpec(int(e["domain_id"]), str(e["embodiment"]), float(e["chunk_seconds"]),
                                                int(e["arms"])) for e in self.raw["domains"]}

    @property
    def domain_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self.domains))

    def action_for(self, domain_id: int) -> dict[str, Any]:
        """``action`` with the domain's ``chunk_seconds`` and ``arms`` (a robot's bundle: ``action`` itself)."""
        spec = self.domains[domain_id]
        return {**self.raw["action"], "chunk_seconds": spec.chunk_seconds, "arms": spec.arms}

    def for_domain(self, domain_id: int) -> Manifest:
        """The manifest as a robot's bundle of ``domain_id`` would read (``domain_id``, that domain's
        ``embodiment`` and ``action``), keeping this bundle's graphs and :attr:`bundle_id`: what a robot served
        one domain of a server bundle works with. A robot's bundle returns itself."""
        if not self.is_server:
            return self
        spec = self.domains[domain_id]
        raw = {k: v for k, v in self.raw.items() if k != "domains"}
        raw.update(domain_id=domain_id, embodiment=spec.embodiment, action=self.action_for(domain_id))
        view = Manifest(raw=raw, encoder=self.encoder, denoise=self.denoise)
        view.__dict__["bundle_id"] = self.bundle_id  # the bundle it runs is this one
        return view

    @property
    def supports_prefix(self) -> bool:
        """The denoise graph takes real-time chunking's committed prefix and its weights
        (:data:`~runtime.manifest_schema.PREFIX_INPUTS`): the bundle was exported with them."""
        return PREFIX_INPUTS[0] in {s.name for s in self.denoise.inputs}

    @property
    def embodiment(self) -> str:
        return str(self.raw["embodiment"])

    @property
    def action(self) -> dict[str, Any]:
        return self.raw["action"]

    @property
    def inputs(self) -> dict[str, Any]:
        return self.raw["inputs"]

    @property
    def precision(self) -> str:
        return str(self.raw["precision"])

    @property
    def default_steps(self) -> int:
        return int(self.raw["sampler"]["default_steps"])

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """The batch sizes the graphs run at, increasing, always starting with 1."""
        return tuple(self.raw.get("batch_sizes", (1,)))

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        return self.raw["files"]

    @functools.cached_property  # the manifest is frozen: hash it once
    def bundle_id(self) -> str:
        """sha256 of the canonical manifest (sorted keys, no spaces): names this exact bundle everywhere
        (``xvla-edge info``, the daemon's logs and ``/metrics``, flash)."""
        return canonical_sha256(self.raw)

    # -- reading and checking ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Any, source: str = MANIFEST_FILE) -> Manifest:
        """A validated manifest, or :class:`BundleError` listing every problem (see :mod:`runtime.manifest_schema`)."""
        version = d.get("schema_version") if isinstance(d, dict) else None
        if isinstance(d, dict) and version != SCHEMA_VERSION:
            raise BundleError(f"{source}: schema_version is {version!r}; this runtime reads {SCHEMA_VERSION}")
        found = manifest_schema.problems(d, MANIFEST_FILE)
        if found:
            raise BundleError("\n".join(f"{source}: {problem}" for problem in found))
        graphs = {name: _graph(d["graphs"][name]) for name in ("encoder", "denoise")}
        return cls(raw=d, encoder=graphs["encoder"], denoise=graphs["denoise"])

    @classmethod
    def load(cls, bundle_dir: str | Path) -> Manifest:
        path = Path(bundle_dir) / MANIFEST_FILE
        if path.exists() and not path.is_file():
            raise BundleError(f"{path}: a directory or other non-file; expected the bundle's manifest file")
        if not path.is_file():
            raise BundleError(f"{path}: not found (is {bundle_dir} a bundle directory?)")
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise BundleError(f"{path}: {size} bytes; a manifest is at most {MAX_MANIFEST_BYTES} (a few kB when exported)")
        try:
            d = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:  # ValueError: JSONDecodeError
            raise BundleError(f"{path}: not valid JSON ({type(e).__name__}: {e})") from None
        return cls.from_dict(d, str(path))

    def verify_files(self, bundle_dir: str | Path) -> None:
        """Check the directory holds exactly the listed files, each with its recorded size and sha256.

        Besides ``manifest.json``, only ``engines/`` may be there unlisted: TensorRT engines built on the
        robot, which carry their own stamp (checked by the TensorRT backend).
        """
        bundle_dir = Path(bundle_dir)
        present = {p.name for p in bundle_dir.iterdir()}
        extra = sorted(present - set(self.files) - {MANIFEST_FILE, ENGINES_DIR})
        if extra:
            raise BundleError(f"{bundle_dir}: {', '.join(extra)} not listed in {MANIFEST_FILE}: a bundle holds "
                              "exactly the files its manifest lists")
        for name, entry in self.files.items():
            path = bundle_dir / name
            if path.is_symlink() or (path.exists() and not path.is_file()):
                raise BundleError(f"{path}: listed in {MANIFEST_FILE} as a file, but it is a link or a directory")
            problem = file_problem(path, entry, MANIFEST_FILE)
            if problem:
                raise BundleError(problem)


def canonical_sha256(d: Any) -> str:
    """sha256 of ``d`` as canonical JSON (sorted keys, no whitespace, UTF-8)."""
    text = json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _graph(g: dict[str, Any]) -> GraphSpec:
    def specs(key: str) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(s["name"], tuple(s["shape"]), s["dtype"]) for s in g[key])

    return GraphSpec(g["file"], specs("inputs"), specs("outputs"))
