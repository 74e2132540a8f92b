"""The gate every ONNX graph of a bundle passes before it is written: ONNX's full checker.

``onnx.checker.check_model(full_check=True)`` checks the graph's structure, that its nodes are in topological
order, and runs strict shape inference — what tools that validate before they load (Polygraphy, trtexec's
checks, ONNX Runtime's optimiser) ask. Export gates its fp32 and fp16 graphs here, ``xvla-edge quantize`` its
INT8 Q/DQ graphs.
"""

from __future__ import annotations

from pathlib import Path

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
