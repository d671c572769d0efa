"""Paillier over packed plaintexts (see protocol/packing.py): encryption and homomorphic sums.

Decryption is threshold decryption (privacy/threshold.py): no single party holds the key.

Encryption is c = (1 + n m) r^n mod n^2 with
g = n + 1; the mask r^n is what costs, so devices compute masks ahead of time in a background
thread (`MaskPool`) and the update path does one multiplication per ciphertext.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import threading

import gmpy2
import numpy as np

from edge_sdk.protocol import codec
from edge_sdk.protocol.packing import Packing, flatten, pack, quantize

AGGREGATE_DOMAIN = b"BLOCKFL-EDGE/aggregate\x00"


def new_mask(n: int) -> int:
    n2 = n * n
    while True:
        r = secrets.randbelow(n - 1) + 1
        if gmpy2.gcd(r, n) == 1:
            return int(gmpy2.powmod(r, n, n2))


class MaskPool:
    """r^n mod n^2 computed ahead of time in a background thread, used once each."""

    def __init__(self, n: int, target: int):
        self.n, self.target = n, target
        self._masks: list[int] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._fill, name="paillier-masks", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        # idle work: let training, decryption and the network go first (Linux: per-thread nice)
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 15)
        while not self._stop:
            with self._lock:
                full = len(self._masks) >= self.target
            if full:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            mask = new_mask(self.n)
            with self._lock:
                self._masks.append(mask)

    def take(self) -> int:
        with self._lock:
            mask = self._masks.pop() if self._masks else None
        self._wake.set()
        return mask if mask is not None else new_mask(self.n)

    def ready(self) -> int:
        with self._lock:
            return len(self._masks)

    def close(self) -> None:
        self._stop = True
        self._wake.set()


def encrypt(plaintexts: list[int], n: int, masks=None) -> list[int]:
    n2 = n * n
    take = masks.take if masks is not None else (lambda: new_mask(n))
    return [int(gmpy2.f_mod((1 + n * m) * take(), n2)) for m in plaintexts]


def encrypt_update(
    delta: dict[str, np.ndarray], weight: int, shapes: dict[str, tuple], packing: Packing, masks=None
) -> list[bytes]:
    """The ciphertexts a device sends: its clipped, quantized, weighted, packed delta (public key only)."""
    weighted = [weight * q for q in quantize(flatten(delta, shapes), packing)]
    width = packing.ciphertext_bytes
    return [c.to_bytes(width, "big") for c in encrypt(pack(weighted, packing), packing.n, masks)]


def aggregate(updates: list[list[int]], packing: Packing) -> list[int]:
    """Homomorphic sum: the product of every update's ciphertexts, index by index."""
    n2 = gmpy2.mpz(packing.n) ** 2
    if not updates:
        return []
    total = [gmpy2.mpz(c) for c in updates[0]]
    for cts in updates[1:]:
        total = [gmpy2.f_mod(a * b, n2) for a, b in zip(total, cts, strict=True)]
    return [int(c) for c in total]


def aggregate_hash(ciphertexts: list[int], samples: int, packing: Packing) -> bytes:
    body = {"ciphertexts": [c.to_bytes(packing.ciphertext_bytes, "big") for c in ciphertexts], "samples": samples}
    return hashlib.sha256(AGGREGATE_DOMAIN + codec.encode(body)).digest()
