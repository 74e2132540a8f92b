"""msgpack messages with numpy arrays: the websocket protocol of ``xvla-edge serve`` and :mod:`runtime.remote.client`.

An array travels as a map ``{"__ndarray__": True, "data": <raw bytes, C order>, "dtype": <numpy dtype
string, e.g. "<f4">, "shape": [...]}`` and a numpy scalar as ``{"__npgeneric__": True, "data": <value>,
"dtype": ...}``, keys as msgpack binary — the encoding openpi's clients use, so their websocket client can
talk to the server. Decoding treats every message as hostile: only boolean, integer and floating dtypes of
at most 8 bytes, at most :data:`MAX_DIMS` dimensions, and data whose length matches dtype × shape exactly;
anything else is a :class:`WireError` naming the key. Arrays come back read-only (views of the message).
Plain msgpack arrays and maps cost Python objects (a 19 MB frame of one-element arrays took 746 MB), so a
message holds at most ``max_values`` of their entries, all together.

msgpack itself is a library (``msgpack``); the array maps are this module's because their validation is
the point: ``np.frombuffer`` would build whatever dtype and shape a message names.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from xvla.errors import XVLAError

PROTOCOL = "xvla-edge/1"  # the websocket protocol's name and version, in the metadata a server sends first
MAX_DIMS = 8
MAX_MESSAGE_BYTES = 64 << 20  # 3 full-HD RGB views are 19 MB
MAX_VALUES = 1 << 20  # entries of plain arrays and maps in one message (numpy arrays travel as bytes)
MAX_ARRAY_VALUES = 1 << 31  # bound of the product of a shape's non-zero dimensions (numpy refuses larger)
_KINDS = "biuf"  # bool, signed, unsigned, floating


class WireError(XVLAError, ValueError):
    """A message is not valid msgpack, or an array in it is malformed."""


def _msgpack() -> Any:
    import msgpack  # the [serve] / [remote] extras

    return msgpack


def _encode(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind not in _KINDS:
        raise WireError(f"cannot send a numpy {obj.dtype} value: only bool, integer and float arrays travel")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str,
                b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot send a {type(obj).__name__}")


def _field(d: dict, name: str) -> Any:
    return d.get(name.encode(), d.get(name))


def _dtype(d: dict, what: str) -> np.dtype:
    text = _field(d, "dtype")
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    try:
        dtype = np.dtype(text) if isinstance(text, str) and len(text) <= 8 else None
    except (TypeError, ValueError):  # ValueError: sub-array dtypes such as "(-1,)i4"
        dtype = None
    if dtype is None or dtype.kind not in _KINDS or dtype.itemsize > 8 or dtype.fields is not None:
        raise WireError(f"{what}: dtype {text!r} is not accepted; expected a bool, integer or float dtype "
                        "string such as '<f4' or '|u1'")
    return dtype


def _decode(d: dict) -> Any:
    if _field(d, "__ndarray__") is True:
        dtype = _dtype(d, "array")
        shape, data = _field(d, "shape"), _field(d, "data")
        if (not isinstance(shape, (list, tuple)) or len(shape) > MAX_DIMS
                or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n for n in shape)):
            raise WireError(f"array: shape {shape!r} is not a list of at most {MAX_DIMS} non-negative integers")
        if math.prod(n for n in shape if n) > MAX_ARRAY_VALUES:
            raise WireError(f"array: shape {list(shape)} has more than {MAX_ARRAY_VALUES} values")
        if not isinstance(data, bytes) or len(data) != math.prod(shape) * dtype.itemsize:
            size = len(data) if isinstance(data, bytes) else type(data).__name__
            raise WireError(f"array: {size} data bytes for shape {list(shape)} of {dtype.str} "
                            f"(expected {math.prod(shape) * dtype.itemsize} bytes)")
        return np.frombuffer(data, dtype).reshape(shape)
    if _field(d, "__npgeneric__") is True:
        dtype, value = _dtype(d, "scalar"), _field(d, "data")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise WireError(f"scalar: data {value!r} is not a number")
        try:
            return dtype.type(value)
        except (OverflowError, ValueError) as exc:
            raise WireError(f"scalar: {value!r} does not fit {dtype.str}") from exc
    return d


def pack(message: Any) -> bytes:
    """Encode ``message`` (maps, lists, str, bytes, numbers, numpy arrays and scalars)."""
    return _msgpack().packb(message, default=_encode, use_bin_type=True)


def unpack(data: bytes, max_bytes: int = MAX_MESSAGE_BYTES, max_values: int = MAX_VALUES) -> Any:
    """Decode one message; arrays validated (see the module docstring). String keys come back as ``str``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError(f"expected a binary message, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise WireError(f"message of {len(data)} bytes exceeds the limit of {max_bytes}")
    msgpack = _msgpack()
    entries = 0

    def counted(container: Any) -> Any:  # called as each array or map is complete
        nonlocal entries
        entries += len(container)
        if entries > max_values:
            raise WireError(f"more than {max_values} entries of plain arrays and maps; send numbers as numpy arrays")
        return container

    try:
        return msgpack.unpackb(data, object_hook=lambda d: _decode(counted(d)), list_hook=counted, raw=False,
                               strict_map_key=False, max_array_len=max_values, max_map_len=max_values)
    except WireError:
        raise
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError, TypeError) as exc:
        raise WireError(f"not a valid msgpack message ({type(exc).__name__}: {exc})") from exc
