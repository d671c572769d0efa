"""The decoder's pre-scan at its edges: the exact item and depth bounds, every argument width, each
kind of truncation, reserved values, floats of every width, and where map keys are checked.
`scan` is what bounds a hostile peer's cost before any object is built, so its own refusals (and
their details) are what these tests pin down."""

import cbor2
import pytest

from edge_sdk.protocol import codec
from edge_sdk.protocol.errors import ProtocolError, Reason


def refused(data, why: str = "") -> ProtocolError:
    with pytest.raises(ProtocolError) as err:
        codec.decode(data)
    assert err.value.reason is Reason.BAD_ENCODING and why in err.value.detail
    return err.value


def test_decode_takes_bytes_bytearray_and_memoryview_only():
    for data in (b"\x01", bytearray(b"\x01"), memoryview(b"\x01")):
        assert codec.decode(data) == 1
    for data in ("01", 1, None, [1]):
        assert refused(data).detail == "not bytes"


def test_items_are_bounded_at_exactly_256_plus_size_over_16():
    at_bound = cbor2.dumps([[]] * 272)  # 273 items in 275 bytes: 256 + 275 // 16 = 273
    assert codec.decode(at_bound) == [[]] * 272
    assert codec.encode([[]] * 272) == at_bound
    refused(cbor2.dumps([[]] * 273), "more than 273 items")  # 274 items in 276 bytes
    with pytest.raises(TypeError, match="more than 273 items"):
        codec.encode([[]] * 273)


def nested(levels: int, inner=1):
    value = inner
    for _ in range(levels):
        value = [value]
    return value


def test_16_levels_of_nesting_decode_and_17_do_not():
    assert codec.decode(codec.encode(nested(16))) == nested(16)
    assert codec.decode(codec.encode(nested(14, {"a": [1]}))) == nested(14, {"a": [1]})
    refused(cbor2.dumps(nested(17)), "nested too deeply")
    with pytest.raises(TypeError, match="nested too deeply"):
        codec.encode(nested(17))
    with pytest.raises(TypeError, match="nested too deeply"):
        codec.encode(nested(8, {"a": nested(8, {"b": 1})}))


def test_a_value_nested_thousands_deep_is_refused_without_recursing_into_it():
    with pytest.raises(TypeError, match="nested too deeply"):
        codec.encode(nested(5000))
    deep: dict = {}
    for _ in range(5000):
        deep = {"a": deep}
    with pytest.raises(TypeError, match="nested too deeply"):
        codec.encode(deep)


@pytest.mark.parametrize(
    "value, wire",
    [
        (23, "17"),
        (24, "1818"),
        (255, "18ff"),
        (256, "190100"),
        (65535, "19ffff"),
        (65536, "1a00010000"),
        (2**32 - 1, "1affffffff"),
        (2**32, "1b0000000100000000"),
        (2**64 - 1, "1bffffffffffffffff"),
        (-1, "20"),
        (-25, "3818"),
        (-(2**64), "3bffffffffffffffff"),
        ([-3, 1, 2], "83220102"),
        (b"\x00" * 24, "5818" + "00" * 24),
        ("é" * 12, "7818" + "c3a9" * 12),
    ],
)
def test_every_argument_width_round_trips_to_the_exact_bytes(value, wire):
    assert codec.encode(value).hex() == wire
    assert codec.decode(bytes.fromhex(wire)) == value


@pytest.mark.parametrize(
    "wire",
    [
        "19",  # a 2-byte argument with none of its bytes
        "1901",  # ... with one of them
        "1b00000000",  # an 8-byte argument with four
        "828100",  # the second item of an array is missing after a nested one
        "436162",  # a 3-byte string with 2 bytes
        "8201656162",  # a 5-character text with 2 characters, inside an array
    ],
)
def test_a_truncated_head_or_item_is_refused_as_truncated(wire):
    refused(bytes.fromhex(wire), "truncated")


def test_a_container_claiming_more_items_than_bytes_remain_is_truncated_at_its_head():
    refused(b"\x81" * 17, "truncated")  # the 17th array claims an item with no byte left
    refused(b"\x9b" + (1 << 62).to_bytes(8, "big") + b"\x00" * 16, "truncated")


@pytest.mark.parametrize("head", [0x1C, 0x1D, 0x1E, 0x5C, 0x9D, 0xBE])
def test_reserved_argument_sizes_are_refused(head):
    refused(bytes([head]) + bytes(32), "indefinite length or reserved value")


@pytest.mark.parametrize("wire", ["1817", "a2616201616101", "fa3fc00000", "fb0000000000000000", "5800"])
def test_a_well_formed_value_in_a_longer_form_than_needed_is_refused_as_not_canonical(wire):
    assert refused(bytes.fromhex(wire)).detail == "not in canonical form"


def test_text_that_is_not_utf8_is_refused():
    refused(b"\x61\xff", "not CBOR")


@pytest.mark.parametrize("value", [0.0, -0.0, 1.5, -2.5, 0.1, 1e300, 5e-324, 65504.0, 3.4028234663852886e38])
def test_finite_floats_of_every_width_round_trip(value):
    data = codec.encode(value)
    assert codec.decode(data) == value and str(codec.decode(data)) == str(value)


@pytest.mark.parametrize(
    "wire",
    [
        "f97c00",
        "f9fc00",
        "f97e00",
        "fa7f800000",
        "faff800000",
        "fa7fc00000",
        "fb7ff0000000000000",
        "fbfff8000000000000",
    ],
)
def test_infinities_and_nans_of_every_width_are_refused(wire):
    refused(bytes.fromhex(wire), "non-finite float")


def test_the_simple_values_allowed_are_false_true_and_null():
    assert codec.decode(bytes.fromhex("83f4f5f6")) == [False, True, None]
    for wire in ("f0", "f3", "f7", "f818", "f8ff"):
        refused(bytes.fromhex(wire), "only false, true, null")


@pytest.mark.parametrize(
    "wire",
    [
        "a2016161616102",  # {1: "a", "a": 2}: the first of two keys
        "a261610141610201",  # {"a": 1, b"a": 2}: a byte-string key
        "a3616101616202f503",  # {"a": 1, "b": 2, true: 3}: the last of three keys
        "a1616181a10101",  # a key inside a map inside an array inside a map
    ],
)
def test_every_map_key_must_be_text(wire):
    refused(bytes.fromhex(wire), "map keys must be text")


def test_maps_with_several_entries_of_any_value_decode():
    value = {"a": 1, "b": [2, 3], "c": {"d": None}, "e": b"x", "f": 1.5}
    assert codec.decode(codec.encode(value)) == value


@pytest.mark.parametrize("tag", ["c0", "c1", "d818", "d9d9f7"])
def test_tags_are_refused_as_tags(tag):
    refused(bytes.fromhex(tag + "01"), "tags are not allowed")
