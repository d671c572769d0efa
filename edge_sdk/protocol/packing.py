"""The packing of Paillier plaintexts: the wire form every node checks without the key.

A value d is clipped to [-2^clip_exp, 2^clip_exp] and quantized to q in [0, 2^precision - 1];
the device multiplies by its sample count n (so miners only add) and packs `slots` values into
one plaintext, each in a slot of `slot_bits` = precision + headroom bits. Headroom covers the
largest possible round, max_updates devices at max_quota samples, so slot sums never carry into
their neighbours (BatchCrypt, USENIX ATC 2020). `mean_fixed` turns decrypted slot sums into the
exact fixed-point mean every node derives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gmpy2
import numpy as np

from edge_sdk.protocol.errors import ProtocolError, Reason


@dataclass(frozen=True)
class Packing:
    n: int  # Paillier modulus (public)
    precision: int  # bits per quantized value
    clip_exp: int  # values are clipped to +-2^clip_exp
    max_quota: int  # most samples any certificate may grant
    max_updates: int  # most updates per block

    @property
    def headroom(self) -> int:
        return math.ceil(math.log2(self.max_updates * self.max_quota + 1))

    @property
    def slot_bits(self) -> int:
        return self.precision + self.headroom

    @property
    def slots(self) -> int:
        return (self.n.bit_length() - 2) // self.slot_bits

    @property
    def ciphertext_bytes(self) -> int:
        return (2 * self.n.bit_length() + 7) // 8

    def check(self) -> None:
        """Refuse a configuration whose sums could overflow a slot or the plaintext."""
        if not 2 <= self.precision <= 32:
            raise ValueError("precision must be 2..32 bits")
        if self.max_quota < 1 or self.max_updates < 1:
            raise ValueError("max_quota and max_updates must be >= 1")
        if self.slots < 1:
            raise ValueError(f"a {self.slot_bits}-bit slot does not fit a {self.n.bit_length()}-bit modulus")
        if self.max_updates * self.max_quota >= 1 << 31:
            raise ValueError("max_updates * max_quota must stay below 2^31")

    def ciphertext_count(self, values: int) -> int:
        return -(-values // self.slots)

    def to_wire(self) -> dict:
        return {
            "n": self.n.to_bytes((self.n.bit_length() + 7) // 8, "big"),
            "precision": self.precision,
            "clip_exp": self.clip_exp,
            "max_quota": self.max_quota,
            "max_updates": self.max_updates,
        }

    @classmethod
    def from_wire(cls, value) -> Packing:
        keys = {"n", "precision", "clip_exp", "max_quota", "max_updates"}
        if not isinstance(value, dict) or set(value) != keys or not isinstance(value["n"], bytes):
            raise ProtocolError(Reason.BAD_BODY, f"paillier parameters must have exactly {sorted(keys)}")
        if not all(isinstance(value[k], int) and not isinstance(value[k], bool) for k in keys - {"n"}):
            raise ProtocolError(Reason.BAD_BODY, "paillier parameters must be integers")
        packing = cls(
            int.from_bytes(value["n"], "big"),
            value["precision"],
            value["clip_exp"],
            value["max_quota"],
            value["max_updates"],
        )
        try:
            packing.check()
        except ValueError as exc:
            raise ProtocolError(Reason.BAD_BODY, f"paillier parameters: {exc}") from None
        return packing


def flatten(delta: dict[str, np.ndarray], shapes: dict[str, tuple]) -> np.ndarray:
    """Values in the order packing uses: parameter names sorted, each row-major."""
    return np.concatenate([np.asarray(delta[name], np.float64).reshape(-1) for name in sorted(shapes)])


def unflatten(values, shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
    out, start = {}, 0
    for name in sorted(shapes):
        size = math.prod(shapes[name])
        out[name] = np.asarray(values[start : start + size]).reshape(shapes[name])
        start += size
    return out


def quantize(values: np.ndarray, packing: Packing) -> list[int]:
    clip = 2.0**packing.clip_exp
    top = (1 << packing.precision) - 1
    q = np.rint((np.clip(values, -clip, clip) + clip) * (top / (2 * clip)))
    return [int(v) for v in q]


def pack(weighted: list[int], packing: Packing) -> list[int]:
    """Plaintexts: slot j of plaintext i holds value i * slots + j."""
    s, k = packing.slot_bits, packing.slots
    plaintexts = []
    for start in range(0, len(weighted), k):
        m = 0
        for j, v in enumerate(weighted[start : start + k]):
            m |= v << (s * j)
        plaintexts.append(m)
    return plaintexts


def checked_sums(plaintexts: list[int], count: int, weight: int, packing: Packing) -> list[int] | None:
    """The slot sums of decrypted aggregate plaintexts, or None if any breaks its bound: an honest
    slot sum is at most weight * (2^precision - 1), and no bit above the used slots is set."""
    s, k = packing.slot_bits, packing.slots
    mask, bound = (1 << s) - 1, weight * ((1 << packing.precision) - 1)
    sums = []
    for i, m in enumerate(plaintexts):
        used = min(k, count - i * k)
        if used <= 0 or m >> (s * used):
            return None
        for j in range(used):
            value = (m >> (s * j)) & mask
            if value > bound:
                return None
            sums.append(value)
    return sums if len(sums) == count else None


def parse_ciphertexts(value, values: int, packing: Packing) -> list[int]:
    """What a miner can check without the key: count, size and range of each ciphertext."""
    count = packing.ciphertext_count(values)
    if not isinstance(value, list) or len(value) != count:
        raise ProtocolError(Reason.BAD_SHAPE, f"expected {count} ciphertexts")
    n2, width, out = packing.n * packing.n, packing.ciphertext_bytes, []
    for item in value:
        if not isinstance(item, bytes) or len(item) != width:
            raise ProtocolError(Reason.BAD_SHAPE, f"each ciphertext is {width} bytes")
        c = int.from_bytes(item, "big")
        if not 0 < c < n2 or gmpy2.gcd(c, packing.n) != 1:
            raise ProtocolError(Reason.OUT_OF_RANGE, "ciphertext outside Z*_{n^2}")
        out.append(c)
    return out


def mean_fixed(sums: list[int], samples: int, packing: Packing, frac_bits: int) -> list[int]:
    """Sample-weighted mean of the decrypted slot sums, in fixed point, exactly (round half up).

    mean = (sum / N) * 2c / (2^p - 1) - c with c = 2^clip_exp, times 2^frac_bits.
    """
    top = (1 << packing.precision) - 1
    shift = packing.clip_exp + frac_bits
    if shift < 0:
        raise ValueError("clip_exp + frac_bits must be >= 0")
    scale = 1 << shift
    den = samples * top
    return [(2 * (s * 2 * scale - samples * top * scale) + den) // (2 * den) for s in sums]
