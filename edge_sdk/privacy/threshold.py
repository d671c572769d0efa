"""Threshold Paillier decryption: t of the m miners' key shares open an aggregate; fewer learn nothing.

Shoup's threshold RSA as Damgard and Jurik apply it to Paillier (s = 1), with the coordinator as
trusted dealer. n = p q with safe primes p = 2p' + 1, q = 2q' + 1, and m' = p' q'. The secret d is
0 mod m' and 1 mod n; share i (1..m) is f(i) for a random polynomial f of degree t - 1 over
Z_{n m'} with f(0) = d. With Delta = m!:

- partial decryption of c by share i: c_i = c^(2 Delta s_i) mod n^2;
- any t partials combine: c' = prod c_i^(2 lambda_i) with the integer Lagrange coefficients
  lambda_i = Delta prod_{j != i} j / (j - i), so c' = c^(4 Delta^2 d) = 1 + n (4 Delta^2 x mod n) and
  x = L(c') / (4 Delta^2) mod n;
- everyone can check a partial: v is a random square mod n^2 and vk_i = v^(Delta s_i); a partial
  carries a Fiat-Shamir proof that log_{C^4}(P^2) = log_v(vk_i), where C and P are the products of
  the aggregate's ciphertexts and of the partials raised to 128-bit exponents derived from both
  (a batch of one equality-of-logs proof instead of one per ciphertext).

Devices only encrypt (public n); nobody below the threshold can open a single update.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import gmpy2

from edge_sdk.protocol import codec
from edge_sdk.protocol.decryption import CHALLENGE_BITS, Proof, ThresholdKey

BATCH_DOMAIN = b"BLOCKFL-EDGE/partial-batch\x00"
CHALLENGE_DOMAIN = b"BLOCKFL-EDGE/partial-proof\x00"
BATCH_EXPONENT_BYTES = 16


@dataclass(frozen=True)
class KeyShare:
    """One holder's share of the decryption key (secret)."""

    index: int  # 1..m
    value: int

    def __repr__(self) -> str:  # never print the secret
        return f"KeyShare(index={self.index})"

    def matches(self, key: ThresholdKey) -> bool:
        """The share is the one the dealer's verification key names."""
        return 1 <= self.index <= key.holders and int(
            gmpy2.powmod(key.v, key.delta * self.value, key.n2)
        ) == key.verification_key(self.index)


def partial_decrypt(share: KeyShare, key: ThresholdKey, ciphertexts: list[int]) -> list[int]:
    exponent = 2 * key.delta * share.value
    return [int(gmpy2.powmod(c, exponent, key.n2)) for c in ciphertexts]


def _to_bytes(value: int, width: int) -> bytes:
    return int(value).to_bytes(width, "big")


def batch(key: ThresholdKey, index: int, ciphertexts: list[int], partials: list[int]) -> tuple[int, int]:
    """C = prod c_j^(e_j), P = prod c_{j,i}^(e_j) with exponents bound to every input."""
    width = key.element_bytes
    seed = hashlib.sha256(
        BATCH_DOMAIN
        + codec.encode([index, [_to_bytes(c, width) for c in ciphertexts], [_to_bytes(c, width) for c in partials]])
    ).digest()
    n2 = key.n2
    big_c, big_p = gmpy2.mpz(1), gmpy2.mpz(1)
    for j, (c, ci) in enumerate(zip(ciphertexts, partials, strict=True)):
        e = int.from_bytes(hashlib.sha256(seed + j.to_bytes(4, "big")).digest()[:BATCH_EXPONENT_BYTES], "big")
        big_c = big_c * gmpy2.powmod(c, e, n2) % n2
        big_p = big_p * gmpy2.powmod(ci, e, n2) % n2
    return int(big_c), int(big_p)


def _challenge(key: ThresholdKey, index: int, big_c: int, big_p: int, a: int, b: int) -> int:
    width = key.element_bytes
    items = [index] + [_to_bytes(x, width) for x in (key.v, key.verification_key(index), big_c, big_p, a, b)]
    return int.from_bytes(hashlib.sha256(CHALLENGE_DOMAIN + codec.encode(items)).digest(), "big")


def prove(
    share: KeyShare, key: ThresholdKey, ciphertexts: list[int], partials: list[int], r: int | None = None
) -> Proof:
    """Proof that `partials` are this share's partial decryptions of `ciphertexts`. `r` (fresh random
    by default) is fixed only by test vectors: a reused r gives the share away."""
    big_c, big_p = batch(key, share.index, ciphertexts, partials)
    n2 = key.n2
    if r is None:  # 2^128 times more than e Delta s_i can reach: z hides the share
        r = secrets.randbits(key.response_bits - 1)
    a = int(gmpy2.powmod(big_c, 4 * r, n2))
    b = int(gmpy2.powmod(key.v, r, n2))
    e = _challenge(key, share.index, big_c, big_p, a, b)
    return Proof(e, r + e * key.delta * share.value)


def verify(key: ThresholdKey, index: int, ciphertexts: list[int], partials: list[int], proof: Proof) -> bool:
    """Whether the partials are share `index`'s correct partial decryptions (work linear in the input)."""
    if not 1 <= index <= key.holders or len(partials) != len(ciphertexts):
        return False
    if not 0 <= proof.challenge < 1 << CHALLENGE_BITS or not 0 <= proof.response < 1 << key.response_bits:
        return False
    n2 = key.n2
    if not all(0 < c < n2 and gmpy2.gcd(c, key.n) == 1 for c in partials):
        return False
    big_c, big_p = batch(key, index, ciphertexts, partials)
    e, z = proof.challenge, proof.response
    try:
        a = gmpy2.powmod(big_c, 4 * z, n2) * gmpy2.powmod(big_p, -2 * e, n2) % n2
        b = gmpy2.powmod(key.v, z, n2) * gmpy2.powmod(key.verification_key(index), -e, n2) % n2
    except ValueError:  # gmpy2: an element without an inverse, so not a valid partial
        return False
    return _challenge(key, index, big_c, big_p, int(a), int(b)) == e


def lagrange(indices: list[int], i: int, delta: int) -> int:
    """Delta * prod_{j != i} j / (j - i): an integer for any set of distinct indices in 1..m."""
    num, den = delta, 1
    for j in indices:
        if j != i:
            num *= j
            den *= j - i
    if num % den:
        raise ArithmeticError("Lagrange coefficient is not an integer")
    return num // den


def combine(key: ThresholdKey, partials: dict[int, list[int]]) -> list[int]:
    """The plaintexts (mod n) from the partials of at least t distinct shares (the first t are used).
    Partials must have been verified: wrong ones give a wrong result, not an error."""
    if len(partials) < key.threshold:
        raise ValueError(f"{len(partials)} partial decryptions; {key.threshold} are needed")
    chosen = sorted(partials)[: key.threshold]
    n, n2 = key.n, key.n2
    coefficients = {i: 2 * lagrange(chosen, i, key.delta) for i in chosen}
    inverse = int(gmpy2.invert(4 * key.delta * key.delta, n))
    count = len(partials[chosen[0]])
    out = []
    for k in range(count):
        c = gmpy2.mpz(1)
        for i in chosen:
            c = c * gmpy2.powmod(partials[i][k], coefficients[i], n2) % n2
        out.append(int((c - 1) // n * inverse % n))
    return out
