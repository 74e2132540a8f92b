"""Validation of ``manifest.json``: a bundle is a file from outside, so every field is checked before use.

Each problem names the field, its value and what is allowed, all problems together, e.g.
``manifest.json: action.chunk_seconds = nan: expected a finite number of seconds in (0, 600]``. Beyond
types and ranges, fields are checked against each other: tensor shapes against the sizes they must agree
with, graph files against the ``files`` inventory, file names are plain names. The bounds:

| field | allowed |
|---|---|
| ``embodiment`` | a plain name: letters, digits, ``.``, ``_``, ``-``; 1–64 characters, not starting with ``.`` |
| ``domain_id`` | integer 0 … 1023 (a robot's bundle: the domain folded in) |
| ``domains`` | a server bundle instead of ``domain_id``: 1 … :data:`MAX_DOMAINS` objects ``{domain_id, embodiment, chunk_seconds, arms}`` (each field as the single one of a robot's bundle), no domain id twice; ``action`` then has no ``chunk_seconds`` or ``arms``, and the denoise graph takes ``domain_id`` [batch] int64 |
| ``action.mode`` / ``rot6d_layout`` / ``arms`` | an X-VLA action mode / ``rows`` or ``columns`` / 1 or 2 |
| ``action.dim``, ``output_dim`` | the mode's width (ee6d 20, joint 14, agibot_ee6d 20; auto 1 … 256), 1 ≤ output_dim ≤ dim |
| ``action.chunk_length`` / ``chunk_seconds`` | integer 1 … 1024 / finite seconds in (0, 600] |
| ``action.gripper_channels`` | exactly the action mode's gripper channels |
| ``sampler.default_steps`` | integer 1 … :data:`MAX_STEPS` |
| ``inputs`` | ``token_length`` 1 … 1024, ``image_size`` 16 … 2048, ``view_slots`` 1 … 3 (3 for official checkpoints; LeRobot's ``num_image_views``), ``views`` 1 … ``view_slots``, ``proprio_dim`` 1 … 1024 (``action.dim``, or wider: LeRobot's ``max_state_dim``; above the gripper channels), optional ``state_dim`` 1 … ``proprio_dim`` − 1 (the robot's state, zero-padded to ``proprio_dim``) |
| ``precision`` | ``fp32``, ``fp16`` or ``int8`` |
| ``mixed_precision`` | optional, fp16 only: ``rule`` and ``search`` (null: the rule islands passed), each with ``nodes``: graph (``encoder``, ``denoise``) → the names of its nodes kept in fp32 |
| ``batch_sizes`` | optional: 1 … :data:`MAX_BATCH` increasing, starting with 1, at most :data:`MAX_BATCH_SIZES` of them |
| ``graphs.*`` | a ``file`` listed in ``files``; the tensors the runtime binds, with the shapes the fields above imply (dimension 0 ``"batch"`` for every tensor but ``t`` when ``batch_sizes`` is given) and at most :data:`MAX_TENSOR_ELEMENTS` elements each at the largest batch size; the denoise graph's inputs with both or neither of :data:`PREFIX_INPUTS` (float32 ``prefix`` [batch, chunk_length, dim], ``prefix_weights`` [batch, chunk_length]: a bundle that supports real-time chunking) |
| ``files`` | plain names (no ``/``, no ``..``, not ``manifest.json``) → ``sha256`` (64 hex digits) and ``bytes`` (integer ≥ 0) |
| ``source.lora`` | optional (a LoRA adapter was merged): ``name`` (its directory's name), ``path``, ``files`` (exactly ``adapter_config.json`` and ``adapter_model.safetensors``, each ``sha256`` and ``bytes``), ``r`` 1 … :data:`MAX_LORA_RANK`, ``lora_alpha`` finite and non-zero, ``target_modules`` (a non-empty list of names), ``modules_to_save`` (a list of names), ``layers`` (integer ≥ 0), ``base_model_name_or_path`` (a string or null) |
"""

from __future__ import annotations

import math
import re
from typing import Any

from xvla.config import FIXED_ACTION_DIMS
from xvla.constants import ADAPTER_CONFIG, ADAPTER_WEIGHTS, GRIPPER_CHANNELS, MAX_LORA_RANK, MAX_STEPS, NUM_VIEWS
from xvla.validation import Field, Problems, Table, one_of, show

MAX_BATCH = 64
MAX_DOMAINS = 1024  # domain ids are 0 ... 1023
MAX_BATCH_SIZES = 16
BATCH_DIM = "batch"  # dimension 0 of a batched bundle's tensors (the ONNX graphs' symbolic dimension)
MAX_TENSOR_ELEMENTS = 1 << 26  # 64 Mi elements (256 MB of fp32): far above any X-VLA tensor, far below a memory bomb
PRECISIONS = ("fp32", "fp16", "int8")
DTYPES = ("float32", "float16", "int64", "int32", "bool")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SIZE = Field(int, low=1, high=MAX_TENSOR_ELEMENTS)  # a tensor dimension
_BATCH = Field(int, low=1, high=MAX_BATCH)
_BYTES = Field(int, low=0, high=1 << 50)

# graph → (inputs, outputs) the runtime binds by name
GRAPH_TENSORS = {
    "encoder": (("pixel_values", "image_mask", "input_ids"), ("context",)),
    "denoise": (("context", "x1", "prev", "proprio", "t"), ("x0", "action")),
}
DOMAIN_INPUT = "domain_id"  # the server bundle's extra denoise input: each batch row's domain
#: real-time chunking's denoise inputs, both or neither (bundles exported before them have neither): the committed
#: prefix [batch, chunk_length, dim] and its row weights [batch, chunk_length], float32 (export/graphs.py)
PREFIX_INPUTS = ("prefix", "prefix_weights")
_DOMAIN = Field(int, low=0, high=MAX_DOMAINS - 1)


def is_plain_name(name: Any) -> bool:
    """A file or directory name that stays where it is put: no separators, no ``..``, not hidden."""
    return isinstance(name, str) and _PLAIN_NAME.fullmatch(name) is not None and ".." not in name


def problems(d: Any, manifest_file: str) -> list[str]:
    """Every problem of the parsed ``manifest.json`` ``d`` (empty: valid)."""
    if not isinstance(d, dict):
        return ["expected a JSON object"]
    found = Problems()
    root = Table(found, "", d)
    root.take("embodiment", str, required=True, check=is_plain_name,
              expected="a plain name (letters, digits, '.', '_', '-'; 1-64 characters)")
    server = "domains" in d
    if server:
        _domains(found, d["domains"])
        if "domain_id" in d:
            found.value("domain_id", d["domain_id"], "a server bundle names its domains in domains, not domain_id")
    else:
        root.field("domain_id", _DOMAIN, required=True)
    root.take("precision", str, required=True, choices=PRECISIONS)
    action = root.table("action", required=True, expected="an object")
    mode = action.take("mode", str, required=True, choices=tuple(GRIPPER_CHANNELS))
    fixed = FIXED_ACTION_DIMS.get(mode)
    dim = action.take("dim", int, required=True, low=1, high=256, check=lambda v: v == (fixed or v),
                      expected=f"{fixed} (the width of mode {show(mode)})" if fixed else "")
    action.take("output_dim", int, required=True, low=1, high=256 if dim is None else dim,
                expected=f"an integer 1 ... action.dim ({show(dim)})")
    length = action.take("chunk_length", int, required=True, low=1, high=1024)
    if not server:
        action.field("chunk_seconds", _SECONDS, required=True)
    if mode is not None:
        action.take("gripper_channels", list, required=True, check=lambda v: v == list(GRIPPER_CHANNELS[mode]),
                    expected=f"{list(GRIPPER_CHANNELS[mode])} (the gripper channels of mode {show(mode)})")
    action.take("rot6d_layout", str, required=True, choices=("rows", "columns"))
    if not server:
        action.field("arms", _ARMS, required=True)
    for key in ("chunk_seconds", "arms") if server else ():
        if key in action.data:
            found.value(f"action.{key}", action.data[key], "a server bundle gives it per domain, in domains")
    sampler = root.table("sampler", required=True, expected="an object")
    sampler.take("default_steps", int, required=True, low=1, high=MAX_STEPS)
    inputs = root.table("inputs", required=True, expected="an object")
    tokens = inputs.take("token_length", int, required=True, low=1, high=1024)
    size = inputs.take("image_size", int, required=True, low=16, high=2048, expected="an integer 16 ... 2048 (pixels)")
    slots = inputs.take("view_slots", int, required=True, low=1, high=NUM_VIEWS,
                        expected=f"an integer 1 ... {NUM_VIEWS} ({NUM_VIEWS} for official checkpoints)")
    top = NUM_VIEWS if slots is None else slots
    views = inputs.take("views", int, required=True, low=1, high=top,
                        expected=f"an integer 1 ... inputs.view_slots ({top})")
    least = max(GRIPPER_CHANNELS.get(mode, ()), default=-1) + 1 if mode is not None else 0
    proprio = inputs.take("proprio_dim", int, required=True, low=max(least, 1), high=1024,
                          expected=f"an integer {max(least, 1)} ... 1024 (the action width, {show(dim)}, unless the "
                                   "checkpoint's proprio is wider: LeRobot's max_state_dim)")
    if "state_dim" in inputs.data:  # optional: the robot's state is narrower and zero-padded to proprio_dim
        top = proprio - 1 if proprio is not None and proprio >= 2 else 1
        inputs.take("state_dim", int, low=1, high=top, expected=f"an integer 1 ... {top} (narrower than "
                                                                "inputs.proprio_dim)")
    batched = "batch_sizes" in d
    sizes = root.take("batch_sizes", list, required=True, check=_batch_sizes,
                      expected=f"a list of 1 ... {MAX_BATCH} sizes, increasing, starting with 1, at most "
                               f"{MAX_BATCH_SIZES} of them") if batched else [1]
    files = _files(found, d.get("files"), manifest_file)
    if "mixed_precision" in d:  # optional: an fp16 bundle's fp32 nodes and why (export/mixed_precision.py)
        _mixed_precision(found, d["mixed_precision"], d.get("precision"))
    if isinstance(d.get("source"), dict) and "lora" in d["source"]:  # optional: a LoRA adapter merged at export
        _lora(Table(found, "source.", d["source"]).table("lora", expected="an object"))
    if found:  # the shapes below are built from the fields above
        return found.lines()
    b = BATCH_DIM if batched else 1
    shapes = {"pixel_values": [b, views, 3, size, size], "image_mask": [b, views], "input_ids": [b, tokens],
              "x1": [b, length, dim], "prev": [b, length, dim], "x0": [b, length, dim], "proprio": [b, proprio], "t": [1],
              "action": [b, length, action.data["output_dim"]], DOMAIN_INPUT: [b],
              PREFIX_INPUTS[0]: [b, length, dim], PREFIX_INPUTS[1]: [b, length]}
    graphs = root.table("graphs", required=True, expected="an object").data
    for graph, (ins, outs) in GRAPH_TENSORS.items():
        if graph == "denoise":
            ins = (*ins, *((DOMAIN_INPUT,) if server else ()), *(PREFIX_INPUTS if _takes_prefix(graphs) else ()))
        _graph(found, graphs.get(graph), f"graphs.{graph}", ins, outs, shapes, files, b, sizes[-1])
    if not found and graphs["encoder"]["outputs"][0]["shape"] != _context_shape(graphs["denoise"]):
        found.other("graphs.denoise.inputs context", f"shape {show(_context_shape(graphs['denoise']))}; the "
                    f"encoder's context output has {show(graphs['encoder']['outputs'][0]['shape'])}")
    return found.lines()


_SECONDS = Field(float, check=lambda v: 0 < v <= 600, expected="a finite number of seconds in (0, 600]")
_ARMS = Field(int, choices=(1, 2))


def _domains(found: Problems, domains: Any) -> None:
    """The ``domains`` of a server bundle: each entry's fields as a robot's bundle has them, no id twice."""
    if not (isinstance(domains, list) and 1 <= len(domains) <= MAX_DOMAINS
            and all(isinstance(e, dict) for e in domains)):
        found.value("domains", domains, f"expected a list of 1 ... {MAX_DOMAINS} objects {{domain_id, embodiment, "
                                        "chunk_seconds, arms}")
        return
    first: dict[int, int] = {}
    for i, entry in enumerate(domains):
        table = Table(found, f"domains[{i}].", entry)
        domain = table.field("domain_id", _DOMAIN, required=True)
        table.take("embodiment", str, required=True, check=is_plain_name,
                   expected="a plain name (letters, digits, '.', '_', '-'; 1-64 characters)")
        table.field("chunk_seconds", _SECONDS, required=True)
        table.field("arms", _ARMS, required=True)
        if domain is not None and domain in first:
            found.value(f"domains[{i}].domain_id", domain, f"listed twice (also domains[{first[domain]}])")
        elif domain is not None:
            first[domain] = i


def _mixed_precision(found: Problems, mixed: Any, precision: Any) -> None:
    """``mixed_precision``: only in an fp16 bundle; ``rule.nodes`` and ``search.nodes`` (``search`` null when the
    rule islands passed) name each graph's fp32 nodes."""
    if precision != "fp16":
        found.other("mixed_precision", f"only an fp16 bundle records one (precision is {show(precision)})")
        return
    if not isinstance(mixed, dict):
        found.value("mixed_precision", mixed, "expected an object {rule, search}")
        return
    table = Table(found, "mixed_precision.", mixed)
    for key, optional in (("rule", False), ("search", True)):
        if optional and key in mixed and mixed[key] is None:
            continue
        expected = "an object" + (" or null" if optional else "")
        if not isinstance(mixed.get(key), dict):
            table.take(key, dict, required=True, expected=expected)
            continue
        table.table(key, expected=expected).take("nodes", dict, required=True, check=_graph_nodes,
                     expected=f"an object {{graph: [node names]}} for graphs of {list(GRAPH_TENSORS)}")


def _graph_nodes(v: dict[str, Any]) -> bool:
    return set(v) <= set(GRAPH_TENSORS) and all(isinstance(names, list) and _names(names) for names in v.values())


def _files(found: Problems, files: Any, manifest_file: str) -> dict[str, Any]:
    if not isinstance(files, dict) or not files:
        found.value("files", files, "expected an object listing every file of the bundle")
        return {}
    for name, entry in files.items():
        if not is_plain_name(name) or name == manifest_file:
            found.other("files", f"{show(name)} is not a plain file name of the bundle")
        elif not _is_file_entry(entry):
            found.value(f"files.{name}", entry, 'expected {"sha256": 64 hex digits, "bytes": integer >= 0}')
    return files


def _is_file_entry(entry: Any) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and _SHA256.fullmatch(entry["sha256"])
            is not None and _BYTES.accepts(entry.get("bytes")))


def _lora(lora: Table) -> None:
    """The adapter merged at export (``source.lora``): what it was, so the torch backend can merge it again."""
    lora.take("name", str, required=True, check=lambda v: 0 < len(v) <= 255 and "/" not in v and "\0" not in v,
              expected="the adapter directory's name (1-255 characters, no '/')")
    lora.take("path", str, required=True, check=lambda v: 0 < len(v) <= 4096, expected="a path (1-4096 characters)")
    lora.take("files", dict, required=True, check=lambda v: sorted(v) == sorted((ADAPTER_CONFIG, ADAPTER_WEIGHTS))
              and all(_is_file_entry(e) for e in v.values()),
              expected=f'{{"{ADAPTER_CONFIG}": {{"sha256", "bytes"}}, "{ADAPTER_WEIGHTS}": {{"sha256", "bytes"}}}}')
    lora.take("r", int, required=True, low=1, high=MAX_LORA_RANK)
    lora.take("lora_alpha", float, required=True, check=lambda v: v != 0, expected="a finite non-zero number")
    lora.take("target_modules", list, required=True, check=lambda v: bool(v) and _names(v),
              expected="a non-empty list of layer names")
    lora.take("modules_to_save", list, required=True, check=_names, expected="a list of module names")
    lora.take("layers", int, required=True, low=0, high=1 << 20)
    lora.take("base_model_name_or_path", (str, type(None)), check=lambda v: v is None or len(v) <= 4096,
              expected="a string or null")


def _names(v: list[Any]) -> bool:
    return len(v) <= 4096 and all(isinstance(n, str) and 0 < len(n) <= 256 for n in v)


def _graph(found: Problems, g: Any, where: str, ins: tuple[str, ...], outs: tuple[str, ...],
           shapes: dict[str, list[Any]], files: dict[str, Any], lead: Any, largest: int) -> None:
    if not isinstance(g, dict):
        found.value(where, g, "expected an object with file, inputs, outputs")
        return
    if g.get("file") not in files or not is_plain_name(g.get("file")):
        found.value(f"{where}.file", g.get("file"), "expected a file listed in files")
    for key, names in (("inputs", ins), ("outputs", outs)):
        tensors = g.get(key)
        if not isinstance(tensors, list) or not all(isinstance(t, dict) for t in tensors):
            found.value(f"{where}.{key}", tensors, "expected a list of {name, shape, dtype}")
            continue
        declared = [t.get("name") for t in tensors]
        if sorted(map(str, declared)) != sorted(names):
            found.other(f"{where}.{key} names {show(declared)}", f"expected exactly {', '.join(names)}")
            continue
        for t in tensors:
            name, shape = t["name"], t.get("shape")
            if t.get("dtype") not in DTYPES:
                found.value(f"{where}.{key} {name} dtype", t.get("dtype"), f"expected {one_of(DTYPES)}")
            elif name == DOMAIN_INPUT and t["dtype"] != "int64":
                found.value(f"{where}.{key} {name} dtype", t["dtype"], "expected 'int64' (domain ids)")
            elif name in PREFIX_INPUTS and t["dtype"] != "float32":
                found.value(f"{where}.{key} {name} dtype", t["dtype"], "expected 'float32' (the prefix is mixed "
                                                                       "in fp32 at every precision)")
            if not (isinstance(shape, list) and shape and all(_SIZE.accepts(n) or (i == 0 and lead == n == BATCH_DIM)
                                                               for i, n in enumerate(shape))
                    and math.prod(largest if n == BATCH_DIM else n for n in shape) <= MAX_TENSOR_ELEMENTS):
                found.value(f"{where}.{key} {name} shape", shape, "expected positive integer dimensions"
                            f"{' (the first ' + show(BATCH_DIM) + ')' if lead == BATCH_DIM else ''}, at most "
                            f"{MAX_TENSOR_ELEMENTS} elements")
            elif name in shapes and shape != shapes[name]:
                found.value(f"{where}.{key} {name} shape", shape, f"expected {show(shapes[name])} (from action and "
                                                                   "inputs)")
            elif name == "context" and (len(shape) != 3 or shape[0] != lead):
                found.value(f"{where}.{key} context shape", shape, f"expected [{show(lead)}, tokens, width]")


def _takes_prefix(graphs: Any) -> bool:
    """Whether the manifest declares a prefix input of the denoise graph (then it must declare both)."""
    denoise = graphs.get("denoise") if isinstance(graphs, dict) else None
    inputs = denoise.get("inputs") if isinstance(denoise, dict) else None
    return isinstance(inputs, list) and any(isinstance(t, dict) and t.get("name") in PREFIX_INPUTS for t in inputs)


def _context_shape(denoise: dict[str, Any]) -> Any:
    return next(t["shape"] for t in denoise["inputs"] if t["name"] == "context")


def _batch_sizes(v: Any) -> bool:
    return (1 <= len(v) <= MAX_BATCH_SIZES and all(_BATCH.accepts(n) for n in v)
            and v[0] == 1 and all(a < b for a, b in zip(v, v[1:])))
