"""Edges of Paillier packing (protocol/packing.py): every bound of a configuration accepted on one
side and refused on the other, the wire form byte for byte, slot sums at and above their bound,
the fixed-point mean's rounding, and the ciphertext checks a miner makes without the key."""

from fractions import Fraction

import numpy as np
import pytest
from paillier_vector_key import AGGREGATE, N2, PACKING, PRIME_P, N

from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.packing import (
    Packing,
    checked_sums,
    flatten,
    mean_fixed,
    pack,
    parse_ciphertexts,
    quantize,
    unflatten,
)

# 2-bit values, 1 update of 1 sample: 1 bit of headroom, 3-bit slots; a 8-bit n holds 2 slots
TINY = Packing(0b1000_0001, 2, 0, 1, 1)


def refusal(call) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        call()
    return info.value


def test_the_tiny_packing_has_two_three_bit_slots():
    assert (TINY.slot_bits, TINY.slots) == (3, 2)


@pytest.mark.parametrize("precision, ok", [(1, False), (2, True), (32, True), (33, False)])
def test_precision_is_2_to_32_bits(precision, ok):
    packing = Packing(N, precision, 0, 1000, 8)
    if ok:
        packing.check()
    else:
        with pytest.raises(ValueError, match="precision"):
            packing.check()


@pytest.mark.parametrize("quota, updates, ok", [(1, 1, True), (0, 1, False), (1, 0, False)])
def test_max_quota_and_max_updates_are_at_least_one(quota, updates, ok):
    packing = Packing(N, 12, 0, quota, updates)
    if ok:
        packing.check()
    else:
        with pytest.raises(ValueError, match="max_quota and max_updates"):
            packing.check()


def test_a_modulus_must_hold_at_least_one_slot():
    """12 + 13 bits of headroom: a 25-bit slot needs a 27-bit n (two top bits stay free)."""
    fits, short = Packing((1 << 26) + 1, 12, 0, 1000, 8), Packing((1 << 25) + 1, 12, 0, 1000, 8)
    fits.check()
    assert fits.slots == 1
    with pytest.raises(ValueError, match="25-bit slot does not fit a 26-bit modulus"):
        short.check()


def test_max_updates_times_max_quota_stays_below_2_to_the_31():
    Packing(N, 12, 0, (1 << 31) - 1, 1).check()
    with pytest.raises(ValueError, match="below 2\\^31"):
        Packing(N, 12, 0, 1 << 15, 1 << 16).check()


def test_ciphertext_count_rounds_up():
    assert [TINY.ciphertext_count(v) for v in (0, 1, 2, 3, 4)] == [0, 1, 1, 2, 2]


def test_packing_parameters_on_the_wire_are_exactly_five_fields_with_n_minimal_big_endian():
    wire = PACKING.to_wire()
    assert wire == {"n": N.to_bytes(64, "big"), "precision": 12, "clip_exp": 0, "max_quota": 1000, "max_updates": 8}
    assert Packing.from_wire(wire) == PACKING


@pytest.mark.parametrize(
    "change",
    [
        {"extra": 1},
        {"n": N},
        {"precision": True},
        {"precision": "12"},
        {"clip_exp": 0.0},
        {"max_quota": None},
        {"max_updates": [8]},
    ],
    ids=["extra key", "n not bytes", "bool", "str", "float", "none", "list"],
)
def test_malformed_packing_parameters_are_refused_as_bad_body(change):
    wire = {**PACKING.to_wire(), **change}
    error = refusal(lambda: Packing.from_wire(wire))
    assert error.reason is Reason.BAD_BODY and "paillier parameters" in error.detail


@pytest.mark.parametrize("missing", ["n", "precision", "clip_exp", "max_quota", "max_updates"])
def test_packing_parameters_missing_a_field_are_refused(missing):
    wire = {k: v for k, v in PACKING.to_wire().items() if k != missing}
    error = refusal(lambda: Packing.from_wire(wire))
    assert error.reason is Reason.BAD_BODY and "must have exactly" in error.detail


def test_packing_parameters_that_do_not_check_are_refused_with_the_reason():
    error = refusal(lambda: Packing.from_wire({**PACKING.to_wire(), "precision": 33}))
    assert error.reason is Reason.BAD_BODY and error.detail == "paillier parameters: precision must be 2..32 bits"
    assert refusal(lambda: Packing.from_wire([PACKING.to_wire()])).reason is Reason.BAD_BODY


def test_flatten_orders_parameters_by_name_row_major_in_binary64():
    delta = {"b": np.array([[1, 2], [3, 4]], np.float32), "a": np.array([5, 6, 7], np.float32)}
    flat = flatten(delta, {"b": (2, 2), "a": (3,)})
    assert flat.dtype == np.float64 and flat.tolist() == [5, 6, 7, 1, 2, 3, 4]


def test_quantization_of_a_float32_delta_is_computed_in_binary64():
    """In float32 arithmetic 0x1.5014fcp-3 quantizes to 2384; the binary64 rule gives 2383."""
    value = np.float32(float.fromhex("0x1.5014fcp-3"))
    assert quantize(flatten({"w": np.array([value])}, {"w": (1,)}), PACKING) == [2383]


def test_unflatten_cuts_values_back_into_named_shapes():
    out = unflatten(list(range(7)), {"c": (1, 2), "a": (2,), "b": (3,)})
    assert {k: v.tolist() for k, v in out.items()} == {"a": [0, 1], "b": [2, 3, 4], "c": [[5, 6]]}


def test_quantize_clips_both_sides_and_rounds_half_to_even():
    """clip_exp 3 (c = 8), 4 bits (top 15): q = rint((clip(d) + 8) * 15 / 16)."""
    packing = Packing(N, 4, 3, 1000, 8)
    values = np.array([-100.0, -8.0, 0.0, 8.0, 100.0, 1.0, -1.0])
    assert quantize(values, packing) == [0, 0, 8, 15, 15, 8, 7]


def test_quantize_with_clip_exp_zero_maps_minus_one_and_one_to_the_ends():
    packing = Packing(N, 4, 0, 1000, 8)
    assert quantize(np.array([-1.0, -0.5, 0.5, 1.0]), packing) == [0, 4, 11, 15]


def test_pack_puts_value_i_times_slots_plus_j_in_slot_j():
    assert pack([1, 2, 3], TINY) == [1 | 2 << 3, 3]
    assert pack([6, 5, 4, 7], TINY) == [6 | 5 << 3, 4 | 7 << 3]
    assert pack([], TINY) == []


def test_slot_sums_up_to_their_bound_are_read_back():
    """Weight 2 and 2-bit values: a slot sum may reach 2 * 3 = 6, and the last plaintext may use one slot."""
    assert checked_sums(pack([6, 5, 4], TINY), 3, 2, TINY) == [6, 5, 4]
    assert checked_sums(pack([0, 1, 2, 3], TINY), 4, 2, TINY) == [0, 1, 2, 3]


def test_a_slot_sum_one_above_its_bound_voids_the_round():
    assert checked_sums(pack([7, 5, 4], TINY), 3, 2, TINY) is None
    assert checked_sums(pack([6, 5, 7], TINY), 3, 2, TINY) is None


@pytest.mark.parametrize(
    "plaintexts",
    [[6 | 5 << 3 | 1 << 6, 4], [6 | 5 << 3, 4 | 1 << 3]],
    ids=["above the last slot", "in an unused slot"],
)
def test_a_bit_outside_the_used_slots_voids_the_round(plaintexts):
    assert checked_sums(plaintexts, 3, 2, TINY) is None


def test_more_or_fewer_plaintexts_than_the_count_needs_void_the_round():
    assert checked_sums([6 | 5 << 3, 4 | 3 << 3, 0], 4, 2, TINY) is None  # an extra, empty plaintext
    assert checked_sums([6 | 5 << 3, 4, 1], 3, 2, TINY) is None
    assert checked_sums([6 | 5 << 3], 3, 2, TINY) is None


def exact_mean(s: int, samples: int, packing: Packing, frac_bits: int) -> int:
    top = (1 << packing.precision) - 1
    x = (Fraction(2 * s, samples * top) - 1) * 2 ** (packing.clip_exp + frac_bits)
    return int(np.floor(x + Fraction(1, 2)))


@pytest.mark.parametrize("clip_exp, frac_bits", [(0, 0), (1, 4), (3, 2), (-2, 5)])
def test_mean_fixed_is_the_exact_sample_weighted_mean_rounded_half_up(clip_exp, frac_bits):
    packing, samples = Packing(N, 4, clip_exp, 1000, 8), 7
    sums = list(range(samples * 15 + 1))
    got = mean_fixed(sums, samples, packing, frac_bits)
    assert got == [exact_mean(s, samples, packing, frac_bits) for s in sums]
    assert all(type(x) is int for x in got)


def test_mean_fixed_rounds_an_exact_half_up():
    """2-bit values, 4 samples summing to 3: mean 2 * 3 / 12 - 1 = -1/2, which rounds to 0."""
    assert mean_fixed([3, 0, 12], 4, TINY, 0) == [0, -1, 1]


def test_mean_fixed_refuses_a_negative_scale():
    with pytest.raises(ValueError, match="clip_exp \\+ frac_bits must be >= 0"):
        mean_fixed([1], 1, Packing(N, 4, -3, 1000, 8), 2)


def test_ciphertexts_of_the_right_count_size_and_range_are_read():
    wire = [c.to_bytes(128, "big") for c in AGGREGATE]
    assert parse_ciphertexts(wire, 40, PACKING) == AGGREGATE
    edges = [1, N2 - 1]
    assert parse_ciphertexts([c.to_bytes(128, "big") for c in edges], 21, PACKING) == edges


@pytest.mark.parametrize("values", [20, 41])
def test_a_wrong_number_of_ciphertexts_is_a_bad_shape(values):
    wire = [c.to_bytes(128, "big") for c in AGGREGATE]
    error = refusal(lambda: parse_ciphertexts(wire, values, PACKING))
    assert error.reason is Reason.BAD_SHAPE and error.detail.startswith("expected ")


@pytest.mark.parametrize(
    "value",
    [b"", {0: b""}, [AGGREGATE[0], AGGREGATE[1]], [b"\x01" * 127, b"\x01" * 128], [b"\x01" * 128, b"\x01" * 129]],
)
def test_ciphertexts_that_are_not_two_128_byte_strings_are_a_bad_shape(value):
    error = refusal(lambda: parse_ciphertexts(value, 40, PACKING))
    assert error.reason is Reason.BAD_SHAPE and error.detail


@pytest.mark.parametrize("c", [0, N, PRIME_P * 5, N2, N2 + 1], ids=["0", "n", "multiple of p", "n^2", "n^2 + 1"])
def test_a_ciphertext_outside_z_star_n_squared_is_out_of_range(c):
    wire = [AGGREGATE[0].to_bytes(128, "big"), c.to_bytes(128, "big")]
    error = refusal(lambda: parse_ciphertexts(wire, 40, PACKING))
    assert error.reason is Reason.OUT_OF_RANGE and "outside" in error.detail
