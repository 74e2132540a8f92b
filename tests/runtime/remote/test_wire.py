"""The websocket frames: numpy arrays through msgpack in openpi's encoding, and hostile frames refused."""

from __future__ import annotations

import numpy as np
import pytest

msgpack = pytest.importorskip("msgpack", reason="the [serve]/[remote] extra (msgpack) is not installed")

from runtime.remote.wire import MAX_DIMS, WireError, pack, unpack  # noqa: E402


@pytest.mark.parametrize("dtype", ["uint8", "int64", "float32", "float64", "bool", "<f2"])
def test_arrays_round_trip_bit_exactly_with_dtype_and_shape(dtype):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((2, 3, 4)) * 100).astype(dtype)
    out = unpack(pack({"x": a, "nested": [{"y": a[:, ::2]}]}))  # a strided view is sent in C order
    assert out["x"].dtype == a.dtype and out["x"].shape == a.shape and out["x"].tobytes() == a.tobytes()
    np.testing.assert_array_equal(out["nested"][0]["y"], a[:, ::2])


def test_the_encoding_is_openpis_bytes_keyed_map():
    """What an openpi client decodes: {b'__ndarray__': True, b'data', b'dtype', b'shape'}; scalars likewise."""
    raw = msgpack.unpackb(pack({"a": np.arange(3, dtype=np.int16), "s": np.float32(1.5)}))
    assert raw["a"] == {b"__ndarray__": True, b"data": np.arange(3, dtype=np.int16).tobytes(), b"dtype": "<i2",
                        b"shape": [3]}
    assert raw["s"] == {b"__npgeneric__": True, b"data": 1.5, b"dtype": "<f4"}
    assert unpack(pack({"s": np.float32(1.5)}))["s"] == np.float32(1.5)


def test_string_keyed_arrays_from_other_clients_decode_too():
    frame = msgpack.packb({"x": {"__ndarray__": True, "data": b"\x01\x02", "dtype": "|u1", "shape": [2]}})
    np.testing.assert_array_equal(unpack(frame)["x"], [1, 2])


def _array(**fields):
    base = {b"__ndarray__": True, b"data": b"\x00" * 8, b"dtype": "<f4", b"shape": [2]}
    base.update({k.encode(): v for k, v in fields.items()})
    return msgpack.packb({"x": base})


@pytest.mark.parametrize("fields, message", [
    ({"dtype": "|O"}, "dtype"),            # object arrays would be pointers from the network
    ({"dtype": "<U2"}, "dtype"),
    ({"dtype": "V8"}, "dtype"),
    ({"dtype": "<c8"}, "dtype"),
    ({"dtype": "[('a', '<f4')]"}, "dtype"),
    ({"dtype": 5}, "dtype"),
    ({"shape": [3]}, "8 data bytes for shape [3]"),
    ({"shape": [-2]}, "shape"),
    ({"shape": [1] * (MAX_DIMS + 1), "data": b"\x00" * 4}, "shape"),
    ({"shape": [2**40, 2**40]}, "has more than 2147483648 values"),
    ({"shape": [0, 2**63], "data": b""}, "has more than 2147483648 values"),  # numpy raised on the reshape
    ({"shape": [0, 2**62, 2**62], "data": b""}, "has more than 2147483648 values"),
    ({"dtype": "(-1,)i4", "data": b""}, "dtype '(-1,)i4' is not accepted"),  # numpy raised ValueError
    ({"shape": "2"}, "shape"),
    ({"data": "text"}, "data bytes"),
])
def test_malformed_arrays_are_refused_by_name(fields, message):
    with pytest.raises(WireError, match="array") as err:
        unpack(_array(**fields))
    assert message in str(err.value)


def test_malformed_frames_are_wire_errors():
    good = pack({"a": np.zeros(4, np.float32)})
    for frame in (good[:-3], good + b"\x00", b"\xc1", b""):
        with pytest.raises(WireError, match="msgpack"):
            unpack(frame)
    with pytest.raises(WireError, match="binary"):
        unpack("text")  # type: ignore[arg-type]
    with pytest.raises(WireError, match="exceeds the limit"):
        unpack(good, max_bytes=len(good) - 1)
    deep = b"\x91" * 5000 + b"\x00"  # 5000 nested one-element arrays
    with pytest.raises(WireError):
        unpack(deep)


def test_plain_arrays_and_maps_are_bounded_in_entries_all_together():
    """A 19 MB frame of 10 000 arrays of 1000 one-element arrays took 746 MB to unpack (Python objects)."""
    nested = msgpack.packb({"proprio": [[[1]] * 1000] * 10_000})
    with pytest.raises(WireError, match="more than 1048576 entries of plain arrays and maps"):
        unpack(nested)
    flat = msgpack.packb({"a": [1] * 600, "b": [{"k": 1}] * 400})  # 600 + 400 maps of 1 + 400 + 2 entries
    assert len(unpack(flat, max_values=1402)["a"]) == 600
    with pytest.raises(WireError, match="more than 1401 entries"):
        unpack(flat, max_values=1401)
    with pytest.raises(WireError, match="exceeds max_array_len"):  # one array too long is refused unbuilt
        unpack(msgpack.packb([0] * 2000), max_values=1999)


def test_unsendable_values_are_refused_before_anything_is_sent():
    with pytest.raises(WireError, match="object"):
        pack({"x": np.array([object()])})
    with pytest.raises(TypeError, match="set"):
        pack({"x": {1, 2}})
