"""Fixed-point model parameters: the canonical, bit-identical form of a global model.

A model is a dict name -> int64 array of fixed-point values with `frac_bits` fractional bits.
Floats exist only at the edges (training, evaluation): integer state means every CPU computes the
same bytes, and the model hash means the same thing everywhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np

from edge_sdk.protocol import codec
from edge_sdk.protocol.errors import ProtocolError, Reason

Model = dict[str, np.ndarray]
MODEL_HASH_DOMAIN = b"BLOCKFL-EDGE/model\x00"


def to_fixed(arrays: Mapping[str, np.ndarray], frac_bits: int) -> Model:
    """Round float parameters to fixed point (round half to even, exact for float32/float64 input)."""
    scale = float(1 << frac_bits)
    out = {}
    for name, value in arrays.items():
        x = np.asarray(value, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError(f"parameter {name} has non-finite values")
        if np.any(np.abs(x) * scale >= 2.0**62):
            raise ValueError(f"parameter {name} does not fit in fixed point with {frac_bits} fractional bits")
        out[name] = np.rint(x * scale).astype("<i8")
    return out


def to_float(model: Mapping[str, np.ndarray], frac_bits: int, dtype=np.float32) -> dict[str, np.ndarray]:
    scale = 1.0 / float(1 << frac_bits)
    return {name: (value.astype(np.float64) * scale).astype(dtype) for name, value in model.items()}


def encode_model(model: Mapping[str, np.ndarray], frac_bits: int) -> dict:
    """Canonical CBOR value of a model: {"frac_bits", "params": {name: int64 array}}."""
    return {
        "frac_bits": frac_bits,
        "params": {name: codec.encode_array(np.asarray(v, dtype="<i8")) for name, v in model.items()},
    }


def decode_model(value: dict) -> tuple[Model, int]:
    if not isinstance(value, dict) or set(value) != {"frac_bits", "params"} or not isinstance(value["params"], dict):
        raise ProtocolError(Reason.BAD_BODY, "model must be a map of frac_bits, params")
    frac_bits = value["frac_bits"]
    if not isinstance(frac_bits, int) or isinstance(frac_bits, bool) or not 0 <= frac_bits <= 40:
        raise ProtocolError(Reason.BAD_BODY, "frac_bits must be an integer in [0, 40]")
    model = {}
    for name, array in value["params"].items():
        arr = codec.decode_array(array)
        if arr.dtype != np.dtype("<i8"):
            raise ProtocolError(Reason.BAD_BODY, f"parameter {name} must be i8")
        model[name] = arr
    return model, frac_bits


def model_hash(model: Mapping[str, np.ndarray], frac_bits: int) -> bytes:
    """SHA-256(MODEL_HASH_DOMAIN || canonical CBOR of encode_model)."""
    return hashlib.sha256(MODEL_HASH_DOMAIN + codec.encode(encode_model(model, frac_bits))).digest()
