"""Opening a block's encrypted aggregate (Paillier modes): check the threshold's partial
decryptions, combine them into the exact slot sums, and apply the round's overflow rule.

A block with updates is opened by its children: each child carries t verified partial
decryptions of its parent's aggregate (`extras.decryption`), so the chain commits to every
model but the tip's, which nodes open from the partials miners publish (`partial/<miner>`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_sdk.privacy import paillier, threshold
from edge_sdk.protocol import codec
from edge_sdk.protocol.decryption import PartialDecryption
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.fixedpoint import Model
from edge_sdk.protocol.packing import checked_sums, mean_fixed, unflatten


@dataclass(frozen=True)
class Aggregate:
    """The homomorphic sum of a block's updates and their total weight."""

    ciphertexts: tuple[int, ...]
    weight: int

    def encode(self, width: int) -> bytes:
        return codec.encode(
            {"ciphertexts": [c.to_bytes(width, "big") for c in self.ciphertexts], "weight": self.weight}
        )

    @classmethod
    def decode(cls, raw: bytes) -> Aggregate:
        value = codec.decode(raw)
        return cls(tuple(int.from_bytes(c, "big") for c in value["ciphertexts"]), value["weight"])


@dataclass(frozen=True)
class Opened:
    """What a block's decryption of its parent revealed: the parent's model, and whether the
    parent's aggregate broke its slots (then the model is the grandparent's, unchanged)."""

    model: Model
    overflow: bool


def encrypted_aggregate(task, updates) -> Aggregate:
    privacy = task.privacy
    summed = paillier.aggregate([u.ciphertexts for u in updates], privacy.packing)
    return Aggregate(tuple(summed), sum(privacy.weight(u.samples) for u in updates))


def check_items(value: Any, aggregate: Aggregate, task) -> dict[int, list[int]]:
    """Exactly t partial decryptions of `aggregate`, by increasing share, each with a valid proof."""
    key = task.privacy.threshold.key
    if not isinstance(value, (list, tuple)) or len(value) != key.threshold:
        raise ProtocolError(Reason.BAD_DECRYPTION, f"a block opening its parent carries {key.threshold} partials")
    items = [PartialDecryption.from_wire(v, key, len(aggregate.ciphertexts)) for v in value]
    shares = [item.share for item in items]
    if shares != sorted(set(shares)):
        raise ProtocolError(Reason.BAD_DECRYPTION, "partial decryptions must be of distinct shares, increasing")
    for item in items:
        if not threshold.verify(key, item.share, list(aggregate.ciphertexts), list(item.partials), item.proof):
            raise ProtocolError(Reason.BAD_DECRYPTION, f"the partial decryption of share {item.share} does not verify")
    return {item.share: list(item.partials) for item in items}


def open_aggregate(task, model: Model, aggregate: Aggregate, partials: dict[int, list[int]]) -> Opened:
    """The parent's model from its parent's model and verified partials: exact, the same on every node.

    Overflow rule: if any decrypted slot sum exceeds weight * (2^precision - 1), or any bit above
    the used slots is set, the aggregate is void and the model stays as it was."""
    packing = task.privacy.packing
    plaintexts = threshold.combine(task.privacy.threshold.key, partials)
    values = sum(v.size for v in model.values())
    sums = checked_sums(plaintexts, values, aggregate.weight, packing)
    if sums is None:
        return Opened({name: value.copy() for name, value in model.items()}, True)
    mean = mean_fixed(sums, aggregate.weight, packing, task.chain.frac_bits)
    delta = unflatten(np.array(mean, dtype=np.int64), {name: v.shape for name, v in model.items()})
    return Opened({name: model[name] + delta[name] for name in model}, False)
