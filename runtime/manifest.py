"""The bundle manifest (``manifest.json``): what a bundle holds and how to run it.

Written by ``xvla-edge export``, read by everything else; nobody guesses a shape. Schema version 1:

| key | meaning |
|---|---|
| ``schema_version`` | 1 |
| ``source`` | ``checkpoint`` path, ``config_sha256``, ``weights_sha256`` of the checkpoint exported |
| ``embodiment``, ``domain_id`` | the robot and the domain row folded into ``denoise.onnx`` |
| ``action`` | ``mode``, ``dim`` (network width), ``output_dim``, ``chunk_length``, ``chunk_seconds`` (time span of one chunk), ``gripper_channels``, ``rot6d_layout``, ``arms`` (1 or 2) |
| ``sampler`` | ``default_steps`` |
| ``inputs`` | ``token_length``, ``image_size``, ``view_slots`` (3), ``views`` (slots the encoder computes; the rest get zero features), ``proprio_dim`` |
| ``precision`` | ``fp32`` / ``fp16`` / ``int8`` |
| ``export`` | ``opset``, ``exporter``, library ``versions`` |
| ``graphs`` | ``encoder`` / ``denoise``: ``file`` and the ``inputs`` / ``outputs`` (name, shape, dtype) |
| ``files`` | every file of the bundle except the manifest: ``sha256`` and ``bytes`` |
| ``parity`` | figures measured at export time against the PyTorch checkpoint, and the tolerances they met |
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xvla.errors import XVLAError
from xvla.files import file_problem

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"


class BundleError(XVLAError, ValueError):
    """A bundle is missing, malformed, or its files do not match its manifest."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str

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
class Manifest:
    """A parsed, validated ``manifest.json``; ``raw`` keeps every field."""

    raw: dict[str, Any]
    encoder: GraphSpec
    denoise: GraphSpec

    # -- accessors of the fields the runtime uses -------------------------------------------------
    @property
    def domain_id(self) -> int:
        return int(self.raw["domain_id"])

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
    def files(self) -> dict[str, dict[str, Any]]:
        return self.raw["files"]

    # -- reading and checking ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Any, source: str = MANIFEST_FILE) -> Manifest:
        if not isinstance(d, dict):
            raise BundleError(f"{source}: expected a JSON object")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BundleError(f"{source}: schema_version is {version!r}; this runtime reads {SCHEMA_VERSION}")
        for key in ("domain_id", "embodiment", "action", "sampler", "inputs", "precision", "graphs", "files"):
            if key not in d:
                raise BundleError(f"{source}: missing required key {key!r}")
        for key in ("mode", "dim", "output_dim", "chunk_length", "chunk_seconds"):
            if key not in d["action"]:
                raise BundleError(f"{source}: missing required key 'action.{key}'")
        for key in ("token_length", "image_size", "view_slots", "views", "proprio_dim"):
            if key not in d["inputs"]:
                raise BundleError(f"{source}: missing required key 'inputs.{key}'")
        graphs = {name: _graph(d["graphs"], name, source) for name in ("encoder", "denoise")}
        return cls(raw=d, encoder=graphs["encoder"], denoise=graphs["denoise"])

    @classmethod
    def load(cls, bundle_dir: str | Path) -> Manifest:
        path = Path(bundle_dir) / MANIFEST_FILE
        if not path.is_file():
            raise BundleError(f"{path}: not found (is {bundle_dir} a bundle directory?)")
        try:
            d = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BundleError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(d, str(path))

    def verify_files(self, bundle_dir: str | Path) -> None:
        """Check every listed file exists with its recorded size and sha256."""
        bundle_dir = Path(bundle_dir)
        for name, entry in self.files.items():
            problem = file_problem(bundle_dir / name, entry, MANIFEST_FILE)
            if problem:
                raise BundleError(problem)


def _graph(graphs: Any, name: str, source: str) -> GraphSpec:
    g = graphs.get(name) if isinstance(graphs, dict) else None
    if not isinstance(g, dict) or "file" not in g:
        raise BundleError(f"{source}: missing required key 'graphs.{name}.file'")
    def specs(key: str) -> tuple[TensorSpec, ...]:
        try:
            return tuple(TensorSpec(s["name"], tuple(int(x) for x in s["shape"]), s["dtype"]) for s in g[key])
        except (KeyError, TypeError, ValueError):
            raise BundleError(f"{source}: graphs.{name}.{key} must be a list of {{name, shape, dtype}}") from None
    return GraphSpec(g["file"], specs("inputs"), specs("outputs"))
