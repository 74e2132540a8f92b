"""``/act`` bodies as the official clients send them, and hostile ones, through the request parser (no server)."""

from __future__ import annotations

import base64
import io
import json
import os
import zlib

import numpy as np
import pytest
from PIL import Image

json_numpy = pytest.importorskip("json_numpy", reason="the [serve] extra (json-numpy) is not installed")

from xvla_edge.serve.request import ActRequest, Limits, RequestError, from_message, parse_body  # noqa: E402

RNG = np.random.default_rng(0)
IMG = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)
PROPRIO = RNG.standard_normal(20)  # float64, as the official LIBERO client sends it


def official(**overrides) -> dict:
    body = {"proprio": json_numpy.dumps(PROPRIO), "language_instruction": "put the cup on the plate",
            "image0": json_numpy.dumps(IMG), "domain_id": 3, "steps": 10}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def parse(body: dict, limits: Limits = Limits()):
    return parse_body(json.dumps(body).encode(), limits)


def refused(body, limits: Limits = Limits(), status: int = 400) -> str:
    with pytest.raises(RequestError) as err:
        parse_body(body if isinstance(body, bytes) else json.dumps(body).encode(), limits)
    assert err.value.status == status, str(err.value)
    return str(err.value)


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def test_an_official_body_parses_to_the_arrays_sent():
    r = parse(official(image1=json_numpy.dumps(IMG[::-1])))
    assert [img.tobytes() for img in r.images] == [IMG.tobytes(), IMG[::-1].tobytes()]
    assert r.proprio.dtype == np.float32 and np.array_equal(r.proprio, PROPRIO.astype(np.float32))
    assert (r.instruction, r.domain_id, r.steps, r.seed, r.noise) == ("put the cup on the plate", 3, 10, None, None)


def test_images_fill_slots_in_key_order_as_the_official_server_does():
    r = parse(official(image0=None, image2=json_numpy.dumps(IMG)))
    assert len(r.images) == 1 and r.images[0].tobytes() == IMG.tobytes()
    msg = from_message({"image1": IMG, "language_instruction": "x", "proprio": PROPRIO, "domain_id": 3}, Limits())
    assert msg.images[0] is None and msg.images[1] is IMG  # the websocket protocol: imageK is slot K


def test_calvin_style_list_proprio_plain_json_and_numeric_strings():
    r = parse(official(proprio=json_numpy.dumps(PROPRIO.tolist()), domain_id="3", steps=4.0, seed=11))
    assert np.allclose(r.proprio, PROPRIO) and (r.domain_id, r.steps, r.seed) == (3, 4, 11)
    r = parse(official(proprio=PROPRIO.tolist(), image0=IMG.tolist()))  # plain JSON lists, not json_numpy strings
    assert r.images[0].dtype == np.uint8 and r.images[0].tobytes() == IMG.tobytes()


def test_encoded_image_bytes_decode_to_rgb_not_bgr():
    r = parse(official(image0=json_numpy.dumps(np.frombuffer(png(IMG), np.uint8))))
    assert r.images[0].tobytes() == IMG.tobytes()  # red stays red (the official server would hand on BGR)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "I;16"])
def test_encoded_images_taller_than_a_strip_decode_exactly(mode):
    """Pixels are copied out in 256-row strips; every row arrives, in any mode Pillow converts to RGB."""
    tall = RNG.integers(0, 256, (700, 33, 3), dtype=np.uint8)
    if mode == "I;16":
        image = Image.fromarray(tall[..., 0].astype(np.uint16) * 257)
    else:
        image = Image.fromarray(tall).convert(mode)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    r = parse(official(image0=json_numpy.dumps(np.frombuffer(buf.getvalue(), np.uint8))))
    with Image.open(io.BytesIO(buf.getvalue())) as reference:
        assert r.images[0].dtype == np.uint8 and r.images[0].tobytes() == reference.convert("RGB").tobytes()


@pytest.mark.parametrize("field, value, message", [
    ("image0", None, "no images"),
    ("language_instruction", None, "language_instruction: missing"),
    ("proprio", None, "proprio: missing"),
    ("domain_id", None, "domain_id: missing"),
    ("language_instruction", "", "language_instruction: expected a non-empty instruction"),
    ("language_instruction", 5, "language_instruction: expected text (a string), got int"),
    ("language_instruction", "\ud800", "language_instruction: not valid Unicode text: a lone surrogate U+D800"),
    ("language_instruction", "a\x1bb", "language_instruction: control character U+001B"),
    ("language_instruction", "x" * 5000, "language_instruction: 5000 characters"),
    ("image0", json_numpy.dumps(IMG.astype(np.float32)), "image0: expected an HxWx3 uint8 array"),
    ("image0", json_numpy.dumps(IMG[..., :2]), "image0: expected an HxWx3 uint8 array"),
    ("image0", json_numpy.dumps(IMG[0]), "image0: expected an HxWx3 uint8 array"),
    ("image0", json_numpy.dumps(np.zeros((0, 5, 3), np.uint8)), "image0: expected an HxWx3"),
    ("image0", json_numpy.dumps(np.arange(10, dtype=np.int32)), "image0: a 1-D array is read as encoded image"),
    ("image0", json_numpy.dumps(np.arange(10, dtype=np.uint8)), "image0: not a decodable"),
    ("image0", json_numpy.dumps(np.frombuffer(png(IMG)[:60], np.uint8)), "image0: not a decodable"),
    ("image0", [[[300, 0, 0]]], "image0: list values must be 0 ... 255"),
    ("image0", [[1, 2], [3]], "image0: the list is not a rectangular array"),
    ("image0", json_numpy.dumps(5), "image0: expected an HxWx3 uint8 array"),
    ("image1", "not json", "image1: not valid JSON"),
    ("proprio", json_numpy.dumps(np.array([1.0, np.nan])), "proprio: contains NaN or Inf"),
    ("proprio", json_numpy.dumps(np.array([1e300])), "too large for float32"),
    ("proprio", json_numpy.dumps(np.zeros((2, 3))), "proprio: expected a 1-D array"),
    ("proprio", json_numpy.dumps(np.zeros(2000)), "proprio: expected a 1-D array of 1 ... 1024"),
    ("proprio", json_numpy.dumps(np.array(["a"])), "proprio: dtype"),
    ("proprio", "[1, NaN]", "proprio: not valid JSON"),
    ("proprio", "[" * 100_000 + "]" * 100_000, "proprio: nested too deeply"),
    ("proprio", {"a": 1}, "proprio: expected a numeric array"),
    ("domain_id", True, "domain_id: expected an integer"),
    ("domain_id", 3.5, "domain_id: expected an integer"),
    ("domain_id", -1, "domain_id: expected an integer 0"),
    ("domain_id", "1e400", "domain_id: expected an integer"),
    ("domain_id", "+-3", "domain_id: expected an integer"),
    ("domain_id", "\u00b2", "domain_id: expected an integer"),
    ("steps", "9" * 30, "steps: expected an integer 1 ... 100"),
    ("steps", 0, "steps: expected an integer 1 ... 100"),
    ("steps", 10**9, "steps: expected an integer 1 ... 100"),
    ("seed", -1, "seed: expected an integer 0"),
    ("seed", 2**64, "seed: expected an integer 0"),
    ("noise", json_numpy.dumps(np.zeros(30)), "noise: expected a [chunk_length, dim] float array"),
    ("noise", json_numpy.dumps(np.full((30, 20), np.inf)), "noise: contains NaN or Inf"),
])
def test_bad_fields_are_400_naming_the_field(field, value, message):
    body = official(**{field: value}) if value is not None else {k: v for k, v in official().items() if k != field}
    assert message in refused(body)


@pytest.mark.parametrize("encoded, message", [
    ({"__numpy__": "AAAA", "dtype": "|O", "shape": [1]}, 'dtype "|O" is not accepted'),
    ({"__numpy__": "AAAA", "dtype": "<f4", "shape": [2]}, "3 data bytes for shape [2]"),
    ({"__numpy__": "A" * 10_000, "dtype": "|u1", "shape": [3]}, "10000 base64 characters"),
    ({"__numpy__": "!!!!", "dtype": "|u1", "shape": [3]}, "not valid base64"),
    ({"__numpy__": "AAAA", "dtype": "|u1", "shape": [-3]}, "shape"),
    ({"__numpy__": "AAAA", "dtype": "|u1", "shape": [2**40, 2**40]}, "has more than 2147483648 values"),
    # numpy raises ValueError, not TypeError, on these dtypes and shapes: each was a 500 with a traceback
    ({"__numpy__": "", "dtype": "(-1,)i4", "shape": [1]}, 'dtype "(-1,)i4" is not accepted'),
    ({"__numpy__": "", "dtype": "(2,)i4", "shape": [1]}, 'dtype "(2,)i4" is not accepted'),
    ({"__numpy__": "", "dtype": "<f4", "shape": [0, 2**63]}, "has more than 2147483648 values"),
    ({"__numpy__": "", "dtype": "<f4", "shape": [0, 2**62, 2**62]}, "has more than 2147483648 values"),
    ({"__numpy__": 5, "dtype": "|u1", "shape": [3]}, "not a base64 string"),
])
def test_hostile_json_numpy_arrays_are_refused_before_decoding(encoded, message):
    assert message in refused(official(proprio=json.dumps(encoded)))


def test_body_limits_and_non_object_bodies():
    body = json.dumps(official()).encode()
    assert "exceeds the limit" in refused(body, Limits(max_body_bytes=len(body) - 1), status=413)
    assert "expected a JSON object" in refused(b"[1, 2]")
    assert "not valid JSON" in refused(b"\xff\xfe{")
    assert "not valid JSON" in refused(b'{"a": Infinity}')


def test_plain_json_lists_are_bounded_before_parsing():
    """A 31 MB list-encoded image took 753 MB to parse (Python objects); a body's commas bound its values."""
    side = 40  # 4800 values, 4799 + 2 commas in the lists, a few more between the fields
    body = json.dumps(official(image0=np.full((side, side, 3), 7, np.uint8).tolist())).encode()
    commas = body.count(b",")
    assert parse_body(body, Limits(max_list_values=commas)).images[0].shape == (side, side, 3)
    message = refused(body, Limits(max_list_values=commas - 1), status=413)
    assert message == (f"request body: {commas} commas, more JSON values than the limit of {commas - 1}; send arrays "
                       "as json_numpy strings, as the official clients do")
    assert "more JSON values" in refused(b"[" + b"[]," * 2000 + b"[]]", Limits(max_list_values=1999), status=413)
    assert Limits().max_list_values == 1 << 20  # three 224x224 views as lists fit


@pytest.mark.parametrize("field, value", [("max_active", 0), ("max_list_values", -1), ("max_body_bytes", True),
                                          ("max_wait_s", float("nan")), ("max_wait_s", -1), ("max_active", 2.5)])
def test_limits_refuse_values_that_would_disable_or_break_them(field, value):
    with pytest.raises(ValueError, match=f"limits.{field} = "):
        Limits(**{field: value})


def test_image_pixel_limit_applies_to_arrays_and_to_encoded_images_before_decoding():
    assert "pixels exceed" in refused(official(), Limits(max_image_pixels=48 * 64 - 1), status=413)
    # valid PNG headers claiming 5000x5000 and 100000x100000 pixels (IHDR CRC recomputed): refused unread
    for side, message in [(5000, "image0: 5000x5000 pixels exceed the limit of 16777216"),
                          (100_000, "image0: the image claims more than 16777216 pixels")]:
        bomb = bytearray(png(np.zeros((1, 1, 3), np.uint8)))
        bomb[16:24] = side.to_bytes(4, "big") * 2
        bomb[29:33] = zlib.crc32(bytes(bomb[12:29])).to_bytes(4, "big")
        assert refused(official(image0=json_numpy.dumps(np.frombuffer(bytes(bomb), np.uint8))), status=413) == message


class TestFilePathImages:
    def test_refused_without_an_image_directory(self):
        assert "file-path images are refused" in refused(official(image0=json_numpy.dumps("/etc/hostname")),
                                                         status=403)

    def test_read_from_inside_the_directory(self, tmp_path):
        (tmp_path / "cam.png").write_bytes(png(IMG))
        r = parse(official(image0=json_numpy.dumps("cam.png")), Limits(image_dir=tmp_path))
        assert r.images[0].tobytes() == IMG.tobytes()
        r = parse(official(image0=json_numpy.dumps(str(tmp_path / "cam.png"))), Limits(image_dir=tmp_path))
        assert r.images[0].tobytes() == IMG.tobytes()

    @pytest.mark.parametrize("name", ["../secret.png", "a/../../secret.png", "/etc/passwd", "link.png", "", "a\x00b"])
    def test_nothing_outside_the_directory_is_read(self, tmp_path, name):
        allowed = tmp_path / "allowed"
        allowed.mkdir()
        (tmp_path / "secret.png").write_bytes(png(IMG))
        os.symlink(tmp_path / "secret.png", allowed / "link.png")  # a link out of the directory
        message = refused(official(image0=json_numpy.dumps(name)), Limits(image_dir=allowed), status=403)
        assert message.startswith("image0:")

    def test_missing_oversize_and_non_image_files(self, tmp_path):
        (tmp_path / "big.png").write_bytes(png(IMG))
        (tmp_path / "notes.txt").write_text("hello")
        limits = Limits(image_dir=tmp_path, max_image_file_bytes=100)
        assert "no such image file" in refused(official(image0=json_numpy.dumps("nope.png")), limits, status=404)
        assert "larger than 100 bytes" in refused(official(image0=json_numpy.dumps("big.png")), limits, status=413)
        assert "not a decodable" in refused(official(image0=json_numpy.dumps("notes.txt")), Limits(image_dir=tmp_path))
        assert "no such image file" in refused(official(image0=json_numpy.dumps(".")), limits, status=404)


PREFIX_ROWS = RNG.standard_normal((4, 20))
PREFIX_WEIGHTS = np.array([1.0, 1.0, 0.5, 0.1])


def test_a_prefix_arrives_as_sent_in_json_numpy_plain_lists_and_msgpack():
    sent = {"rows": json_numpy.dumps(PREFIX_ROWS), "weights": json_numpy.dumps(PREFIX_WEIGHTS)}
    listed = {"rows": PREFIX_ROWS.tolist(), "weights": PREFIX_WEIGHTS.tolist()}
    good = {"image0": IMG, "language_instruction": "x", "proprio": PROPRIO, "domain_id": 3,
            "prefix": {"rows": PREFIX_ROWS.astype(np.float32), "weights": PREFIX_WEIGHTS.astype(np.float32)}}
    for request, tol in ((parse(official(prefix=sent)), 0), (parse(official(prefix=listed)), 0),
                         (from_message(good, Limits()), 1e-7)):
        rows, weights = request.prefix
        np.testing.assert_allclose(rows, PREFIX_ROWS, rtol=tol, atol=tol)
        np.testing.assert_allclose(weights, PREFIX_WEIGHTS, rtol=tol, atol=tol)
    assert parse(official()).prefix is None


@pytest.mark.parametrize("prefix, message", [
    ([1, 2], "prefix: expected an object of exactly rows and weights"),
    ({"rows": PREFIX_ROWS.tolist()}, "prefix: expected an object of exactly rows and weights, got keys ['rows']"),
    ({"rows": PREFIX_ROWS.tolist(), "weights": [1.0] * 4, "delay": 2}, "got keys ['delay', 'rows', 'weights']"),
    ({"rows": PREFIX_ROWS[0].tolist(), "weights": [1.0]}, "prefix.rows: expected a 2-D numeric array"),
    ({"rows": PREFIX_ROWS.tolist(), "weights": [[1.0]]}, "prefix.weights: expected a 1-D numeric array"),
    ({"rows": [[]], "weights": [1.0]}, "prefix.rows: expected a 2-D numeric array of 1 ... 65536 values"),
    ({"rows": json_numpy.dumps(np.zeros((300, 300))), "weights": [1.0]}, "prefix.rows: expected a 2-D numeric"),
    ({"rows": json_numpy.dumps(np.full((2, 20), np.nan)), "weights": [1.0, 1.0]}, "prefix.rows: contains NaN"),
    ({"rows": PREFIX_ROWS.tolist(), "weights": json_numpy.dumps(np.array([1.0, np.inf, 0, 0]))},
     "prefix.weights: contains NaN or Inf"),
    ({"rows": [["a"] * 20], "weights": [1.0]}, "prefix.rows: the list is not a rectangular array of numbers"),
    ({"rows": "not json", "weights": [1.0]}, "prefix.rows: not valid JSON"),
])
def test_a_malformed_prefix_is_400_naming_the_field(prefix, message):
    assert message in refused(official(prefix=prefix))


def test_websocket_messages_are_checked_by_the_same_rules():
    good = {"image0": IMG, "language_instruction": "x", "proprio": PROPRIO, "domain_id": np.int64(3)}
    assert from_message(good, Limits()).domain_id == 3
    for bad, message in [({"image0": IMG.astype(np.int16)}, "image0"), ({"proprio": "1,2"}, "proprio"),
                         ({"domain_id": np.float32(2.5)}, "domain_id")]:
        with pytest.raises(RequestError, match=message):
            from_message({**good, **bad}, Limits())
    with pytest.raises(RequestError, match="expected a map"):
        from_message([1, 2], Limits())


# ------------------------------------------------------------------------------------------------ totality
# Any body, any message: a checked request or a RequestError, never another exception (a 500 and a traceback).
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)
HOSTILE_DTYPES = ["(-1,)i4", "(2,)i4", "(2,3)<f4", "|O", "V8", "<U4", "M8[s]", "m8", "f1", "b8", "<c8", "float128",
                  "i16", "[('a','<f4')]", "", " <f4", "<f4 ", "|u1", "<f4", "|b1", "int64", "float16", "uint8"]
SIZES = [0, 1, 2, 3, -1, 255, 2**31, 2**62, 2**63, 2**64]
BASE64 = st.binary(max_size=48).map(lambda b: base64.b64encode(b).decode())
IMAGE_BYTES = st.sampled_from([b"", png(IMG)[:8], png(IMG)[:40], b"BM", b"\xff\xd8\xff", b"RIFF\x00\x00\x00\x00WEBP"])
JSON_NUMPY = st.fixed_dictionaries({
    "__numpy__": BASE64 | (st.tuples(IMAGE_BYTES, st.binary(max_size=64))
                           .map(lambda parts: base64.b64encode(b"".join(parts)).decode())) | JSON,
    "dtype": st.sampled_from(HOSTILE_DTYPES) | st.text(max_size=9) | JSON,
    "shape": st.lists(st.sampled_from(SIZES) | st.integers(-3, 300), max_size=9) | JSON,
})
VALUE = JSON_NUMPY.map(json.dumps) | JSON_NUMPY | JSON | JSON.map(json.dumps) | st.text(max_size=12)
FIELDS = ("image0", "image1", "image2", "language_instruction", "proprio", "domain_id", "steps", "seed", "noise")
PREFIX = st.fixed_dictionaries({}, optional={"rows": VALUE, "weights": VALUE})
PREFIX_AND_MORE = st.builds(lambda p, more: {**p, **more}, PREFIX,
                            st.dictionaries(st.text(max_size=6), JSON, max_size=2))
BODY = st.fixed_dictionaries({}, optional={**{key: VALUE for key in FIELDS}, "prefix": PREFIX | PREFIX_AND_MORE})


def total(call) -> None:
    try:
        assert isinstance(call(), ActRequest)
    except RequestError as exc:
        assert 400 <= exc.status < 500 and str(exc)


@FUZZ
@given(BODY, st.sampled_from([None, "image0", "proprio", "noise"]), JSON_NUMPY)
@example({}, "proprio", {"__numpy__": "", "dtype": "(-1,)i4", "shape": [1]})
@example({}, "proprio", {"__numpy__": "", "dtype": "<f4", "shape": [0, 2**63]})
@example({}, "image0", {"__numpy__": "", "dtype": "|u1", "shape": [0, 2**62, 2**62]})
def test_any_json_body_is_a_request_or_a_request_error(fields, key, encoded):
    """Official-looking bodies with hostile fields, and one field a hostile json_numpy array."""
    body = {**official(), **fields}
    if key is not None:
        body[key] = json.dumps(encoded)
    total(lambda: parse_body(json.dumps(body).encode(), Limits()))


@FUZZ
@given(st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode()))
def test_any_bytes_are_a_request_or_a_request_error(body):
    total(lambda: parse_body(body, Limits()))


ARRAYS = hnp.arrays(st.sampled_from([np.uint8, np.int8, np.int64, np.uint64, np.float16, np.float32, np.float64,
                                     np.bool_]), hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))
MESSAGE_VALUE = ARRAYS | JSON | st.binary(max_size=16) | ARRAYS.map(lambda a: a.reshape(-1)[:1].sum())


@FUZZ
@given(st.fixed_dictionaries({}, optional={**{key: MESSAGE_VALUE for key in FIELDS},
                                           "prefix": st.fixed_dictionaries({}, optional={"rows": MESSAGE_VALUE,
                                                                                         "weights": MESSAGE_VALUE})
                                           | MESSAGE_VALUE}))
def test_any_websocket_message_is_a_request_or_a_request_error(fields):
    total(lambda: from_message({"image0": IMG, "language_instruction": "x", "proprio": PROPRIO, "domain_id": 3,
                                **fields}, Limits()))
