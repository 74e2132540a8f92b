"""One ``/act`` request, from hostile bytes to checked numpy arrays (no torch, no web framework).

The official contract (X-VLA's deployment server): a JSON object with ``proprio`` (a ``json_numpy``
string), ``language_instruction`` (str), ``image0`` and optionally ``image1`` / ``image2`` (``json_numpy``
strings of an HxWx3 uint8 array, of a 1-D uint8 array of encoded image bytes, or of a file path),
``domain_id`` (int) and optionally ``steps``; images fill the view slots in key order (``image0`` and
``image2`` alone fill slots 0 and 1). Extensions: ``seed`` (the chunk's initial noise is
``numpy.random.default_rng(seed).standard_normal((chunk_length, dim), dtype=numpy.float32)``, so a client can
reproduce it with ``Policy.act``), ``noise`` (that array itself), ``prefix`` (real-time chunking: an object of
``rows``, [n, action dim] in the model's action representation, and ``weights``, [n]; see
:mod:`xvla.realtime_chunking`), and plain JSON lists where the official clients send ``json_numpy`` strings.

Where the official server differs: encoded image bytes are decoded to RGB (it passes OpenCV's BGR on), file
paths are refused unless the operator names a directory they must lie in, and every fault is a 400 (413 for
size) naming the field, where it answers "Request failed" to all. The websocket protocol sends the same
fields as msgpack values (:func:`from_message`), checked by the same code; there ``imageK`` is view slot K.

``json_numpy`` strings are decoded here rather than by ``json_numpy.loads``, which builds whatever dtype
and shape a client names: the dtype, shape and data length are checked first. Plain JSON lists cost Python
objects (up to ~140 bytes per value, against 2 to 4 bytes of JSON), so a body may hold at most
``Limits.max_list_values`` values, counted before parsing (a websocket frame as many, counted by
:func:`runtime.remote.wire.unpack`). Every body and message, however malformed, gives an
:class:`ActRequest` or a :class:`RequestError` (never another exception: a 500).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from xvla.constants import MAX_STEPS, NUM_VIEWS
from xvla.errors import InputError, XVLAError
from xvla.instruction import check_instruction
from xvla.validation import Field, show

IMAGE_KEYS = tuple(f"image{i}" for i in range(NUM_VIEWS))
MAX_PROPRIO_VALUES = 1024  # the manifest's own bound on proprio_dim
MAX_SEED = 2**63 - 1
MAX_ARRAY_VALUES = 1 << 31  # json_numpy: bound of the product of a shape's non-zero dimensions
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")  # what an encoded or file image may be (Pillow decoders)
_KINDS = "biuf"
_STRIP_ROWS = 256  # rows of a decoded image copied at once
_DTYPE = re.compile(r"[<>=|]?[biuf][1248]|bool|u?int(8|16|32|64)|float(16|32|64)")  # type codes and names
_LIMITS = {**dict.fromkeys(("max_body_bytes", "max_frame_bytes", "max_image_pixels", "max_image_file_bytes",
                            "max_list_values", "max_active"), Field(int, low=1)),
           "max_wait_s": Field(float, low=0, high=3600, expected="seconds 0 ... 3600")}  # what Limits allows


class RequestError(XVLAError, ValueError):
    """A request the server refuses: ``status`` (400, 401, 404, 413) and a message naming the field."""

    def __init__(self, message: str, status: int = 400, kind: str = "bad_request") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


# A websocket frame (an observation of a robot streaming raw camera images: three 1280×720 views fit). Lower than
# an /act body because the server holds one received frame per open connection before it can decline it, so the
# frames of all connections add up: 32 connections × 8 MiB stays within the 1 GiB of issue 33, 32 MiB did not.
DEFAULT_FRAME_BYTES = 8 << 20


@dataclass(frozen=True)
class Limits:
    """What a request may carry: an ``/act`` body up to ``max_body_bytes``, a websocket frame up to
    ``max_frame_bytes``. ``max_list_values``: values in plain lists, all fields together (each comma of a
    body counts one; each entry of a websocket frame's msgpack arrays and maps); ``image_dir``: the only directory file-path images may be read from (None: file paths
    refused); ``max_active``: requests read, decoded or computed at once, HTTP and websocket together (a request
    beyond them waits up to ``max_wait_s`` for a slot, then is answered 503)."""

    max_body_bytes: int = 32 << 20
    max_frame_bytes: int = DEFAULT_FRAME_BYTES
    max_list_values: int = 1 << 20
    max_image_pixels: int = 4096 * 4096
    max_image_file_bytes: int = 32 << 20
    image_dir: Optional[Path] = None
    max_active: int = 4
    max_wait_s: float = 5.0

    def __post_init__(self) -> None:
        for name, field in _LIMITS.items():
            problem = field.refusal(f"limits.{name}", getattr(self, name))
            if problem is not None:
                raise ValueError(str(problem))


@dataclass
class ActRequest:
    """A checked request: ``images`` HxWx3 uint8 RGB by view slot (None: slot empty), ``proprio`` float32 [n]."""

    images: list[Optional[np.ndarray]]
    instruction: str
    proprio: np.ndarray
    domain_id: int
    steps: Optional[int]
    seed: Optional[int]
    noise: Optional[np.ndarray] = None
    #: real-time chunking's committed prefix as sent: (rows [n, dim], weights [n]), finite float64; checked against
    #: the domain's bundle by :func:`xvla_edge.serve.bundles.prefix_of`
    prefix: Optional[tuple[np.ndarray, np.ndarray]] = None


# ------------------------------------------------------------------------------------------------ JSON
def parse_body(body: bytes, limits: Limits) -> ActRequest:
    """An HTTP body → :class:`ActRequest` (413 when larger than ``limits.max_body_bytes`` or holding more than
    ``limits.max_list_values`` values)."""
    if len(body) > limits.max_body_bytes:
        raise RequestError(f"request body of {len(body)} bytes exceeds the limit of {limits.max_body_bytes}",
                           413, "too_large")
    commas = body.count(b",")  # bounds the values and members parsing would build (json_numpy strings have none)
    if commas > limits.max_list_values:
        raise RequestError(f"request body: {commas} commas, more JSON values than the limit of "
                           f"{limits.max_list_values}; send arrays as json_numpy strings, as the official clients do",
                           413, "too_large")
    payload = _json(body, "request body")
    if not isinstance(payload, dict):
        raise RequestError(f"request body: expected a JSON object, got {type(payload).__name__}")
    return _request(payload, _from_json_field, limits, slots=False)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def _json(text: str | bytes, what: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise RequestError(f"{what}: nested too deeply") from None
    except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RequestError(f"{what}: not valid JSON ({exc})") from None


def _from_json_field(value: Any, key: str) -> Any:
    """A field as the official clients send it (a json_numpy string) or as plain JSON (a list)."""
    if isinstance(value, str):
        return _json_numpy(_json(value, key), key)
    return value


def _json_numpy(obj: Any, key: str) -> Any:
    """``json_numpy``'s encoding ``{"__numpy__": base64, "dtype": descr, "shape": [...]}`` → an array, checked."""
    if not (isinstance(obj, dict) and "__numpy__" in obj):
        return obj
    descr, shape, data = obj.get("dtype"), obj.get("shape"), obj.get("__numpy__")
    dtype = _dtype(descr, key)
    if not (isinstance(shape, list) and len(shape) <= 8
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        raise RequestError(f"{key}: json_numpy shape {show(shape)} is not a list of at most 8 non-negative "
                           "integers")
    if math.prod(n for n in shape if n) > MAX_ARRAY_VALUES:  # numpy refuses such shapes even with no values
        raise RequestError(f"{key}: json_numpy shape {shape} has more than {MAX_ARRAY_VALUES} values")
    if not isinstance(data, str):
        raise RequestError(f"{key}: json_numpy data is not a base64 string")
    expected = math.prod(shape) * dtype.itemsize
    if len(data) > 4 * (expected // 3 + 1) + 4:  # before decoding: never build more than the shape needs
        raise RequestError(f"{key}: {len(data)} base64 characters for shape {shape} of {dtype.str}")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{key}: json_numpy data is not valid base64") from None
    if len(raw) != expected:
        raise RequestError(f"{key}: {len(raw)} data bytes for shape {shape} of {dtype.str} (expected {expected})")
    array = np.frombuffer(raw, dtype)
    return array.reshape(shape) if shape else array[0]


def _dtype(descr: Any, key: str) -> np.dtype:
    """A bool, integer or float dtype named by a type code (``"<f4"``, ``"|u1"``) or a name (``"float32"``);
    anything else (sub-array, structured, object dtypes) is refused before numpy parses it."""
    try:
        dtype = np.dtype(descr) if isinstance(descr, str) and _DTYPE.fullmatch(descr) else None
    except TypeError:  # "f1", "b8": well-formed codes of no type
        dtype = None
    if dtype is None or dtype.kind not in _KINDS:
        raise RequestError(f"{key}: dtype {show(descr)} is not accepted; expected a bool, integer or float dtype "
                           'such as "<f4" or "|u1"')
    return dtype


# ------------------------------------------------------------------------------------------------ msgpack
def from_message(message: Any, limits: Limits) -> ActRequest:
    """A websocket observation (a msgpack map, arrays already decoded by :mod:`runtime.remote.wire`) → request."""
    if not isinstance(message, dict):
        raise RequestError(f"message: expected a map, got {type(message).__name__}")
    return _request(message, lambda value, key: value, limits, slots=True)


# ------------------------------------------------------------------------------------------------ fields
def _request(payload: dict, decode: Any, limits: Limits, *, slots: bool) -> ActRequest:
    """``slots``: ``imageK`` goes to view slot K (absent ones stay empty); else the official rule, present
    images fill the slots in key order."""
    images: list[Optional[np.ndarray]] = []
    for key in IMAGE_KEYS:
        if payload.get(key) is not None:
            images.append(_image(decode(payload[key], key), key, limits))
        elif slots:
            images.append(None)
    while images and images[-1] is None:
        images.pop()
    if not images:
        raise RequestError(f"no images: send at least image0 ({', '.join(IMAGE_KEYS)}: HxWx3 uint8 arrays)")
    try:
        instruction = check_instruction(_required(payload, "language_instruction"), "language_instruction")
    except InputError as exc:
        raise RequestError(str(exc)) from None
    return ActRequest(
        images=images, instruction=instruction,
        proprio=_proprio(decode(_required(payload, "proprio"), "proprio")),
        domain_id=_integer(_required(payload, "domain_id"), "domain_id", 0, 1 << 20),
        steps=None if payload.get("steps") is None else _integer(payload["steps"], "steps", 1, MAX_STEPS),
        seed=None if payload.get("seed") is None else _integer(payload["seed"], "seed", 0, MAX_SEED),
        noise=None if payload.get("noise") is None else _noise(decode(payload["noise"], "noise")),
        prefix=None if payload.get("prefix") is None else _prefix(payload["prefix"], decode),
    )


def _required(payload: dict, key: str) -> Any:
    if key not in payload or payload[key] is None:
        raise RequestError(f"{key}: missing (required fields: image0, language_instruction, proprio, domain_id)")
    return payload[key]


def _integer(value: Any, key: str, low: int, high: int) -> int:
    """An integer field: an int, an integral float or numpy scalar, or a decimal string (as ``int()`` takes)."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, np.generic):
        value = value.item()
    number: Optional[int] = None
    field = Field(int, low=low, high=high)
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value == int(value):
        number = int(value)
    elif isinstance(value, str) and len(value) <= 24:
        try:
            number = int(value)
        except ValueError:  # "+-3", "²", "1e3": not a decimal integer
            number = None
    if number is None or not field.accepts(number):
        raise RequestError(f"{key}: expected {field.words()}, got {show(value)}")
    return number


def _proprio(value: Any, key: str = "proprio") -> np.ndarray:
    if isinstance(value, list):
        value = _list_array(value, key)
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf":
        raise RequestError(f"{key}: expected a numeric array, got {show(value)}")
    if value.ndim == 2 and value.shape[0] == 1:
        value = value[0]
    if value.ndim != 1 or not 1 <= value.size <= MAX_PROPRIO_VALUES:
        raise RequestError(f"{key}: expected a 1-D array of 1 ... {MAX_PROPRIO_VALUES} values, "
                           f"got shape {list(value.shape)}")
    with np.errstate(over="ignore"):
        out = value.astype(np.float32)
    if not np.isfinite(out).all():
        raise RequestError(f"{key}: contains NaN or Inf, or a value too large for float32")
    return out


def _noise(value: Any) -> np.ndarray:
    if isinstance(value, list):
        value = _list_array(value, "noise")
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f" or value.ndim != 2 or value.size > 1 << 16:
        raise RequestError(f"noise: expected a [chunk_length, dim] float array, got {show(value)}")
    with np.errstate(over="ignore"):
        out = value.astype(np.float32)
    if not np.isfinite(out).all():
        raise RequestError("noise: contains NaN or Inf, or a value too large for float32")
    return out


PREFIX_KEYS = ("rows", "weights")


def _prefix(value: Any, decode: Any) -> tuple[np.ndarray, np.ndarray]:
    """``prefix``: an object of exactly ``rows`` (2-D) and ``weights`` (1-D), numeric and finite; the bundle's
    shape, the weights' range and order are checked against the domain's bundle later."""
    if not isinstance(value, dict) or set(value) != set(PREFIX_KEYS):
        keys = sorted(map(str, value)) if isinstance(value, dict) else None
        raise RequestError(f"prefix: expected an object of exactly {' and '.join(PREFIX_KEYS)}, got "
                           + (f"keys {keys}" if keys is not None else show(value)))
    arrays = []
    for key, ndim in zip(PREFIX_KEYS, (2, 1)):
        where = f"prefix.{key}"
        array = decode(value[key], where)
        if isinstance(array, list):
            array = _list_array(array, where)
        if not isinstance(array, np.ndarray) or array.dtype.kind not in "iuf" or array.ndim != ndim \
                or not 1 <= array.size <= 1 << 16:
            raise RequestError(f"{where}: expected a {ndim}-D numeric array of 1 ... {1 << 16} values, got "
                               f"{show(array)}")
        with np.errstate(over="ignore"):
            array = array.astype(np.float64)
        if not np.isfinite(array).all():
            raise RequestError(f"{where}: contains NaN or Inf")
        arrays.append(array)
    return arrays[0], arrays[1]


def _list_array(value: list, key: str) -> np.ndarray:
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError, RecursionError):
        array = None
    if array is None or array.dtype.kind not in "biuf":
        raise RequestError(f"{key}: the list is not a rectangular array of numbers")
    return array


def _image(value: Any, key: str, limits: Limits) -> np.ndarray:
    """One view → HxWx3 uint8 RGB: an array, a list, encoded image bytes (1-D uint8) or a file path."""
    if isinstance(value, str):
        return _decoded(_file_bytes(value, key, limits), key, limits)
    if isinstance(value, list):
        value = _list_array(value, key)
        if value.dtype.kind in "iu" and value.size and (value.min() < 0 or value.max() > 255):
            raise RequestError(f"{key}: list values must be 0 ... 255")
        value = value.astype(np.uint8) if value.dtype.kind in "iu" else value
    if not isinstance(value, np.ndarray):
        raise RequestError(f"{key}: expected an HxWx3 uint8 array, encoded image bytes or a file path, "
                           f"got {show(value)}")
    if value.ndim == 1:
        if value.dtype != np.uint8:
            raise RequestError(f"{key}: a 1-D array is read as encoded image bytes and must be uint8, "
                               f"got {value.dtype}")
        return _decoded(value.tobytes(), key, limits)
    if value.dtype != np.uint8 or value.ndim != 3 or value.shape[2] != 3 or min(value.shape[:2]) < 1:
        raise RequestError(f"{key}: expected an HxWx3 uint8 array, got {show(value)}")
    if value.shape[0] * value.shape[1] > limits.max_image_pixels:
        raise RequestError(f"{key}: {value.shape[1]}x{value.shape[0]} pixels exceed the limit of "
                           f"{limits.max_image_pixels}", 413, "too_large")
    return value


def _file_bytes(text: str, key: str, limits: Limits) -> bytes:
    """The bytes of a file-path image, only from inside ``limits.image_dir`` (symlinks resolved)."""
    if limits.image_dir is None:
        raise RequestError(f"{key}: file-path images are refused (the server was started without --image-dir)",
                           403, "forbidden")
    if not text or "\x00" in text or len(text) > 4096:
        raise RequestError(f"{key}: not a usable file path", 403, "forbidden")
    root = limits.image_dir.resolve()
    try:
        path = (root / text).resolve()
    except (OSError, RuntimeError, ValueError):
        raise RequestError(f"{key}: not a usable file path", 403, "forbidden") from None
    if not path.is_relative_to(root):
        raise RequestError(f"{key}: file-path images must lie in the server's image directory", 403, "forbidden")
    try:
        if not path.is_file():
            raise RequestError(f"{key}: no such image file in the server's image directory: {show(text)}", 404,
                               "not_found")
        with path.open("rb") as f:
            data = f.read(limits.max_image_file_bytes + 1)
    except OSError as exc:
        raise RequestError(f"{key}: cannot read {show(text)} ({exc.strerror or exc})", 404, "not_found") from None
    if len(data) > limits.max_image_file_bytes:
        raise RequestError(f"{key}: image file larger than {limits.max_image_file_bytes} bytes", 413, "too_large")
    return data


def _decoded(data: bytes, key: str, limits: Limits) -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, WebP, BMP) → HxWx3 uint8 RGB; the size is checked before decoding. The
    pixels are copied out in strips: ``np.asarray`` of the whole image (``Image.tobytes``) held them three times
    over (Pillow's 4 bytes per pixel, the encoded chunks, their join), 160 MB for one 4096² view."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
            w, h = img.size
            if w * h > limits.max_image_pixels:
                raise RequestError(f"{key}: {w}x{h} pixels exceed the limit of {limits.max_image_pixels}", 413,
                                   "too_large")
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            out = np.empty((h, w, 3), np.uint8)
            for top in range(0, h, _STRIP_ROWS):
                out[top:top + _STRIP_ROWS] = np.asarray(rgb.crop((0, top, w, min(h, top + _STRIP_ROWS))))
            return out
    except RequestError:
        raise
    except Image.DecompressionBombError:  # Pillow's own bound, met when opening an image claiming billions of pixels
        raise RequestError(f"{key}: the image claims more than {limits.max_image_pixels} pixels", 413,
                           "too_large") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise RequestError(f"{key}: not a decodable {'/'.join(IMAGE_FORMATS)} image ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - the decoders' other faults on crafted bytes (struct.error, ...)
        raise RequestError(f"{key}: not a decodable {'/'.join(IMAGE_FORMATS)} image ({type(exc).__name__})") \
            from None
