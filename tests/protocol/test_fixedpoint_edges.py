"""Fixed-point models at their edges: exact rounding, the 2^62 bound, the wire form of a model and
what decode_model refuses (every refusal a ProtocolError with reason bad_body)."""

import numpy as np
import pytest

from edge_sdk.protocol import codec
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.fixedpoint import decode_model, encode_model, model_hash, to_fixed, to_float


def test_to_fixed_scales_by_2_to_the_frac_bits_and_rounds_half_to_even():
    fixed = to_fixed({"w": [0.5, -1.25, 3.0]}, 4)
    assert fixed["w"].tolist() == [8, -20, 48]
    assert fixed["w"].dtype == np.dtype("<i8")
    halves = to_fixed({"w": [0.5 / 16, 1.5 / 16, 2.5 / 16, -0.5 / 16]}, 4)
    assert halves["w"].tolist() == [0, 2, 2, 0]


def test_to_fixed_of_half_precision_input_is_exact():
    """Float16 parameters are widened first: scaled in float16, 1.0 * 2^20 would overflow."""
    fixed = to_fixed({"w": np.array([1.0, -0.5], np.float16)}, 20)
    assert fixed["w"].tolist() == [1 << 20, -(1 << 19)]


def test_to_fixed_refuses_non_finite_values():
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match="non-finite"):
            to_fixed({"w": [1.0, bad]}, 8)


def test_to_fixed_refuses_values_of_2_to_the_62_and_above():
    with pytest.raises(ValueError, match="does not fit"):
        to_fixed({"w": [2.0**62]}, 0)
    with pytest.raises(ValueError, match="does not fit"):
        to_fixed({"w": [-(2.0**52)]}, 10)
    below = 2.0**62 - 2.0**10  # the largest double under the bound
    assert to_fixed({"w": [below, -below, 1000.0]}, 0)["w"].tolist() == [int(below), -int(below), 1000]


def test_to_float_divides_by_2_to_the_frac_bits():
    back = to_float({"w": np.array([8, -20, 1], "<i8")}, 4)
    assert back["w"].dtype == np.float32
    assert back["w"].tolist() == [0.5, -1.25, 0.0625]
    assert to_float({"w": np.array([3], "<i8")}, 1, dtype=np.float64)["w"].dtype == np.float64


def test_encode_model_always_sends_int64():
    wire = encode_model({"w": np.array([1, -2], np.int32)}, 3)
    array = {"dtype": "i8", "shape": [2], "data": np.array([1, -2], "<i8").tobytes()}
    assert wire == {"frac_bits": 3, "params": {"w": array}}
    assert model_hash({"w": np.array([1, -2], np.int32)}, 3) == model_hash({"w": np.array([1, -2], "<i8")}, 3)


def test_model_hash_depends_on_values_and_frac_bits():
    model = {"w": np.array([1, 2], "<i8")}
    assert model_hash(model, 3) != model_hash(model, 4)
    assert model_hash(model, 3) != model_hash({"w": np.array([1, 3], "<i8")}, 3)


def test_decode_model_round_trips():
    model = {"w": np.array([[1, -2], [3, 4]], "<i8"), "b": np.array([7], "<i8")}
    back, frac_bits = decode_model(codec.decode(codec.encode(encode_model(model, 12))))
    assert frac_bits == 12
    assert set(back) == {"w", "b"}
    assert all(np.array_equal(back[k], model[k]) for k in model)


def _wire(**over):
    wire = encode_model({"w": np.array([1], "<i8")}, 8)
    wire.update(over)
    return wire


@pytest.mark.parametrize(
    "value",
    [
        [],
        "model",
        {"frac_bits": 8},
        {**_wire(), "extra": 1},
        _wire(params=[]),
        _wire(params={"w": codec.encode_array(np.array([1], "<i4"))}),
        _wire(params={"w": codec.encode_array(np.array([1.0], "<f8"))}),
    ],
)
def test_decode_model_refuses_malformed_models(value):
    with pytest.raises(ProtocolError) as err:
        decode_model(value)
    assert err.value.reason is Reason.BAD_BODY and err.value.detail


@pytest.mark.parametrize("frac_bits", [-1, 41, True, 8.0, "8", None])
def test_decode_model_refuses_frac_bits_outside_0_to_40(frac_bits):
    with pytest.raises(ProtocolError) as err:
        decode_model(_wire(frac_bits=frac_bits))
    assert err.value.reason is Reason.BAD_BODY and err.value.detail


@pytest.mark.parametrize("frac_bits", [0, 40])
def test_decode_model_accepts_frac_bits_0_and_40(frac_bits):
    assert decode_model(_wire(frac_bits=frac_bits))[1] == frac_bits
