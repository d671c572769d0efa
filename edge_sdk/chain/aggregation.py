"""Exact FedAvg: the sample-weighted mean of deltas in integer arithmetic.

Every delta value d (a finite float32) becomes q = rint(d * 2^frac_bits), exact in float64 and
rounded half to even, so the step is identical on every CPU. The mean is
floor((2 * sum_k n_k q_k + N) / (2 N)) with N = sum_k n_k (round half up), and the new global
model is the old one plus the mean. Bounds on |d|, n_k and the update count (checked when an
update or block is validated) keep every intermediate inside int64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from edge_sdk.privacy import paillier
from edge_sdk.protocol.fixedpoint import Model, model_hash
from edge_sdk.protocol.packing import mean_fixed, unflatten

MAX_TOTAL_SAMPLES = 1 << 31


def quantize(values: np.ndarray, frac_bits: int) -> np.ndarray:
    """Fixed point of float32 delta values: exact scaling in float64, then round half to even."""
    return np.rint(np.asarray(values, dtype=np.float64) * float(1 << frac_bits)).astype(np.int64)


def fedavg(base: Model, updates: Sequence[tuple[int, Mapping[str, np.ndarray]]], frac_bits: int) -> Model:
    """New global model from a base and (sample count, float delta) pairs.

    With no updates the model is unchanged. Callers validate names, shapes, finiteness and
    ranges first (Update.parse and check_update).
    """
    if not updates:
        return {name: value.copy() for name, value in base.items()}
    total = sum(n for n, _ in updates)
    if not 0 < total <= MAX_TOTAL_SAMPLES:
        raise ValueError(f"total sample count {total} outside (0, {MAX_TOTAL_SAMPLES}]")
    out = {}
    for name, value in base.items():
        acc = np.zeros(value.shape, dtype=np.int64)
        for n, delta in updates:
            acc += np.int64(n) * quantize(delta[name], frac_bits)
        mean = (2 * acc + total) // (2 * total)
        out[name] = value + mean
    return out


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
        model, excluded = aggregate(parent_model, [(u.samples, u.delta) for u in updates], frac, task.aggregation)
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


def capped_weights(claims: Sequence[int], weight_cap: int) -> list[int]:
    """Each update's weight: its sample claim, at most weight_cap times the block's lower median
    claim (0: uncapped). So a device claiming its whole quota buys at most weight_cap honest shares."""
    if not weight_cap or not claims:
        return list(claims)
    cap = weight_cap * sorted(claims)[(len(claims) - 1) // 2]
    return [min(n, cap) for n in claims]


def aggregate(base: Model, updates, frac_bits: int, rule) -> tuple[Model, tuple[int, ...]]:
    """Placeholder until the robust rules land: FedAvg, nothing excluded."""
    weights = capped_weights([n for n, _ in updates], rule.weight_cap)
    return fedavg(base, [(w, d) for w, (_, d) in zip(weights, updates, strict=True)], frac_bits), ()
