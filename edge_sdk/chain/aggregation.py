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

from edge_sdk.protocol.fixedpoint import Model

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
