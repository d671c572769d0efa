"""The trusted dealer of threshold Paillier: safe primes, the shared secret, one share per miner.

The coordinator runs this once at task creation and keeps nothing of it but the public key: the
primes are forgotten, each share leaves sealed to its miner. (See edge_sdk/privacy/threshold.py.)
Randomness comes from the OS; `rng` exists so test vectors can fix every draw.
"""

from __future__ import annotations

import random
import secrets

import gmpy2

from edge_sdk.privacy.threshold import KeyShare
from edge_sdk.protocol.decryption import ThresholdKey

_SMALL_PRIMES = [p for p in range(3, 4000) if gmpy2.is_prime(p)]


def safe_prime(bits: int, rng: random.Random | None = None) -> int:
    """A random prime p = 2q + 1 with q prime, of exactly `bits` bits (sieved, then Miller-Rabin)."""
    if bits < 16:
        raise ValueError("safe primes need at least 16 bits")
    rng = rng or secrets.SystemRandom()
    while True:
        q = rng.getrandbits(bits - 1) | (1 << (bits - 2)) | 1
        if any(q % s == 0 or (2 * (q % s) + 1) % s == 0 for s in _SMALL_PRIMES if s < q):
            continue
        quick = gmpy2.is_prime(q, 1) and gmpy2.is_prime(2 * q + 1, 1)  # most candidates fail here, cheaply
        if quick and gmpy2.is_prime(q, 40) and gmpy2.is_prime(2 * q + 1, 40):
            return 2 * q + 1


def deal(
    bits: int, threshold: int, holders: int, rng: random.Random | None = None
) -> tuple[ThresholdKey, list[KeyShare]]:
    """A `bits`-bit modulus and `holders` shares of which any `threshold` decrypt."""
    if not 1 <= threshold <= holders:
        raise ValueError(f"threshold must be in [1, {holders}] (the number of miners)")
    return key_from(*draw(bits, threshold, rng), holders)


def draw(bits: int, threshold: int, rng: random.Random | None = None) -> tuple[int, int, list[int], int]:
    """The dealer's random choices, which determine everything else (`key_from`): safe primes p != q
    with a `bits`-bit product, threshold - 1 polynomial coefficients, and the root of v."""
    rng = rng or secrets.SystemRandom()
    half = bits // 2
    while True:
        p, q = safe_prime(half, rng), safe_prime(bits - half, rng)
        n = p * q
        if p != q and n.bit_length() == bits:
            break
    nm = n * ((p - 1) // 2) * ((q - 1) // 2)
    coefficients = [rng.randrange(nm) for _ in range(threshold - 1)]
    while True:
        root = rng.randrange(2, n * n)
        if gmpy2.gcd(root, n) == 1:
            return p, q, coefficients, root


def key_from(p: int, q: int, coefficients: list[int], root: int, holders: int) -> tuple[ThresholdKey, list[KeyShare]]:
    """The key and shares every draw of `deal` determines: safe primes p, q; the sharing polynomial's
    coefficients above its constant d (threshold - 1 of them, in Z_{n m'}); v = root^2 mod n^2."""
    n = p * q
    m = ((p - 1) // 2) * ((q - 1) // 2)
    nm = n * m
    d = int(gmpy2.invert(m, n)) * m % nm  # d = 0 mod m, d = 1 mod n
    shares = []
    for i in range(1, holders + 1):
        value = 0
        for a in reversed([d, *coefficients]):
            value = (value * i + a) % nm
        shares.append(KeyShare(i, value))
    n2 = n * n
    v = int(gmpy2.powmod(root, 2, n2))
    delta = gmpy2.fac(holders)
    keys = tuple(int(gmpy2.powmod(v, delta * s.value, n2)) for s in shares)
    return ThresholdKey(n, len(coefficients) + 1, v, keys), shares
