"""The trusted dealer of threshold Paillier: safe primes, the shared secret, one share per miner.

The coordinator runs this once at task creation and keeps nothing of it but the public key: the
primes are forgotten, each share leaves sealed to its miner. (See edge_sdk/privacy/threshold.py.)
"""

from __future__ import annotations

import secrets

import gmpy2

from edge_sdk.privacy.threshold import KeyShare
from edge_sdk.protocol.decryption import ThresholdKey

_SMALL_PRIMES = [p for p in range(3, 4000) if gmpy2.is_prime(p)]


def safe_prime(bits: int) -> int:
    """A random prime p = 2q + 1 with q prime, of exactly `bits` bits (sieved, then Miller-Rabin)."""
    if bits < 16:
        raise ValueError("safe primes need at least 16 bits")
    while True:
        q = secrets.randbits(bits - 1) | (1 << (bits - 2)) | 1
        if any(q % s == 0 or (2 * (q % s) + 1) % s == 0 for s in _SMALL_PRIMES if s < q):
            continue
        quick = gmpy2.is_prime(q, 1) and gmpy2.is_prime(2 * q + 1, 1)  # most candidates fail here, cheaply
        if quick and gmpy2.is_prime(q, 40) and gmpy2.is_prime(2 * q + 1, 40):
            return 2 * q + 1


def deal(bits: int, threshold: int, holders: int) -> tuple[ThresholdKey, list[KeyShare]]:
    """A `bits`-bit modulus and `holders` shares of which any `threshold` decrypt."""
    if not 1 <= threshold <= holders:
        raise ValueError(f"threshold must be in [1, {holders}] (the number of miners)")
    half = bits // 2
    while True:
        p, q = safe_prime(half), safe_prime(bits - half)
        n = p * q
        if p != q and n.bit_length() == bits:
            break
    pp, qq = (p - 1) // 2, (q - 1) // 2
    m = pp * qq
    nm = n * m
    d = int(gmpy2.invert(m, n)) * m % nm  # d = 0 mod m, d = 1 mod n
    coefficients = [d] + [secrets.randbelow(nm) for _ in range(threshold - 1)]
    shares = []
    for i in range(1, holders + 1):
        value = 0
        for a in reversed(coefficients):
            value = (value * i + a) % nm
        shares.append(KeyShare(i, value))
    n2 = n * n
    while True:
        r = secrets.randbelow(n2 - 2) + 2
        if gmpy2.gcd(r, n) == 1:
            v = int(gmpy2.powmod(r, 2, n2))
            break
    delta = gmpy2.fac(holders)
    keys = tuple(int(gmpy2.powmod(v, delta * s.value, n2)) for s in shares)
    return ThresholdKey(n, threshold, v, keys), shares
