"""Validation of ``manifest.json``: a bundle is a file from outside, so every field is checked before use.

Each problem names the field, its value and what is allowed, all problems together, e.g.
``manifest.json: action.chunk_seconds = nan: expected a finite number of seconds in (0, 600]``. Beyond
types and ranges, fields are checked against each other: tensor shapes against the sizes they must agree
with, graph files against the ``files`` inventory, file names are plain names. The bounds:

| field | allowed |
|---|---|
| ``embodiment`` | a plain name: letters, digits, ``.``, ``_``, ``-``; 1–64 characters, not starting with ``.`` |
| ``domain_id`` | integer 0 … 1023 |
| ``action.mode`` / ``rot6d_layout`` / ``arms`` | an X-VLA action mode / ``rows`` or ``columns`` / 1 or 2 |
| ``action.dim``, ``output_dim`` | the mode's width (ee6d 20, joint 14, agibot_ee6d 20; auto 1 … 256), 1 ≤ output_dim ≤ dim |
| ``action.chunk_length`` / ``chunk_seconds`` | integer 1 … 1024 / finite seconds in (0, 600] |
| ``action.gripper_channels`` | exactly the action mode's gripper channels |
| ``sampler.default_steps`` | integer 1 … :data:`MAX_STEPS` |
| ``inputs`` | ``token_length`` 1 … 1024, ``image_size`` 16 … 2048, ``view_slots`` 1 … 3 (3 for official checkpoints; LeRobot's ``num_image_views``), ``views`` 1 … ``view_slots``, ``proprio_dim`` 1 … 1024 (``action.dim``, or wider: LeRobot's ``max_state_dim``; above the gripper channels), optional ``state_dim`` 1 … ``proprio_dim`` − 1 (the robot's state, zero-padded to ``proprio_dim``) |
| ``precision`` | ``fp32``, ``fp16`` or ``int8`` |
| ``batch_sizes`` | optional: 1 … :data:`MAX_BATCH` increasing, starting with 1, at most :data:`MAX_BATCH_SIZES` of them |
| ``graphs.*`` | a ``file`` listed in ``files``; the tensors the runtime binds, with the shapes the fields above imply (dimension 0 ``"batch"`` for every tensor but ``t`` when ``batch_sizes`` is given) and at most :data:`MAX_TENSOR_ELEMENTS` elements each at the largest batch size |
| ``files`` | plain names (no ``/``, no ``..``, not ``manifest.json``) → ``sha256`` (64 hex digits) and ``bytes`` (integer ≥ 0) |
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping

from xvla.config import FIXED_ACTION_DIMS
from xvla.constants import GRIPPER_CHANNELS, MAX_STEPS, NUM_VIEWS

MAX_BATCH = 64
MAX_BATCH_SIZES = 16
BATCH_DIM = "batch"  # dimension 0 of a batched bundle's tensors (the ONNX graphs' symbolic dimension)
MAX_TENSOR_ELEMENTS = 1 << 26  # 64 Mi elements (256 MB of fp32): far above any X-VLA tensor, far below a memory bomb
PRECISIONS = ("fp32", "fp16", "int8")
DTYPES = ("float32", "float16", "int64", "int32", "bool")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")

# graph → (inputs, outputs) the runtime binds by name
GRAPH_TENSORS = {
    "encoder": (("pixel_values", "image_mask", "input_ids"), ("context",)),
    "denoise": (("context", "x1", "prev", "proprio", "t"), ("x0", "action")),
}


def is_plain_name(name: Any) -> bool:
    """A file or directory name that stays where it is put: no separators, no ``..``, not hidden."""
    return isinstance(name, str) and _PLAIN_NAME.fullmatch(name) is not None and ".." not in name


def problems(d: Any, manifest_file: str) -> list[str]:
    """Every problem of the parsed ``manifest.json`` ``d`` (empty: valid)."""
    check = _Checker()
    if not isinstance(d, dict):
        return ["expected a JSON object"]
    check.value(d, "embodiment", is_plain_name, "a plain name (letters, digits, '.', '_', '-'; 1-64 characters)")
    check.value(d, "domain_id", lambda v: _int(v, 0, 1023), "an integer 0 ... 1023")
    check.value(d, "precision", lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}")
    action = check.table(d, "action")
    mode = check.value(action, "mode", lambda v: v in GRIPPER_CHANNELS, f"one of {', '.join(GRIPPER_CHANNELS)}",
                       "action.")
    fixed = FIXED_ACTION_DIMS.get(mode)
    dim = check.value(action, "dim", lambda v: _int(v, 1, 256) and v == (fixed or v),
                      f"{fixed} (the width of mode {mode!r})" if fixed else "an integer 1 ... 256", "action.")
    check.value(action, "output_dim", lambda v: _int(v, 1, dim if _int(dim, 1, 256) else 256),
                f"an integer 1 ... action.dim ({dim})", "action.")
    length = check.value(action, "chunk_length", lambda v: _int(v, 1, 1024), "an integer 1 ... 1024", "action.")
    check.value(action, "chunk_seconds", lambda v: _number(v) and math.isfinite(v) and 0 < v <= 600,
                "a finite number of seconds in (0, 600]", "action.")
    if mode in GRIPPER_CHANNELS:
        check.value(action, "gripper_channels", lambda v: v == list(GRIPPER_CHANNELS[mode]),
                    f"{list(GRIPPER_CHANNELS[mode])} (the gripper channels of mode {mode!r})", "action.")
    check.value(action, "rot6d_layout", lambda v: v in ("rows", "columns"), "'rows' or 'columns'", "action.")
    check.value(action, "arms", lambda v: v in (1, 2) and not isinstance(v, bool), "1 or 2", "action.")
    sampler = check.table(d, "sampler")
    check.value(sampler, "default_steps", lambda v: _int(v, 1, MAX_STEPS), f"an integer 1 ... {MAX_STEPS}", "sampler.")
    inputs = check.table(d, "inputs")
    tokens = check.value(inputs, "token_length", lambda v: _int(v, 1, 1024), "an integer 1 ... 1024", "inputs.")
    size = check.value(inputs, "image_size", lambda v: _int(v, 16, 2048), "an integer 16 ... 2048 (pixels)", "inputs.")
    slots = check.value(inputs, "view_slots", lambda v: _int(v, 1, NUM_VIEWS),
                        f"an integer 1 ... {NUM_VIEWS} ({NUM_VIEWS} for official checkpoints)", "inputs.")
    top = slots if _int(slots, 1, NUM_VIEWS) else NUM_VIEWS
    views = check.value(inputs, "views", lambda v: _int(v, 1, top), f"an integer 1 ... inputs.view_slots ({top})",
                        "inputs.")
    grippers = GRIPPER_CHANNELS.get(mode, ()) if isinstance(mode, str) else ()
    least = max(grippers, default=-1) + 1
    proprio = check.value(inputs, "proprio_dim", lambda v: _int(v, max(least, 1), 1024),
                          f"an integer {max(least, 1)} ... 1024 (the action width, {dim}, unless the checkpoint's "
                          "proprio is wider: LeRobot's max_state_dim)", "inputs.")
    if "state_dim" in inputs:  # optional: the robot's state is narrower and zero-padded to proprio_dim
        top = proprio - 1 if _int(proprio, 2, 1024) else 1
        check.value(inputs, "state_dim", lambda v: _int(v, 1, top),
                    f"an integer 1 ... {top} (narrower than inputs.proprio_dim)", "inputs.")
    batched = "batch_sizes" in d
    sizes = check.value(d, "batch_sizes", _batch_sizes, f"a list of 1 ... {MAX_BATCH} sizes, increasing, starting with "
                        f"1, at most {MAX_BATCH_SIZES} of them") if batched else [1]
    files = _files(check, d.get("files"), manifest_file)
    if check.found:  # the shapes below are built from the fields above
        return check.found
    b = BATCH_DIM if batched else 1
    shapes = {"pixel_values": [b, views, 3, size, size], "image_mask": [b, views], "input_ids": [b, tokens],
              "x1": [b, length, dim], "prev": [b, length, dim], "x0": [b, length, dim], "proprio": [b, proprio], "t": [1],
              "action": [b, length, action["output_dim"]]}
    graphs = check.table(d, "graphs")
    for graph, (ins, outs) in GRAPH_TENSORS.items():
        _graph(check, graphs.get(graph), f"graphs.{graph}", ins, outs, shapes, files, b, sizes[-1])
    if not check.found and graphs["encoder"]["outputs"][0]["shape"] != _context_shape(graphs["denoise"]):
        check.found.append(f"graphs.denoise.inputs context has shape {_context_shape(graphs['denoise'])}; the "
                           f"encoder's context output has {graphs['encoder']['outputs'][0]['shape']}")
    return check.found


class _Checker:
    """Collects problems; each lookup returns the value (or None when missing or wrong)."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def table(self, d: Mapping[str, Any], key: str) -> dict[str, Any]:
        value = d.get(key)
        if not isinstance(value, dict):
            self.found.append(f"{key} = {_show(value)}: expected an object" if key in d else f"{key}: missing")
            return {}
        return value

    def value(self, d: Mapping[str, Any], key: str, ok: Callable[[Any], bool], expected: str, where: str = "") -> Any:
        if key not in d:
            self.found.append(f"{where}{key}: missing (expected {expected})")
            return None
        if not ok(d[key]):
            self.found.append(f"{where}{key} = {_show(d[key])}: expected {expected}")
            return None
        return d[key]


def _files(check: _Checker, files: Any, manifest_file: str) -> dict[str, Any]:
    if not isinstance(files, dict) or not files:
        check.found.append(f"files = {_show(files)}: expected an object listing every file of the bundle")
        return {}
    for name, entry in files.items():
        if not is_plain_name(name) or name == manifest_file:
            check.found.append(f"files: {_show(name)} is not a plain file name of the bundle")
        elif not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and _SHA256.fullmatch(entry["sha256"])
                  and _int(entry.get("bytes"), 0, 1 << 50)):
            check.found.append(f"files.{name} = {_show(entry)}: expected {{\"sha256\": 64 hex digits, \"bytes\": integer >= 0}}")
    return files


def _graph(check: _Checker, g: Any, where: str, ins: tuple[str, ...], outs: tuple[str, ...],
           shapes: dict[str, list[Any]], files: dict[str, Any], lead: Any, largest: int) -> None:
    if not isinstance(g, dict):
        check.found.append(f"{where} = {_show(g)}: expected an object with file, inputs, outputs")
        return
    if g.get("file") not in files or not is_plain_name(g.get("file")):
        check.found.append(f"{where}.file = {_show(g.get('file'))}: expected a file listed in files")
    for key, names in (("inputs", ins), ("outputs", outs)):
        tensors = g.get(key)
        if not isinstance(tensors, list) or not all(isinstance(t, dict) for t in tensors):
            check.found.append(f"{where}.{key} = {_show(tensors)}: expected a list of {{name, shape, dtype}}")
            continue
        declared = [t.get("name") for t in tensors]
        if sorted(map(str, declared)) != sorted(names):
            check.found.append(f"{where}.{key} names {declared}: expected exactly {list(names)}")
            continue
        for t in tensors:
            name, shape = t["name"], t.get("shape")
            if t.get("dtype") not in DTYPES:
                check.found.append(f"{where}.{key} {name} dtype = {_show(t.get('dtype'))}: expected one of {', '.join(DTYPES)}")
            if not (isinstance(shape, list) and shape and all(_int(n, 1, MAX_TENSOR_ELEMENTS) or (i == 0 and lead == n == BATCH_DIM)
                                                               for i, n in enumerate(shape))
                    and math.prod(largest if n == BATCH_DIM else n for n in shape) <= MAX_TENSOR_ELEMENTS):
                check.found.append(f"{where}.{key} {name} shape = {_show(shape)}: expected positive integer "
                                   f"dimensions{' (the first ' + repr(BATCH_DIM) + ')' if lead == BATCH_DIM else ''}, "
                                   f"at most {MAX_TENSOR_ELEMENTS} elements")
            elif name in shapes and shape != shapes[name]:
                check.found.append(f"{where}.{key} {name} shape = {shape}: expected {shapes[name]} (from action and inputs)")
            elif name == "context" and (len(shape) != 3 or shape[0] != lead):
                check.found.append(f"{where}.{key} context shape = {shape}: expected [{lead!r}, tokens, width]")


def _context_shape(denoise: dict[str, Any]) -> Any:
    return next(t["shape"] for t in denoise["inputs"] if t["name"] == "context")


def _batch_sizes(v: Any) -> bool:
    return (isinstance(v, list) and 1 <= len(v) <= MAX_BATCH_SIZES and all(_int(n, 1, MAX_BATCH) for n in v)
            and v[0] == 1 and all(a < b for a, b in zip(v, v[1:])))


def _int(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
