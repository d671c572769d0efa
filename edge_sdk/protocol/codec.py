"""Deterministic CBOR: one byte string per value, so signatures and hashes agree everywhere.

Encoding is RFC 8949 core deterministic encoding (shortest lengths, sorted map keys, no
indefinite lengths). Decoding accepts only plain data (int, bytes, text, array, map with text
keys, bool, null, finite float) and only input that re-encodes to the very same bytes, so there
is exactly one accepted encoding of every value.
"""

from __future__ import annotations

import math
from typing import Any

import cbor2
import numpy as np

from edge_sdk.protocol.errors import ProtocolError, Reason

MAX_DEPTH = 16
INT_MIN, INT_MAX = -(1 << 64), (1 << 64) - 1  # CBOR major types 0 and 1
# data items in one decoded value: at most 256 + size/16 (a string is one item, whatever its length);
# each item becomes a Python object of about 70 bytes
ITEMS_BASE, BYTES_PER_ITEM = 256, 16
MAX_ITEMS = 1 << 19  # and never more: a snapshot of every header fits (the broker's 64 MiB packet limit comes first)
_SIMPLE_OK = (20, 21, 22)  # false, true, null
_FLOATS = (25, 26, 27)  # half, single, double
_FLOAT_EXPONENT = {25: 0x7C00, 26: 0x7F80_0000, 27: 0x7FF0_0000_0000_0000}

# Wire dtype names -> numpy little-endian dtypes. Arrays travel as raw little-endian bytes.
DTYPES = {"f4": np.dtype("<f4"), "f8": np.dtype("<f8"), "i4": np.dtype("<i4"), "i8": np.dtype("<i8")}
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
MAX_NDIM = 8


def encode(value: Any) -> bytes:
    """Canonical bytes of a plain value."""
    _check_plain(value, 0)
    data = cbor2.dumps(value, canonical=True)
    try:
        scan(data)  # what a receiver would refuse (depth, item bound) is not made either
    except ProtocolError as exc:
        raise TypeError(f"not encodable within the protocol's limits: {exc.detail}") from None
    return data


def decode(data: bytes) -> Any:
    """Parse canonical CBOR; any other input raises ProtocolError(BAD_ENCODING)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(Reason.BAD_ENCODING, "not bytes")
    data = bytes(data)
    scan(data)  # before any object is built: the allowed subset, bounded, in one linear pass
    try:
        value = cbor2.loads(data, allow_indefinite=False, allow_duplicate_keys=False, max_depth=MAX_DEPTH)
    except Exception as exc:  # cbor2 raises several types on garbage; all mean the same here
        raise ProtocolError(Reason.BAD_ENCODING, f"not CBOR: {type(exc).__name__}") from None
    # scan admitted only plain data (text keys, no tags, finite floats, bounded depth): no second walk
    if cbor2.dumps(value, canonical=True) != data:
        raise ProtocolError(Reason.BAD_ENCODING, "not in canonical form")
    return value


def scan(data: bytes) -> None:
    """Check the item structure of `data` without building values: well-formed, only the allowed
    items (no tags, so no bignums, shared values or string references; no indefinite lengths, no
    `undefined` or other simple values; map keys are text strings, so no key can be made to collide
    with others when the map is built), at most MAX_DEPTH levels and ITEMS_BASE + len(data) /
    BYTES_PER_ITEM items (memory stays within a small multiple of the input), nothing after the
    value. One pass, constant work per item; byte and text strings are skipped by their length.
    """
    n, pos, items = len(data), 0, 0
    most = min(MAX_ITEMS, ITEMS_BASE + n // BYTES_PER_ITEM)
    pending, in_map = [1], [False]  # items still to read at each open level, and whether it is a map
    while pending:
        if pending[-1] == 0:
            pending.pop()
            in_map.pop()
            continue
        pending[-1] -= 1
        is_key = in_map[-1] and pending[-1] % 2 == 1  # a map level reads key, value, key, value, ...
        if pos >= n:
            raise ProtocolError(Reason.BAD_ENCODING, "truncated")
        head = data[pos]
        pos += 1
        items += 1
        if items > most:
            raise ProtocolError(Reason.BAD_ENCODING, f"more than {most} items")
        major, info = head >> 5, head & 31
        if is_key and major != 3:
            raise ProtocolError(Reason.BAD_ENCODING, "map keys must be text")
        if info < 24:
            arg = info
        elif info <= 27:
            width = 1 << (info - 24)
            if pos + width > n:
                raise ProtocolError(Reason.BAD_ENCODING, "truncated")
            arg = int.from_bytes(data[pos : pos + width], "big")
            pos += width
        else:
            raise ProtocolError(Reason.BAD_ENCODING, "indefinite length or reserved value")
        if major <= 1:  # unsigned and negative integers
            continue
        if major <= 3:  # byte and text strings
            if arg > n - pos:
                raise ProtocolError(Reason.BAD_ENCODING, "truncated")
            pos += arg
        elif major <= 5:  # arrays and maps: every item takes at least one byte
            count = arg if major == 4 else 2 * arg
            if count > n - pos:
                raise ProtocolError(Reason.BAD_ENCODING, "truncated")
            if len(pending) > MAX_DEPTH:
                raise ProtocolError(Reason.BAD_ENCODING, "nested too deeply")
            pending.append(count)
            in_map.append(major == 5)
        elif major == 6:
            raise ProtocolError(Reason.BAD_ENCODING, "tags are not allowed")
        elif info in _FLOATS:
            exponent = _FLOAT_EXPONENT[info]
            if arg & exponent == exponent:  # all exponent bits set: infinity or NaN
                raise ProtocolError(Reason.BAD_ENCODING, "non-finite float")
        elif info not in _SIMPLE_OK:
            raise ProtocolError(Reason.BAD_ENCODING, "only false, true, null and floats are allowed")
    if pos != n:
        raise ProtocolError(Reason.BAD_ENCODING, "bytes after the value")


def show(value: Any, limit: int = 40) -> str:
    """A short rendering of a peer's value for an error message, whatever it is."""
    try:
        text = repr(value)
    except ValueError:  # an int too large to print
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_plain(value: Any, depth: int) -> None:
    """What `encode` may encode: plain data only (decoding checks the same in `scan`)."""
    if depth > MAX_DEPTH:
        raise TypeError("nested too deeply")
    if value is None or isinstance(value, (bool, bytes, str)):
        return
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:  # would need a bignum tag
            raise TypeError("integer outside [-2^64, 2^64 - 1]")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError("non-finite float")
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_plain(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError("map keys must be text")
            _check_plain(item, depth + 1)
        return
    raise TypeError(f"type {type(value).__name__} is not allowed")


def encode_array(array: np.ndarray) -> dict:
    """{"dtype", "shape", "data"} with little-endian raw bytes."""
    dtype = np.dtype(array.dtype).newbyteorder("<")
    if dtype not in _DTYPE_NAMES:
        raise TypeError(f"dtype {array.dtype} has no wire form")
    return {
        "dtype": _DTYPE_NAMES[dtype],
        "shape": [int(d) for d in array.shape],
        "data": np.ascontiguousarray(array, dtype=dtype).tobytes(),
    }


def decode_array(value: Any, *, max_elements: int = 1 << 26) -> np.ndarray:
    """Inverse of encode_array; malformed input raises ProtocolError(BAD_BODY)."""
    if not isinstance(value, dict) or set(value) != {"dtype", "shape", "data"}:
        raise ProtocolError(Reason.BAD_BODY, "array must be a map of dtype, shape, data")
    dtype = DTYPES.get(value["dtype"]) if isinstance(value["dtype"], str) else None
    shape = value["shape"]
    data = value["data"]
    if dtype is None:
        raise ProtocolError(Reason.BAD_BODY, f"unknown dtype {show(value['dtype'])}")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_NDIM
        or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= max_elements for d in shape)
    ):
        raise ProtocolError(Reason.BAD_BODY, "bad shape")
    count = math.prod(shape)
    if count > max_elements:
        raise ProtocolError(Reason.TOO_LARGE, f"{count} elements")
    if not isinstance(data, bytes) or len(data) != count * dtype.itemsize:
        raise ProtocolError(Reason.BAD_BODY, "data length does not match dtype and shape")
    return np.frombuffer(data, dtype=dtype).reshape(shape)
