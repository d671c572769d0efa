"""What the codec encodes and how arrays travel, at the edges: the integer range, non-plain types
anywhere in a value, the bounded rendering of peer values, and every malformed array."""

import math

import numpy as np
import pytest

from edge_sdk.protocol import codec
from edge_sdk.protocol.errors import ProtocolError, Reason


def test_the_integer_range_is_exactly_minus_2_64_to_2_64_minus_1():
    for value in (-(2**64), 2**64 - 1):
        assert codec.decode(codec.encode([value])) == [value]
    for value in (-(2**64) - 1, 2**64):
        with pytest.raises(TypeError, match="integer outside"):
            codec.encode({"a": [value]})


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_floats_are_not_encoded(value):
    with pytest.raises(TypeError, match="non-finite"):
        codec.encode([value])


@pytest.mark.parametrize(
    "value",
    [bytearray(b"x"), [bytearray(b"x")], {"a": bytearray(b"x")}, [1, {"a": [memoryview(b"x")]}], {1, 2}, [object()]],
)
def test_values_that_would_not_decode_to_themselves_are_not_encoded(value):
    with pytest.raises(TypeError, match="is not allowed"):
        codec.encode(value)


def test_map_keys_must_be_text_to_be_encoded():
    with pytest.raises(TypeError, match="map keys must be text"):
        codec.encode([{"a": 1}, {1: "a"}])


def test_plain_scalars_encode():
    assert codec.encode([None, True, False, b"", ""]).hex() == "85f6f5f44060"


def test_show_keeps_short_values_and_cuts_long_ones_to_the_limit():
    assert codec.show("x" * 38) == repr("x" * 38)  # 40 characters with the quotes
    assert codec.show("x" * 39) == repr("x" * 39)[:37] + "..."
    assert len(codec.show(list(range(1000)))) == 40
    assert codec.show(b"abcdef", limit=6) == "b'a..."
    assert codec.show(b"abc", limit=6) == "b'abc'"


def test_every_wire_dtype_round_trips():
    for dtype in ("<f4", "<f8", "<i4", "<i8"):
        array = np.array([[1, -2, 3]], dtype)
        wire = codec.encode_array(array)
        assert (wire["dtype"], wire["shape"]) == (dtype[1:], [1, 3])
        assert wire["data"] == array.tobytes()
        back = codec.decode_array(wire)
        assert back.dtype == np.dtype(dtype) and np.array_equal(back, array)


@pytest.mark.parametrize("dtype", ["<i2", "<u8", "bool", "<f2", "<c8"])
def test_dtypes_without_a_wire_form_are_not_encoded(dtype):
    with pytest.raises(TypeError, match="has no wire form"):
        codec.encode_array(np.zeros(2, dtype))


def test_a_non_contiguous_array_travels_in_logical_order():
    array = np.arange(6, dtype="<i4").reshape(2, 3).T
    assert codec.encode_array(array)["data"] == np.array([0, 3, 1, 4, 2, 5], "<i4").tobytes()


def array(shape, dtype="f4", data=None):
    count = math.prod(shape) if isinstance(shape, list) and all(isinstance(d, int) for d in shape) else 1
    return {"dtype": dtype, "shape": shape, "data": bytes(4 * count) if data is None else data}


def test_dimensions_of_0_and_up_to_8_dimensions_are_accepted():
    assert codec.decode_array(array([0])).shape == (0,)
    assert codec.decode_array(array([3, 0, 2])).shape == (3, 0, 2)
    assert codec.decode_array(array([1] * 8)).shape == (1,) * 8


def test_the_element_bound_is_inclusive():
    assert codec.decode_array(array([4]), max_elements=4).shape == (4,)
    assert codec.decode_array(array([2, 2]), max_elements=4).shape == (2, 2)
    with pytest.raises(ProtocolError) as err:
        codec.decode_array(array([5]), max_elements=4)
    assert err.value.reason is Reason.BAD_BODY
    with pytest.raises(ProtocolError) as err:
        codec.decode_array(array([3, 3]), max_elements=8)
    assert err.value.reason is Reason.TOO_LARGE and err.value.detail == "9 elements"


@pytest.mark.parametrize(
    "value",
    [
        [],
        {**array([1]), "extra": 1},
        array([1], dtype=["f4"]),
        array([1], dtype={"f4": 1}),
        array([1], dtype=4),
        array(5),
        array("ab"),
        array([1] * 9),
        array([2.0]),
        array([True]),
        array([-1], data=b""),
        array([1], data="abcd"),
        array([1], data=[0, 0, 0, 0]),
        array([2], data=bytes(4)),
        array([1], data=bytes(8)),
    ],
)
def test_malformed_arrays_are_bad_body(value):
    with pytest.raises(ProtocolError) as err:
        codec.decode_array(value)
    assert err.value.reason is Reason.BAD_BODY and err.value.detail
