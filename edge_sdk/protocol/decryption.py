"""Threshold decryption on the wire: the manifest's public key section, partial decryptions as a
miner publishes them (signed, on `partial/<miner>`) and as a block carries them (`extras.decryption`).

Share i belongs to the task's i-th miner (1-based, manifest order). Every element of Z_{n^2} is
fixed-width big-endian (the ciphertext size); a proof is [challenge (32 bytes), response
(minimal big-endian)].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gmpy2

from edge_sdk.protocol import envelope
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.identity import Identity

CHALLENGE_BITS = 256
HIDING_BITS = 128  # statistical hiding of the share in a proof's response


@dataclass(frozen=True)
class ThresholdKey:
    """The public side: modulus, threshold, and a verification key per share holder."""

    n: int
    threshold: int
    v: int
    verification_keys: tuple[int, ...]  # vk_i = v^(Delta s_i) mod n^2 for shares 1..m

    @property
    def holders(self) -> int:
        return len(self.verification_keys)

    @property
    def delta(self) -> int:
        return math.factorial(self.holders)

    @property
    def n2(self) -> int:
        return self.n * self.n

    @property
    def element_bytes(self) -> int:
        """Fixed width of an element of Z_{n^2} on the wire (the ciphertext size)."""
        return (2 * self.n.bit_length() + 7) // 8

    @property
    def response_bits(self) -> int:
        """Most bits of a proof's response z = r + e Delta s_i."""
        return 2 * self.n.bit_length() + self.delta.bit_length() + CHALLENGE_BITS + HIDING_BITS + 1

    def verification_key(self, index: int) -> int:
        return self.verification_keys[index - 1]


@dataclass(frozen=True)
class Proof:
    challenge: int  # e, CHALLENGE_BITS
    response: int  # z = r + e Delta s_i


@dataclass(frozen=True)
class DecryptionRules:
    """Manifest section `privacy.threshold` (Paillier modes): who decrypts, and what they decrypt."""

    key: ThresholdKey
    min_participants: int  # a block aggregates 0 or at least this many updates (every node checks)

    def to_wire(self) -> dict:
        width = self.key.element_bytes
        return {
            "t": self.key.threshold,
            "min_participants": self.min_participants,
            "v": self.key.v.to_bytes(width, "big"),
            "vks": [vk.to_bytes(width, "big") for vk in self.key.verification_keys],
        }

    @classmethod
    def from_wire(cls, value: Any, n: int) -> DecryptionRules:
        if not isinstance(value, dict) or set(value) != {"t", "min_participants", "v", "vks"}:
            raise ProtocolError(Reason.BAD_BODY, "privacy.threshold must have exactly t, min_participants, v, vks")
        t, least, v, vks = value["t"], value["min_participants"], value["v"], value["vks"]
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (t, least)):
            raise ProtocolError(Reason.BAD_BODY, "privacy.threshold: t and min_participants must be integers")
        if not isinstance(vks, list) or not 1 <= len(vks) <= 64 or not 1 <= t <= len(vks):
            raise ProtocolError(Reason.BAD_BODY, "privacy.threshold: 1 <= t <= len(vks) <= 64")
        if least < 2 or t < min(2, len(vks)):
            raise ProtocolError(
                Reason.BAD_BODY, "privacy.threshold: min_participants >= 2, and t >= 2 unless there is one miner"
            )
        width = (2 * n.bit_length() + 7) // 8
        elements = [_element(x, n, width, "privacy.threshold") for x in [v, *vks]]
        return cls(ThresholdKey(n, t, elements[0], tuple(elements[1:])), least)


def _element(value: Any, n: int, width: int, where: str) -> int:
    """An element of Z*_{n^2}, fixed width."""
    if not isinstance(value, bytes) or len(value) != width:
        raise ProtocolError(Reason.BAD_SHAPE, f"{where}: elements are {width} bytes")
    x = int.from_bytes(value, "big")
    if not 0 < x < n * n or gmpy2.gcd(x, n) != 1:
        raise ProtocolError(Reason.OUT_OF_RANGE, f"{where}: element outside Z*_(n^2)")
    return x


@dataclass(frozen=True)
class PartialDecryption:
    """Share `share`'s partial decryption of every ciphertext of one aggregate, with its proof."""

    share: int
    partials: tuple[int, ...]
    proof: Proof

    def to_wire(self, key: ThresholdKey) -> dict:
        width, z = key.element_bytes, self.proof.response
        return {
            "share": self.share,
            "partials": [p.to_bytes(width, "big") for p in self.partials],
            "proof": [
                self.proof.challenge.to_bytes(CHALLENGE_BITS // 8, "big"),
                z.to_bytes((z.bit_length() + 7) // 8, "big"),
            ],
        }

    @classmethod
    def from_wire(cls, value: Any, key: ThresholdKey, count: int) -> PartialDecryption:
        """Shape and range only (no exponentiation): what the proof says is `threshold.verify`'s job."""
        where = "partial decryption"
        if not isinstance(value, dict) or set(value) != {"share", "partials", "proof"}:
            raise ProtocolError(Reason.BAD_DECRYPTION, f"{where} must have exactly share, partials, proof")
        share, partials, proof = value["share"], value["partials"], value["proof"]
        if not isinstance(share, int) or isinstance(share, bool) or not 1 <= share <= key.holders:
            raise ProtocolError(Reason.BAD_DECRYPTION, f"{where}: share must be in [1, {key.holders}]")
        if not isinstance(partials, list) or len(partials) != count:
            raise ProtocolError(Reason.BAD_DECRYPTION, f"{where}: expected {count} partials")
        if (
            not isinstance(proof, list)
            or len(proof) != 2
            or not all(isinstance(x, bytes) for x in proof)
            or len(proof[0]) != CHALLENGE_BITS // 8
            or len(proof[1]) > (key.response_bits + 7) // 8
        ):
            raise ProtocolError(Reason.BAD_DECRYPTION, f"{where}: proof must be [32-byte challenge, response]")
        width = key.element_bytes
        try:
            values = tuple(_element(p, key.n, width, where) for p in partials)
        except ProtocolError as exc:
            raise ProtocolError(Reason.BAD_DECRYPTION, exc.detail) from None
        return cls(share, values, Proof(int.from_bytes(proof[0], "big"), int.from_bytes(proof[1], "big")))


@dataclass(frozen=True)
class PartialMessage:
    """A miner's signed partial decryption of one block's aggregate, as gossiped."""

    block: bytes
    item: PartialDecryption
    signer: bytes


def make_partial(identity: Identity, key: ThresholdKey, block: bytes, item: PartialDecryption) -> bytes:
    return envelope.sign(identity, "partial", {"block": block, "decryption": item.to_wire(key)})


def parse_partial(raw: bytes, task, count_of) -> PartialMessage:
    """Signature first (a miner of the task, whose share it is), then shapes. `count_of(block)`: the
    number of ciphertexts of that block's aggregate, or None if the block is unknown here."""
    rules = task.privacy.threshold
    if rules is None:
        raise ProtocolError(Reason.BAD_BODY, "this task has no threshold decryption")
    env = envelope.open_envelope(raw, expect="partial", max_bytes=max_partial_bytes(task))
    position = next((i for i, m in enumerate(task.miners) if m.sign_pk == env.signer), None)
    if position is None:
        raise ProtocolError(Reason.BAD_MINER, "partial decryption not signed by a miner of the task")
    body = env.body
    if not isinstance(body, dict) or set(body) != {"block", "decryption"} or not isinstance(body["block"], bytes):
        raise ProtocolError(Reason.BAD_BODY, "partial must have exactly block, decryption")
    count = count_of(body["block"])
    if count is None:
        raise ProtocolError(Reason.UNKNOWN_PARENT, "partial decryption of a block this node does not have")
    item = PartialDecryption.from_wire(body["decryption"], rules.key, count)
    if item.share != position + 1:
        raise ProtocolError(Reason.BAD_DECRYPTION, "a miner may only publish its own share's partials")
    return PartialMessage(body["block"], item, env.signer)


def max_partial_bytes(task) -> int:
    """A partial message: one element per ciphertext of the largest aggregate, plus the proof."""
    packing = task.privacy.packing
    values = sum(v.size for v in task.initial_model.values())
    return packing.ciphertext_count(values) * (packing.ciphertext_bytes + 3) + 2 * packing.ciphertext_bytes + 1024
