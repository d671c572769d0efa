"""Robust aggregation (the manifest's `aggregation` rule) in exact integers.

A poisoned but well-formed update can only be stopped by a rule every node applies, and every
node must derive the same model bytes, so after quantization (`aggregation.quantize`, exact)
everything here is integer arithmetic: numpy int64 where the bounds below rule out overflow,
Python ints where they do not. The rule text is in PROTOCOL.md §9.

Bounds the caller has already checked (Update.parse, check_update): |q| < 2^30
(frac_bits + delta_bits <= 30), 1 <= n_k <= 2^20, K <= 2048. This module checks them again,
cheaply, because every int64 argument below depends on them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from edge_sdk.chain.aggregation import quantize
from edge_sdk.protocol.aggregation_rule import AggregationRule
from edge_sdk.protocol.fixedpoint import Model

MAX_UPDATES = 2048
MAX_SAMPLES = 1 << 20
MAX_Q = 1 << 30  # |q| < 2^30
MAX_VALUES = 1 << 28  # vector length for which exact_square_sum's int64 partial sums cannot overflow
_LO_BITS = 31
_LO_MASK = (1 << _LO_BITS) - 1


def exact_square_sum(x: np.ndarray) -> list[int] | int:
    """Exact sum of squares along the last axis, as Python ints (one per row, or one for 1-D).

    Each |x| <= 2^31, so x^2 <= 2^62 fits int64 exactly. The squares are split as
    hi * 2^31 + lo (0 <= lo < 2^31, hi <= 2^31) and hi and lo are summed separately: with at most
    2^28 values each partial sum is below 2^59, so int64 sums are exact, and the two are joined
    as Python ints. numpy's integer sum is exact in any order, so this is the same everywhere.
    """
    x = np.asarray(x, dtype=np.int64)
    if x.shape[-1] > MAX_VALUES:
        raise ValueError(f"exact_square_sum: more than 2^28 values per row ({x.shape[-1]})")
    if x.size and (int(x.max()) > 1 << 31 or int(x.min()) < -(1 << 31)):
        raise ValueError("exact_square_sum: values must be within +-2^31")
    return _square_sum(x.copy())


def _square_sum(x: np.ndarray) -> list[int] | int:
    """exact_square_sum without the checks, overwriting x (a fresh int64 array with |x| <= 2^31)."""
    np.multiply(x, x, out=x)
    lo = np.bitwise_and(x, _LO_MASK)
    np.right_shift(x, _LO_BITS, out=x)
    hi, lo = x.sum(axis=-1), lo.sum(axis=-1)
    if x.ndim == 1:
        return (int(hi) << _LO_BITS) + int(lo)
    return [(h << _LO_BITS) + v for h, v in zip(hi.tolist(), lo.tolist(), strict=True)]


def lower_median(values: Sequence[int]) -> int:
    """sorted(values)[(len - 1) // 2]: an element of the input, so it stays an exact integer."""
    return sorted(values)[(len(values) - 1) // 2]


def _flatten(base: Model, updates, frac_bits: int) -> np.ndarray:
    """(K x P) int64 matrix of quantized deltas, parameters in base's key order, each row-major."""
    sizes = [v.size for v in base.values()]
    q = np.empty((len(updates), sum(sizes)), dtype=np.int64)
    for k, (_, delta) in enumerate(updates):
        at = 0
        for (name, value), size in zip(base.items(), sizes, strict=True):
            d = np.asarray(delta[name])
            if d.shape != value.shape:
                raise ValueError(f"update {k}: {name} has shape {d.shape}, model has {value.shape}")
            q[k, at : at + size] = quantize(d, frac_bits).ravel()
            at += size
    if q.size and (int(q.max()) >= MAX_Q or int(q.min()) <= -MAX_Q):
        raise ValueError("a quantized delta is outside (-2^30, 2^30)")
    return q


def norm_bound(norms: Sequence[int], frac_bits: int, rule: AggregationRule) -> int | None:
    """The bound B on isqrt(sum q^2), or None when both bounds are off.

    Both products are one float64 multiplication (IEEE, correctly rounded, so the same on every
    CPU) followed by floor; 2^frac_bits scaling is exact, and a median norm (< 2^45) is exact as a
    float64."""
    bounds = []
    if rule.norm_bound > 0:
        bounds.append(math.floor(rule.norm_bound * float(1 << frac_bits)))
    if rule.norm_factor > 0 and norms:
        bounds.append(math.floor(rule.norm_factor * float(lower_median(norms))))
    return min(bounds) if bounds else None


def weights(samples: Sequence[int], rule: AggregationRule) -> list[int]:
    """Claimed sample counts, each capped at weight_cap times their lower median (0: no cap), so one
    device cannot buy the round by claiming 2^20 samples."""
    if rule.weight_cap <= 0 or not samples:
        return list(samples)
    cap = rule.weight_cap * lower_median(samples)
    return [min(n, cap) for n in samples]


def weighted_mean(q: np.ndarray, w: Sequence[int]) -> np.ndarray:
    """floor((2 * sum_k w_k q_k + W) / (2W)), W = sum w_k: FedAvg's formula, rounding half up.

    |w_k q_k| < 2^20 * 2^30 = 2^50, K <= 2^11 terms: |2 * sum + W| < 2^62 + 2^31 < 2^63."""
    total = int(sum(w))
    acc = np.asarray(w, dtype=np.int64) @ q
    return (2 * acc + total) // (2 * total)


def coordinate_median(q: np.ndarray) -> np.ndarray:
    """Per coordinate, unweighted: the middle value, or floor((a + b) / 2) of the two middle ones
    (|a + b| < 2^31, and >> 1 is floor division by 2 for negative values too)."""
    m = q.shape[0]
    s = np.sort(q, axis=0)
    if m % 2:
        return s[m // 2].copy()
    return (s[m // 2 - 1] + s[m // 2]) >> 1


def trimmed_mean(q: np.ndarray, trim: float) -> np.ndarray:
    """Per coordinate, unweighted: drop the b = floor(trim * m) lowest and highest values, then
    floor((2 * sum + c) / (2c)) over the c = m - 2b >= 1 left (trim < 0.5). |sum| < 2^41."""
    m = q.shape[0]
    b = math.floor(trim * m)
    c = m - 2 * b
    if c < 1:
        raise ValueError(f"trim {trim} leaves no values of {m}")
    kept = np.sort(q, axis=0)[b : m - b]
    return (2 * kept.sum(axis=0) + c) // (2 * c)


def pairwise_sq_distances(q: np.ndarray) -> list[list[int]]:
    """Exact squared L2 distances between rows, as Python ints (the diagonal is 0).

    One row at a time against the rows after it: |q_i - q_j| < 2^31 (|q| < 2^30 is checked when
    flattening), so exact_square_sum's argument applies.
    Memory stays at one (K x P) block."""
    m = q.shape[0]
    d = [[0] * m for _ in range(m)]
    for i in range(m - 1):
        row = _square_sum(q[i + 1 :] - q[i])
        for j, value in enumerate(row, start=i + 1):
            d[i][j] = d[j][i] = value
    return d


def krum_select(q: np.ndarray, f: int) -> list[int]:
    """Positions (sorted) of the rows Multi-Krum keeps.

    Score_i = sum of the min(m-1, max(1, m-f-2)) smallest D_ij, j != i; the max(1, m-f) rows with
    the lowest (score, position) are kept. Ties break by position, which is block order."""
    m = q.shape[0]
    if m == 1:
        return [0]
    nearest = min(m - 1, max(1, m - f - 2))
    dist = pairwise_sq_distances(q)
    scores = [sum(sorted(dist[i][:i] + dist[i][i + 1 :])[:nearest]) for i in range(m)]
    ranked = sorted(range(m), key=lambda i: (scores[i], i))
    return sorted(ranked[: max(1, m - f)])


def aggregate(
    base: Model,
    updates: Sequence[tuple[int, Mapping[str, np.ndarray]]],
    frac_bits: int,
    rule: AggregationRule,
) -> tuple[Model, tuple[int, ...]]:
    """New model and the sorted indices (into `updates`) of the updates the rule excluded.

    With rule == AggregationRule(weight_cap=0) this is `aggregation.fedavg`, bit for bit."""
    if not updates:
        return {name: value.copy() for name, value in base.items()}, ()
    if len(updates) > MAX_UPDATES:
        raise ValueError(f"{len(updates)} updates, at most {MAX_UPDATES}")
    samples = [int(n) for n, _ in updates]
    if not all(1 <= n <= MAX_SAMPLES for n in samples):
        raise ValueError(f"sample counts must be in [1, {MAX_SAMPLES}]")
    q = _flatten(base, updates, frac_bits)

    # 1. norm rule: exclude k iff sum q_k^2 > B^2 (exact, no square root needed for the test)
    survivors = list(range(len(updates)))
    if rule.norm_bound > 0 or rule.norm_factor > 0:
        squares = exact_square_sum(q)
        bound = norm_bound([math.isqrt(s) for s in squares], frac_bits, rule)
        if bound is not None:
            survivors = [k for k in survivors if squares[k] <= bound * bound]
    if not survivors:
        return {name: value.copy() for name, value in base.items()}, tuple(range(len(updates)))

    # 2. weights (capped by the median of every claim in the block: the ledger pays these), 3. the estimator
    capped = weights(samples, rule)
    w = [capped[k] for k in survivors]
    qs = q[survivors] if len(survivors) < len(updates) else q
    kept = survivors
    if rule.rule == "fedavg":
        mean = weighted_mean(qs, w)
    elif rule.rule == "median":
        mean = coordinate_median(qs)
    elif rule.rule == "trimmed-mean":
        mean = trimmed_mean(qs, rule.trim)
    elif rule.rule == "multi-krum":
        chosen = krum_select(qs, rule.f)
        kept = [survivors[i] for i in chosen]
        mean = weighted_mean(qs[chosen], [w[i] for i in chosen])
    else:
        raise ValueError(f"unknown aggregation rule {rule.rule!r}")

    out, at = {}, 0
    for name, value in base.items():
        out[name] = value + mean[at : at + value.size].reshape(value.shape)
        at += value.size
    excluded = tuple(sorted(set(range(len(updates))) - set(kept)))
    return out, excluded
