"""Calibration sets: a few hundred observations of one robot, stored as a directory beside its bundle.

| file | content |
|---|---|
| ``calibration.json`` | the index: ``format``, ``version``, ``created``, provenance (``source``), ``count`` N, ``proprio_dim`` P, ``views`` (the slots stored, each with its image ``height`` and ``width``), per-observation ``instructions`` and ``domain_ids``, and ``files``: ``sha256`` and ``bytes`` of every array file |
| ``image_<k>.npy`` | [N, H, W, 3] uint8 RGB of view slot k (only the slots that hold images) |
| ``view_mask.npy`` | [N, 3] bool: slot k is present in observation i |
| ``proprio.npy`` | [N, P] float32 |
| ``seeds.npy`` (optional) | [N] int64: observation i's initial noise is ``numpy.random.default_rng(seed).standard_normal((chunk_length, dim), float32)``; without the file the seed is i |

:func:`load_set` checks every file against the index (present, size, sha256, then shape and dtype against
what the index declares) and :meth:`CalibrationSet.check_bundle` checks a set against a bundle (proprio
length, domain id, views). Errors name the file, key or value and what was expected.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibration.errors import CalibrationError
from runtime.manifest import Manifest
from runtime.types import Observation
from xvla.constants import NUM_VIEWS
from xvla.files import atomic_directory, file_entry, file_problem, sha256_file

INDEX_FILE = "calibration.json"
FORMAT = "xvla-edge calibration set"
VERSION = 1


@dataclass(frozen=True, eq=False)
class CalibrationSet:
    """N observations; validated on construction (``where`` names the set in errors)."""

    images: dict[int, np.ndarray]  # slot → [N, H, W, 3] uint8
    view_mask: np.ndarray  # [N, 3] bool
    proprio: np.ndarray  # [N, P] float32
    instructions: tuple[str, ...]
    domain_ids: np.ndarray  # [N] int64
    seeds: np.ndarray | None = None  # [N] int64
    source: dict[str, Any] = field(default_factory=dict)
    where: str = "calibration set"

    def __post_init__(self) -> None:
        _validate(self)

    def __len__(self) -> int:
        return int(self.view_mask.shape[0])

    @property
    def proprio_dim(self) -> int:
        return int(self.proprio.shape[1])

    def noise(self, i: int, shape: tuple[int, ...]) -> np.ndarray:
        """Observation ``i``'s initial noise x1 (the same for every model that is compared on it)."""
        seed = int(self.seeds[i]) if self.seeds is not None else i
        return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)

    def observation(self, i: int, noise_shape: tuple[int, ...]) -> Observation:
        images = [self.images[k][i] if self.view_mask[i, k] else None for k in range(NUM_VIEWS)]
        return Observation(images=images, instruction=self.instructions[i], proprio=np.array(self.proprio[i]),
                           noise=self.noise(i, noise_shape))

    def check_bundle(self, manifest: Manifest, bundle: str | Path) -> None:
        """Refuse a set that does not fit the bundle (proprio length, domain, views beyond the exported ones)."""
        inputs = manifest.inputs
        if self.proprio_dim != int(inputs["proprio_dim"]):
            raise CalibrationError(f"{self.where}: proprio has {self.proprio_dim} values per observation; bundle "
                                   f"{bundle} expects {inputs['proprio_dim']} (manifest inputs.proprio_dim)")
        wrong = np.flatnonzero(self.domain_ids != manifest.domain_id)
        if wrong.size:
            i = int(wrong[0])
            raise CalibrationError(f"{self.where}: observation {i} has domain_id {int(self.domain_ids[i])}; bundle "
                                   f"{bundle} was exported for domain {manifest.domain_id} ({wrong.size} of "
                                   f"{len(self)} observations differ)")
        views = int(inputs["views"])
        extra = [k for k in range(views, NUM_VIEWS) if self.view_mask[:, k].any()]
        if extra:
            i = int(np.flatnonzero(self.view_mask[:, extra[0]])[0])
            raise CalibrationError(f"{self.where}: observation {i} has an image in view slot {extra[0]}; bundle "
                                   f"{bundle} was exported for {views} view(s) (slots 0..{views - 1})")

    def describe(self) -> str:
        sizes = ", ".join(f"slot {k} {a.shape[1]}x{a.shape[2]}" for k, a in sorted(self.images.items()))
        return (f"{len(self)} observations ({sizes}; proprio {self.proprio_dim}; domain(s) "
                f"{sorted({int(d) for d in self.domain_ids})}; {len(set(self.instructions))} distinct instruction(s))")


def _validate(s: CalibrationSet) -> None:
    w = s.where
    mask = s.view_mask
    if not isinstance(mask, np.ndarray) or mask.dtype != bool or mask.ndim != 2 or mask.shape[1] != NUM_VIEWS:
        raise CalibrationError(f"{w}: view_mask must be a [N, {NUM_VIEWS}] bool array, got "
                               f"{getattr(mask, 'shape', type(mask).__name__)} {getattr(mask, 'dtype', '')}")
    n = mask.shape[0]
    if n < 1:
        raise CalibrationError(f"{w}: holds no observations")
    for k, img in s.images.items():
        if k not in range(NUM_VIEWS):
            raise CalibrationError(f"{w}: image slot {k!r}; expected one of 0..{NUM_VIEWS - 1}")
        if img.dtype != np.uint8 or img.ndim != 4 or img.shape[0] != n or img.shape[3] != 3 or 0 in img.shape:
            raise CalibrationError(f"{w}: image_{k} must be [{n}, H, W, 3] uint8, got {img.shape} {img.dtype}")
    for k in range(NUM_VIEWS):
        if mask[:, k].any() and k not in s.images:
            i = int(np.flatnonzero(mask[:, k])[0])
            raise CalibrationError(f"{w}: view_mask marks slot {k} present in observation {i} but there is no "
                                   f"image_{k}")
    empty = np.flatnonzero(~mask.any(axis=1))
    if empty.size:
        raise CalibrationError(f"{w}: observation {int(empty[0])} has no view (view_mask all False)")
    p = s.proprio
    if p.dtype != np.float32 or p.ndim != 2 or p.shape[0] != n or p.shape[1] < 1:
        raise CalibrationError(f"{w}: proprio must be [{n}, P] float32, got {p.shape} {p.dtype}")
    bad = np.flatnonzero(~np.isfinite(p).all(axis=1))
    if bad.size:
        raise CalibrationError(f"{w}: proprio of observation {int(bad[0])} contains NaN or Inf")
    if len(s.instructions) != n or not all(isinstance(t, str) for t in s.instructions):
        raise CalibrationError(f"{w}: expected {n} instruction strings, got {len(s.instructions)}")
    for name, arr in (("domain_ids", s.domain_ids), ("seeds", s.seeds)):
        if arr is None:
            continue
        if arr.dtype != np.int64 or arr.shape != (n,):
            raise CalibrationError(f"{w}: {name} must be [{n}] int64, got {arr.shape} {arr.dtype}")
        if (arr < 0).any():
            i = int(np.flatnonzero(arr < 0)[0])
            raise CalibrationError(f"{w}: {name}[{i}] is {int(arr[i])}; expected a non-negative integer")


# -- on disk ---------------------------------------------------------------------------------------
def _arrays(s: CalibrationSet) -> dict[str, np.ndarray]:
    out = {f"image_{k}": img for k, img in sorted(s.images.items())}
    out.update(view_mask=s.view_mask, proprio=s.proprio)
    if s.seeds is not None:
        out["seeds"] = s.seeds
    return out


def write_set(s: CalibrationSet, out: str | Path, *, force: bool = False) -> Path:
    """Write ``s`` as the set directory ``out`` (atomically; ``force`` replaces an existing one)."""
    out = Path(out)
    with atomic_directory(out, force=force) as tmp:
        files = {}
        for name, arr in _arrays(s).items():
            path = tmp / f"{name}.npy"
            np.save(path, np.ascontiguousarray(arr), allow_pickle=False)
            files[path.name] = file_entry(path)
        index = {
            "format": FORMAT, "version": VERSION,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "source": s.source, "count": len(s), "proprio_dim": s.proprio_dim,
            "views": [{"slot": k, "height": int(img.shape[1]), "width": int(img.shape[2])}
                      for k, img in sorted(s.images.items())],
            "instructions": list(s.instructions), "domain_ids": [int(d) for d in s.domain_ids],
            "files": files,
        }
        (tmp / INDEX_FILE).write_text(json.dumps(index, indent=1))
    return out


def load_set(path: str | Path) -> CalibrationSet:
    """Read and check a set directory (see the module docstring for what is checked)."""
    path = Path(path)
    index_path = path / INDEX_FILE
    if not index_path.is_file():
        raise CalibrationError(f"{index_path}: not found (is {path} a calibration set made by "
                               "`xvla-edge calibrate capture`?)")
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON or not UTF-8
        raise CalibrationError(f"{index_path}: not valid JSON ({e})") from None
    if not isinstance(index, dict):
        raise CalibrationError(f"{index_path}: expected a JSON object")
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise CalibrationError(f"{index_path}: format {index.get('format')!r} version {index.get('version')!r}; "
                               f"expected {FORMAT!r} version {VERSION}")
    for key in ("count", "proprio_dim", "views", "instructions", "domain_ids", "files"):
        if key not in index:
            raise CalibrationError(f"{index_path}: missing required key {key!r}")
    for key, kind in (("views", list), ("instructions", list), ("domain_ids", list), ("files", dict)):
        if not isinstance(index[key], kind):
            raise CalibrationError(f"{index_path}: {key} must be a JSON {'array' if kind is list else 'object'}")
    n, dim = index["count"], index["proprio_dim"]
    for key, value in (("count", n), ("proprio_dim", dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CalibrationError(f"{index_path}: {key} is {value!r}; expected a positive integer")
    expected: dict[str, tuple[tuple[int, ...], str, str]] = {
        "view_mask": ((n, NUM_VIEWS), "bool", f"count {n}"),
        "proprio": ((n, dim), "float32", f"count {n} and proprio_dim {dim}"),
    }
    for v in index["views"]:
        try:
            k, h, w = int(v["slot"]), int(v["height"]), int(v["width"])
        except (KeyError, TypeError, ValueError):
            raise CalibrationError(f"{index_path}: views entry {v!r}; expected {{slot, height, width}}") from None
        expected[f"image_{k}"] = ((n, h, w, 3), "uint8", f"count {n} and views[slot {k}] {h}x{w}")
    if "seeds.npy" in index["files"]:
        expected["seeds"] = ((n,), "int64", f"count {n}")
    arrays = {name: _read_array(path, index, name, *spec) for name, spec in expected.items()}
    try:
        domain_ids = np.asarray(index["domain_ids"], dtype=np.int64)
    except (TypeError, ValueError):
        raise CalibrationError(f"{index_path}: domain_ids must be a list of integers") from None
    return CalibrationSet(
        images={int(name[6:]): a for name, a in arrays.items() if name.startswith("image_")},
        view_mask=arrays["view_mask"], proprio=arrays["proprio"], instructions=tuple(index["instructions"]),
        domain_ids=domain_ids, seeds=arrays.get("seeds"),
        source={**index.get("source", {}), "set": str(path), "index_sha256": sha256_file(index_path)},
        where=str(path))


def _read_array(set_dir: Path, index: dict, name: str, shape: tuple[int, ...], dtype: str, declared: str) -> np.ndarray:
    file = f"{name}.npy"
    path = set_dir / file
    entry = index["files"].get(file)
    if not isinstance(entry, dict):
        raise CalibrationError(f"{set_dir / INDEX_FILE}: files has no entry for {file} (needed for {name})")
    problem = file_problem(path, entry, INDEX_FILE)
    if problem:
        raise CalibrationError(problem)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise CalibrationError(f"{path}: not a readable .npy array ({e})") from None
    if arr.shape != shape or arr.dtype != np.dtype(dtype):
        raise CalibrationError(f"{path}: shape {arr.shape} {arr.dtype}; {INDEX_FILE} declares {declared}, so "
                               f"expected {shape} {dtype}")
    return arr
