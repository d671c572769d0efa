"""What a block's updates make of its parent's model: the commitment its header must carry, the
new model where this node can compute it, and the updates the task's rule excluded."""

from __future__ import annotations

import numpy as np

from edge_sdk.chain import robust
from edge_sdk.privacy import paillier
from edge_sdk.protocol.fixedpoint import Model, model_hash
from edge_sdk.protocol.packing import mean_fixed, unflatten


def apply_updates(
    task, parent_model: Model | None, updates, decryptor=None
) -> tuple[bytes, Model | None, tuple[int, ...]]:
    """(commitment, new model, excluded update indices) of a block on a parent; the commitment is
    what the header's model_hash must be.

    plain and dp: the task's aggregation rule decides; the commitment is the new model's hash.
    Paillier: the commitment is the hash of the encrypted aggregate (any node can recompute it
    without the key) and nothing is excluded; only a holder of the key (a `decryptor`) gets the
    model, exactly: parent + sample-weighted mean of the decrypted sums.
    """
    frac = task.chain.frac_bits
    if not task.privacy.encrypted:
        model, excluded = robust.aggregate(
            parent_model, [(u.samples, u.delta) for u in updates], frac, task.aggregation
        )
        return model_hash(model, frac), model, excluded
    packing = task.privacy.packing
    total = sum(u.samples for u in updates)
    summed = paillier.aggregate([u.ciphertexts for u in updates], packing)
    commitment = paillier.aggregate_hash(summed, total, packing)
    if decryptor is None or parent_model is None:
        return commitment, None, ()
    if not updates:
        return commitment, {name: value.copy() for name, value in parent_model.items()}, ()
    values = sum(v.size for v in parent_model.values())
    mean = mean_fixed(decryptor.sums(summed, values), total, packing, frac)
    shapes = {name: v.shape for name, v in parent_model.items()}
    delta = unflatten(np.array(mean, dtype=np.int64), shapes)
    return commitment, {name: parent_model[name] + delta[name] for name in parent_model}, ()
