"""The gate every ONNX graph of a bundle passes before it is written: ONNX's full checker.

``onnx.checker.check_model(full_check=True)`` checks the graph's structure, that its nodes are in topological
order, and runs strict shape inference — what tools that validate before they load (Polygraphy, trtexec's
checks, ONNX Runtime's optimiser) ask. Export gates its fp32 and fp16 graphs here, ``xvla-edge quantize`` its
INT8 Q/DQ graphs — which also have to follow TensorRT's rules for explicit quantization
(:func:`tensorrt_qdq_problems`), so that ``xvla-edge build`` can make INT8 engines of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from xvla.errors import XVLAError


class GraphCheckError(XVLAError, ValueError):
    """An ONNX graph failed ``onnx.checker.check_model(full_check=True)``."""


def check_graph(path: Path) -> None:
    """Run the full checker on the file at ``path`` (by path, so graphs over 2 GB with external data are
    checked too); raise :class:`GraphCheckError` naming the file and the checker's first line."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GraphCheckError(f"{Path(path).name}: fails onnx.checker.check_model(full_check=True): {first}") from exc


QUANTIZABLE_OPS = ("MatMul", "Gemm", "Conv")


def tensorrt_qdq_problems(model: onnx.ModelProto) -> list[str]:
    """How a Q/DQ graph departs from what TensorRT builds explicitly quantized engines from (empty: none).

    The rules of TensorRT's developer guide on explicit quantization: INT8 Q/DQ are signed and symmetric (zero
    point 0), scales positive; activations per tensor, weights per output channel; Q/DQ pairs sit on the inputs
    of the quantized operations (a DequantizeLinear feeds a MatMul, Gemm or Conv), never around LayerNorm,
    Softmax or a residual Add.
    """
    from onnx import numpy_helper

    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    problems = []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        scale = init.get(node.input[1]) if len(node.input) > 1 else None
        zero = init.get(node.input[2]) if len(node.input) > 2 else None
        where = f"{node.op_type} {node.name or node.output[0]}"
        if scale is None or not (np.isfinite(scale).all() and (scale > 0).all()):
            problems.append(f"{where}: scale is not a positive finite constant")
        if zero is None or zero.dtype != np.int8 or zero.any():
            problems.append(f"{where}: zero point {None if zero is None else (zero.dtype, zero.ravel()[:3])} — "
                            "TensorRT takes int8 with zero point 0")
        if node.op_type == "DequantizeLinear":
            weights = node.input[0] in init
            if scale is not None and weights and scale.ndim != 1:
                problems.append(f"{where}: weights quantized per tensor; TensorRT wants per output channel")
            if scale is not None and not weights and scale.ndim != 0:
                problems.append(f"{where}: an activation quantized per channel; TensorRT wants per tensor")
            users = {n.op_type for n in consumers.get(node.output[0], [])}
            if not users or not users <= set(QUANTIZABLE_OPS):
                problems.append(f"{where}: feeds {sorted(users) or 'nothing'}, not only {'/'.join(QUANTIZABLE_OPS)}")
    return problems
