"""Trace the bundle graphs to ONNX and convert them to fp16.

Exporter: ``torch.onnx.export(dynamo=True)`` at opset 18 (LayerNormalization as one op; within what
TensorRT 10.3+ parses). Weights go to ``<graph>.onnx.data`` beside each graph (the full encoder is over
protobuf's 2 GB limit).

fp16: onnxruntime's converter (``onnxruntime.transformers.float16``), fp32 inputs and outputs, with these
kept in fp32 because fp16 is known to go wrong there: LayerNormalization (variance), Softmax, Sigmoid (the
gripper squash), and in the denoise graph every node between the graph inputs and the first MatMul (the
re-noise t·x1 + (1 − t)·prev, the gripper mask and the time embedding's cos/sin) and every node downstream of
real-time chunking's prefix inputs (the mix of the prediction with the committed prefix and the post-processing
after it). The converter takes node names for those parts; :func:`upstream_of_matmul` finds them. The converter
rounds a value to fp16 and back between two fp32 nodes (and after an fp32 graph input);
:func:`drop_fp16_round_trips` removes those round trips, so the fp32 parts compute in fp32 from the inputs on (a
weight-1 prefix row comes out as the prefix, not as its fp16 rounding). These are the places we go beyond what
the converter does by itself. The converter appends its Cast nodes at the end of the node list and
keeps the fp32 graph's value_info: the result is then sorted topologically and its value_info dropped
(``onnxruntime.transformers.onnx_model.OnnxModel``), so that tools which validate before they load accept it.

When these islands are not enough for the parity gate, :mod:`export.mixed_precision` searches for the nodes
to keep in fp32 besides them.

Every graph a bundle ships passes :func:`calibration.graph_check.check_graph` (ONNX's full checker) before
the bundle is written.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import onnx
import torch

from runtime.manifest_schema import BATCH_DIM, MAX_BATCH

OPSET = 18
# ConstantOfShape: ONNX Runtime 1.23's converter (the last release for Python 3.10) turns its value into fp16
# but leaves its output declared float, and the graph no longer loads; kept fp32, it is cast where it is used.
FP32_OPS = ["LayerNormalization", "Softmax", "Sigmoid", "ConstantOfShape"]


def export_graph(module: torch.nn.Module, args: tuple[torch.Tensor, ...], path: Path, input_names: list[str],
                 output_names: list[str], batched: Sequence[str] = ()) -> None:
    """Trace ``module`` at the example ``args`` into ``path`` (+ ``.data``): static shapes, except dimension 0
    of the inputs named in ``batched``, which becomes the symbolic dimension ``"batch"`` (1 ... MAX_BATCH; trace
    those at a batch of 2 or more, as the exporter specialises a dimension it sees at 1)."""
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)  # torchvision ops
    dynamic = None
    if batched:
        batch = torch.export.Dim(BATCH_DIM, min=1, max=MAX_BATCH)
        dynamic = {name: ({0: batch} if name in batched else None) for name in input_names}
    with torch.no_grad():
        program = torch.onnx.export(module.eval(), args, dynamo=True, opset_version=OPSET,
                                    input_names=input_names, output_names=output_names,
                                    dynamic_shapes=dynamic, external_data=True, verbose=False)
    program.save(str(path), external_data=True)


def upstream_of_matmul(model: onnx.ModelProto, input_names: list[str]) -> list[str]:
    """Names of the nodes reachable from ``input_names`` without passing through a MatMul/Gemm."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found: dict[str, None] = {}
    frontier = list(input_names)
    while frontier:
        tensor = frontier.pop()
        for node in consumers.get(tensor, []):
            if node.op_type in ("MatMul", "Gemm") or node.name in found:
                continue
            found[node.name] = None
            frontier.extend(node.output)
    return list(found)


def convert_fp16(path: Path, keep_fp32_from: list[str] = (), keep_nodes: Sequence[str] = (),
                 out: Path | None = None) -> None:
    """Rewrite the fp32 graph at ``path`` (+ ``.data``) as fp16 with fp32 I/O, in place or into ``out``; the ops
    above stay fp32, and the nodes named in ``keep_nodes`` (chosen by :mod:`export.mixed_precision`'s search)."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    # Shape inference on the file, not in memory: a full-size encoder is over protobuf's 2 GB limit.
    inferred = path.with_name(path.stem + ".inferred.onnx")
    onnx.shape_inference.infer_shapes_path(str(path), str(inferred))
    model = onnx.load(str(inferred))  # weights are read into memory, so the files can be rewritten
    inferred.unlink()
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"node_{i}_{node.op_type}"
    blocked_nodes = upstream_of_matmul(model, list(keep_fp32_from)) if keep_fp32_from else []
    original = {node.name for node in model.graph.node}
    half = convert_float_to_float16(model, keep_io_types=True, op_block_list=DEFAULT_OP_BLOCK_LIST + FP32_OPS,
                                    node_block_list=blocked_nodes + list(keep_nodes), disable_shape_infer=True)
    drop_fp16_round_trips(half, original)
    tidy_graph(half)
    out = path if out is None else out
    remove_graph(out)
    onnx.save_model(half, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=out.name + ".data", size_threshold=1024)


def drop_fp16_round_trips(model: onnx.ModelProto, original: set[str]) -> None:
    """Keep fp32 values fp32 between fp32 nodes, in place. The converter casts every fp32 value it leaves (a graph
    input, a kept node's output) to fp16, and casts it back for each kept consumer: a value passed from one fp32
    node to the next is rounded to half precision on the way. Where a Cast to fp32 reads a Cast to fp16 the
    converter added (not a node of the ``original`` graph, so its input is an fp32 value), the consumers read
    that input directly (a graph output through an Identity), and Casts left unread are removed."""
    to_fp16, to_fp32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT

    def cast_to(node: onnx.NodeProto) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    producer = {out: node for node in model.graph.node for out in node.output}
    outputs = {o.name for o in model.graph.output}
    source: dict[str, str] = {}  # output of a round trip -> the fp32 value before it
    for node in model.graph.node:
        first = producer.get(node.input[0]) if node.input else None
        if (cast_to(node) == to_fp32 and first is not None and cast_to(first) == to_fp16
                and first.name not in original):
            source[node.output[0]] = first.input[0]
    keep = []
    for node in model.graph.node:
        if node.output and node.output[0] in source:
            if node.output[0] not in outputs:
                continue
            node.op_type, node.input[0] = "Identity", source[node.output[0]]
            del node.attribute[:]
        for i, name in enumerate(node.input):
            node.input[i] = source.get(name, name) if name not in outputs else name
        keep.append(node)
    read = {name for node in keep for name in node.input} | outputs
    keep = [node for node in keep if cast_to(node) != to_fp16 or node.name in original or node.output[0] in read]
    del model.graph.node[:]
    model.graph.node.extend(keep)


def stamp(path: Path, metadata: dict[str, str]) -> None:
    """Add ``metadata`` to the model metadata of the graph at ``path`` (its external data untouched)."""
    model = onnx.load(str(path), load_external_data=False)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, **metadata})
    onnx.save_model(model, str(path))


def tidy_graph(model: onnx.ModelProto) -> None:
    """Sort the nodes topologically and drop the (possibly stale) value_info, in place."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    wrapped = OnnxModel(model)
    wrapped.topological_sort(is_deterministic=True)
    wrapped.clean_shape_infer()


def remove_graph(path: Path) -> None:
    """Delete a graph file and its external data."""
    for p in (path, path.with_name(path.name + ".data")):
        if p.exists():
            os.remove(p)


def io_specs(path: Path) -> tuple[list[dict], list[dict]]:
    """(inputs, outputs) of an ONNX file as [{name, shape, dtype}] (a symbolic dimension by its name)."""
    model = onnx.load(str(path), load_external_data=False)
    def spec(v: onnx.ValueInfoProto) -> dict:
        t = v.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        return {"name": v.name, "shape": [d.dim_param or d.dim_value for d in t.shape.dim], "dtype": dtype}
    return [spec(v) for v in model.graph.input], [spec(v) for v in model.graph.output]
