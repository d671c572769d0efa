import cbor2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_sdk.protocol import codec
from edge_sdk.protocol.errors import ProtocolError, Reason

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64) + 1, 2**64 - 1)
    | st.binary(max_size=64)
    | st.text(max_size=16)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(plain)
def test_round_trip_is_exact(value):
    data = codec.encode(value)
    assert codec.decode(data) == value
    assert codec.encode(codec.decode(data)) == data


@given(st.binary(max_size=256))
@settings(max_examples=1000)
def test_garbage_is_a_typed_error_or_canonical(data):
    try:
        value = codec.decode(data)
    except ProtocolError as exc:
        assert exc.reason is Reason.BAD_ENCODING
    else:
        assert codec.encode(value) == data


def test_non_canonical_forms_are_refused():
    non_canonical = [
        bytes.fromhex("1817"),  # 23 in a two-byte form
        bytes.fromhex("a2616201616101"),  # map keys out of order
        bytes.fromhex("0102"),  # trailing byte
        bytes.fromhex("fa3fc00000"),  # 1.5 as float32 where float16 suffices
        bytes.fromhex("5f4161ff"),  # indefinite length
        bytes.fromhex("c11a00000001"),  # a tag
        bytes.fromhex("f7"),  # undefined
        bytes.fromhex("a2616101616102"),  # duplicate key
        bytes.fromhex("a10101"),  # integer map key
        bytes.fromhex("f97e00"),  # NaN
    ]
    for data in non_canonical:
        with pytest.raises(ProtocolError) as info:
            codec.decode(data)
        assert info.value.reason is Reason.BAD_ENCODING, data.hex()


def test_deep_nesting_is_refused():
    with pytest.raises(ProtocolError):
        codec.decode(cbor2.dumps([[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]))


@given(
    st.sampled_from(["<f4", "<f8", "<i4", "<i8"]),
    st.lists(st.integers(0, 5), min_size=0, max_size=3),
)
def test_array_round_trip(dtype, shape):
    arr = (np.arange(int(np.prod(shape))) - 3).astype(dtype).reshape(shape)
    back = codec.decode_array(codec.decode(codec.encode(codec.encode_array(arr))))
    assert back.dtype == np.dtype(dtype) and back.shape == tuple(shape)
    assert np.array_equal(back, arr)


def test_big_endian_arrays_travel_little_endian():
    arr = np.array([1.5, -2.0], dtype=">f4")
    wire = codec.encode_array(arr)
    assert wire["data"] == np.array([1.5, -2.0], dtype="<f4").tobytes()


@pytest.mark.parametrize(
    "value, reason",
    [
        ({"dtype": "f2", "shape": [1], "data": b"\0\0"}, Reason.BAD_BODY),
        ({"dtype": "f4", "shape": [2], "data": b"\0\0\0\0"}, Reason.BAD_BODY),
        ({"dtype": "f4", "shape": [-1], "data": b""}, Reason.BAD_BODY),
        ({"dtype": "f4", "shape": [1 << 20, 1 << 20], "data": b""}, Reason.TOO_LARGE),
        ({"dtype": "f4", "shape": [1]}, Reason.BAD_BODY),
    ],
)
def test_bad_arrays_are_typed_errors(value, reason):
    with pytest.raises(ProtocolError) as info:
        codec.decode_array(value)
    assert info.value.reason is reason
