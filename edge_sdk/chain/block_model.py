"""What a block's updates make of its parent's model: the commitment its header must carry, the
new model where it is already known, and the updates the task's rule excluded."""

from __future__ import annotations

from edge_sdk.chain import robust
from edge_sdk.chain.opening import Aggregate, encrypted_aggregate
from edge_sdk.privacy import paillier
from edge_sdk.protocol.fixedpoint import Model, model_hash


def apply_updates(
    task, parent_model: Model | None, updates
) -> tuple[bytes, Model | None, tuple[int, ...], Aggregate | None]:
    """(commitment, new model, excluded update indices, encrypted aggregate) of a block on a parent;
    the commitment is what the header's model_hash must be.

    plain and dp: the task's aggregation rule decides; the commitment is the new model's hash.
    Paillier: the commitment is the hash of the encrypted aggregate (any node can recompute it
    without a key) and nothing is excluded; the new model is the parent's if there are no
    updates, else unknown until t share holders decrypt the aggregate (chain/opening.py).
    """
    frac = task.chain.frac_bits
    if not task.privacy.encrypted:
        model, excluded = robust.aggregate(
            parent_model, [(u.samples, u.delta) for u in updates], frac, task.aggregation
        )
        return model_hash(model, frac), model, excluded, None
    aggregate = encrypted_aggregate(task, updates)
    commitment = paillier.aggregate_hash(list(aggregate.ciphertexts), aggregate.weight, task.privacy.packing)
    if updates:
        return commitment, None, (), aggregate
    model = None if parent_model is None else {name: value.copy() for name, value in parent_model.items()}
    return commitment, model, (), None
