"""Build calibration sets from the daemon's recordings, from a folder of images with a table, or generated.

- Recording (the daemon's recorder dump): ``observations.npz`` with ``time`` [N] float64, ``proprio`` [N, P]
  float32, ``view_mask`` [N, 3] bool and ``image_<k>`` [N, H, W, 3] uint8 per recorded slot k; ``meta.json``
  with ``instruction``, ``domain_id``, ``bundle``, ``reason``, ``created``.
- Folder: image files (anything Pillow reads, converted to RGB) and a table, JSON or CSV:

  - JSON: a list of observations, or ``{"domain_id": D, "observations": [...]}``; an observation is
    ``{"images": ["cam0/001.png", null, "cam2/001.png"], "instruction": "...", "proprio": [...],
    "domain_id": D (optional), "seed": S (optional)}``.
  - CSV: columns ``image_0`` .. ``image_2`` (any of them; an empty cell is an absent view), ``instruction``,
    ``proprio_0`` .. ``proprio_<P-1>``, optional ``domain_id`` and ``seed``.

  Image paths are relative to the folder. One camera per slot: every image of a slot has one size.
- Synthetic: for tests and robots that have not run yet. The images are hand-made (smooth colour fields with
  a few rectangles, i.e. image-like statistics rather than white noise); no robot data stands behind them.

Long sources are thinned to ``limit`` evenly spaced observations. Observations without a seed get
``seed + i``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from calibration.errors import CalibrationError
from calibration.sets import CalibrationSet
from runtime.manifest import Manifest
from xvla.constants import NUM_VIEWS

RECORDING_FILE = "observations.npz"
RECORDING_META = "meta.json"
SYNTHETIC_INSTRUCTIONS = (
    "pick up the cup and place it on the plate", "open the drawer", "push the block to the left",
    "put the sponge in the bowl", "close the lid", "stack the red block on the blue block",
)


def evenly(n: int, limit: int | None) -> np.ndarray:
    """Indices of at most ``limit`` evenly spaced items out of ``n`` (all of them when ``limit`` is None)."""
    if limit is not None and limit < 1:
        raise CalibrationError(f"--max {limit}: expected a positive number of observations")
    if limit is None or limit >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


# -- the daemon's recordings -----------------------------------------------------------------------
def from_recording(directory: str | Path, *, limit: int | None = None, seed: int = 0) -> CalibrationSet:
    """A set from a recorder dump directory (``observations.npz`` + ``meta.json``)."""
    directory = Path(directory)
    npz_path, meta_path = directory / RECORDING_FILE, directory / RECORDING_META
    for path in (npz_path, meta_path):
        if not path.is_file():
            raise CalibrationError(f"{path}: not found (a recording directory holds {RECORDING_FILE} and "
                                   f"{RECORDING_META})")
    meta = _read_json(meta_path)
    if not isinstance(meta, dict):
        raise CalibrationError(f"{meta_path}: expected a JSON object")
    for key, kind in (("instruction", str), ("domain_id", int)):
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise CalibrationError(f"{meta_path}: {key} is {meta.get(key)!r}; expected a {kind.__name__}")
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
    except (OSError, ValueError) as e:  # a truncated or corrupt zip, or a pickled array
        raise CalibrationError(f"{npz_path}: not a readable .npz archive ({e})") from None
    for key, what in (("proprio", "[N, P] float32"), ("view_mask", f"[N, {NUM_VIEWS}] bool")):
        if key not in arrays:
            raise CalibrationError(f"{npz_path}: missing key {key!r} (expected {what})")
    n = len(arrays["view_mask"])
    for key, arr in arrays.items():
        if arr.ndim == 0 or len(arr) != n:
            raise CalibrationError(f"{npz_path}: key {key!r} has shape {arr.shape}; expected {n} rows like view_mask")
    idx = evenly(n, limit)
    proprio = arrays["proprio"]
    if np.issubdtype(proprio.dtype, np.floating):
        proprio = proprio.astype(np.float32)
    times = arrays.get("time")
    source = {"kind": "recording", "path": str(directory.resolve()), "frames": n, "selected": int(idx.size),
              **{k: meta.get(k) for k in ("bundle", "reason", "created")}}
    if times is not None and times.size:
        source["time_span_s"] = float(times[-1] - times[0])
    per_observation = arrays.get("instruction")  # recordings since the operator could change the task
    if per_observation is not None and per_observation.dtype.kind != "U":
        raise CalibrationError(f"{npz_path}: key 'instruction' has dtype {per_observation.dtype}; expected str")
    return CalibrationSet(
        images={k: arrays[f"image_{k}"][idx] for k in range(NUM_VIEWS) if f"image_{k}" in arrays},
        view_mask=arrays["view_mask"][idx], proprio=proprio[idx],
        instructions=(tuple(str(t) for t in per_observation[idx]) if per_observation is not None
                      else (meta["instruction"],) * idx.size), domain_ids=np.full(idx.size, meta["domain_id"], np.int64),
        seeds=seed + np.arange(idx.size, dtype=np.int64), source=source, where=str(npz_path))


# -- a folder of images and a table ------------------------------------------------------------------
@dataclass(frozen=True)
class _Row:
    label: str  # "table.csv line 3" — where the row came from, for errors
    images: tuple[str | None, ...]
    instruction: str
    proprio: tuple[float, ...]
    domain_id: int | None
    seed: int | None


def from_folder(directory: str | Path, table: str | Path, *, domain_id: int | None = None,
                limit: int | None = None, seed: int = 0) -> CalibrationSet:
    """A set from image files under ``directory`` listed, with proprio and instructions, in ``table``."""
    directory, table = Path(directory), Path(table)
    if not directory.is_dir():
        raise CalibrationError(f"{directory}: not a directory")
    rows = _read_table(table)
    if not rows:
        raise CalibrationError(f"{table}: holds no observations")
    rows = [rows[i] for i in evenly(len(rows), limit)]
    dim = len(rows[0].proprio)
    for row in rows:
        if len(row.proprio) != dim:
            raise CalibrationError(f"{row.label}: {len(row.proprio)} proprio values; expected {dim} like "
                                   f"{rows[0].label}")
        if row.domain_id is None and domain_id is None:
            raise CalibrationError(f"{row.label}: no domain_id (add a domain_id column/key or pass --domain-id)")
    slots: dict[int, list[np.ndarray | None]] = {}
    first: dict[int, tuple[Path, tuple[int, ...]]] = {}
    for i, row in enumerate(rows):
        for k, name in enumerate(row.images):
            if name is None:
                continue
            img = _read_image(directory / name, row.label)
            if k not in first:
                first[k] = (directory / name, img.shape)
            elif img.shape != first[k][1]:
                raise CalibrationError(f"{directory / name} ({row.label}): {img.shape[0]}x{img.shape[1]} image in view "
                                       f"slot {k}; expected {first[k][1][0]}x{first[k][1][1]} like {first[k][0]} "
                                       "(one camera, one size per slot)")
            slots.setdefault(k, [None] * len(rows))[i] = img
    mask = np.zeros((len(rows), NUM_VIEWS), bool)
    images = {}
    for k, column in slots.items():
        shape = first[k][1]
        images[k] = np.stack([np.zeros(shape, np.uint8) if img is None else img for img in column])
        mask[:, k] = [img is not None for img in column]
    return CalibrationSet(
        images=images, view_mask=mask, proprio=np.asarray([r.proprio for r in rows], np.float32),
        instructions=tuple(r.instruction for r in rows),
        domain_ids=np.asarray([domain_id if r.domain_id is None else r.domain_id for r in rows], np.int64),
        seeds=np.asarray([seed + i if r.seed is None else r.seed for i, r in enumerate(rows)], np.int64),
        source={"kind": "folder", "path": str(directory.resolve()), "table": str(table.resolve()),
                "rows": len(rows)},
        where=str(table))


def _read_image(path: Path, label: str) -> np.ndarray:
    if not path.is_file():
        raise CalibrationError(f"{path}: image listed in {label} not found")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as e:
        raise CalibrationError(f"{path}: not a readable image ({e})") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON or not UTF-8
        raise CalibrationError(f"{path}: not valid JSON ({e})") from None


def _read_table(table: Path) -> list[_Row]:
    if not table.is_file():
        raise CalibrationError(f"{table}: table not found")
    suffix = table.suffix.lower()
    if suffix == ".json":
        return _json_rows(table)
    if suffix == ".csv":
        return _csv_rows(table)
    raise CalibrationError(f"{table}: unknown table format {suffix!r}; expected .json or .csv")


def _json_rows(table: Path) -> list[_Row]:
    d = _read_json(table)
    default_domain = None
    if isinstance(d, dict):
        default_domain, d = d.get("domain_id"), d.get("observations")
    if not isinstance(d, list):
        raise CalibrationError(f"{table}: expected a list of observations or {{'observations': [...]}}")
    rows = []
    for i, obs in enumerate(d):
        label = f"{table} observations[{i}]"
        if not isinstance(obs, dict):
            raise CalibrationError(f"{label}: expected an object with images, instruction, proprio")
        images = obs.get("images")
        if not isinstance(images, list) or not 1 <= len(images) <= NUM_VIEWS or \
                not all(x is None or isinstance(x, str) for x in images):
            raise CalibrationError(f"{label}: images is {images!r}; expected a list of 1..{NUM_VIEWS} paths or null")
        rows.append(_row(label, images, obs.get("instruction"), obs.get("proprio"),
                         obs.get("domain_id", default_domain), obs.get("seed")))
    return rows


def _csv_rows(table: Path) -> list[_Row]:
    try:
        with open(table, newline="") as f:
            records = list(csv.DictReader(f))
            columns = list(records[0]) if records else []
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CalibrationError(f"{table}: not a readable CSV file ({e})") from None
    image_cols = [f"image_{k}" for k in range(NUM_VIEWS) if f"image_{k}" in columns]
    proprio_cols = []
    while f"proprio_{len(proprio_cols)}" in columns:
        proprio_cols.append(f"proprio_{len(proprio_cols)}")
    missing = [c for c, ok in (("image_0..image_2", image_cols), ("instruction", "instruction" in columns),
                               ("proprio_0", proprio_cols)) if not ok]
    if records and missing:
        raise CalibrationError(f"{table}: missing column(s) {missing}; columns are {columns}")
    rows = []
    for line, rec in enumerate(records, start=2):
        label = f"{table} line {line}"
        images = [rec.get(f"image_{k}") or None for k in range(NUM_VIEWS)]
        while images and images[-1] is None:
            images.pop()
        try:
            proprio = [float(rec[c]) for c in proprio_cols]
        except (TypeError, ValueError):
            raise CalibrationError(f"{label}: proprio columns {proprio_cols} must all hold numbers") from None
        optional = {}
        for key in ("domain_id", "seed"):
            text = (rec.get(key) or "").strip()
            try:
                optional[key] = int(text) if text else None
            except ValueError:
                raise CalibrationError(f"{label}: {key} is {text!r}; expected an integer") from None
        rows.append(_row(label, images, rec.get("instruction"), proprio, optional["domain_id"], optional["seed"]))
    return rows


def _row(label: str, images: list, instruction: Any, proprio: Any, domain_id: Any, seed: Any) -> _Row:
    if not any(images):
        raise CalibrationError(f"{label}: no image (at least one view must be present)")
    if not isinstance(instruction, str):
        raise CalibrationError(f"{label}: instruction is {instruction!r}; expected a string")
    if not isinstance(proprio, list) or not proprio or \
            not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in proprio):
        raise CalibrationError(f"{label}: proprio is {proprio!r}; expected a non-empty list of numbers")
    for key, value in (("domain_id", domain_id), ("seed", seed)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise CalibrationError(f"{label}: {key} is {value!r}; expected a non-negative integer")
    return _Row(label, tuple(images), instruction, tuple(float(x) for x in proprio), domain_id, seed)


# -- generated -------------------------------------------------------------------------------------------
def synthetic(manifest: Manifest, count: int, *, seed: int = 0) -> CalibrationSet:
    """``count`` generated observations shaped for the bundle ``manifest`` describes (its views, image size,
    proprio length and domain)."""
    if count < 1:
        raise CalibrationError(f"--synthetic {count}: expected a positive number of observations")
    rng = np.random.default_rng(seed)
    inputs = manifest.inputs
    views, size, dim = int(inputs["views"]), int(inputs["image_size"]), int(inputs["proprio_dim"])
    mask = np.zeros((count, NUM_VIEWS), bool)
    mask[:, :views] = True
    return CalibrationSet(
        images={k: np.stack([_scene(rng, size, size) for _ in range(count)]) for k in range(views)},
        view_mask=mask, proprio=rng.normal(0.0, 0.3, (count, dim)).astype(np.float32),
        instructions=tuple(SYNTHETIC_INSTRUCTIONS[i % len(SYNTHETIC_INSTRUCTIONS)] for i in range(count)),
        domain_ids=np.full(count, manifest.domain_id, np.int64), seeds=seed + np.arange(count, dtype=np.int64),
        source={"kind": "synthetic", "seed": seed, "bundle_embodiment": manifest.embodiment})


def _scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth colour field, a few solid rectangles and mild sensor noise."""
    coarse = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    img = np.asarray(coarse.resize((width, height), Image.BILINEAR)).astype(np.int16)
    for _ in range(rng.integers(1, 4)):
        y0, x0 = rng.integers(0, height), rng.integers(0, width)
        h, w = rng.integers(height // 8 + 1, height // 3 + 2), rng.integers(width // 8 + 1, width // 3 + 2)
        img[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, 3)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
