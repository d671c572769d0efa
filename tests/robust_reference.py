"""A second implementation of the robust aggregation rules (PROTOCOL.md §9) in plain
Python integers and lists, written from the rule text, to check edge_sdk.chain.robust against.

Inputs are plain data: `base` {name: (shape, [int])}, updates [(n, {name: [float]})] with float32
values, the rule as its wire dict. Slow on purpose: no numpy, no cleverness.
"""

from __future__ import annotations

import math


def _lower_median(xs):
    return sorted(xs)[(len(xs) - 1) // 2]


def _sq(a, b=None):
    return sum((x - (0 if b is None else b[i])) ** 2 for i, x in enumerate(a))


def _fedavg(rows, w):
    total = sum(w)
    sums = [sum(wk * r[i] for wk, r in zip(w, rows, strict=True)) for i in range(len(rows[0]))]
    return [(2 * s + total) // (2 * total) for s in sums]


def aggregate(base, updates, frac_bits, rule):
    """(new values {name: [int]}, excluded indices tuple)."""
    names = list(base)
    flat_base = [v for name in names for v in base[name][1]]
    if not updates:
        return {name: list(base[name][1]) for name in names}, ()
    q = [[round(d * 2**frac_bits) for name in names for d in delta[name]] for _, delta in updates]
    samples = [n for n, _ in updates]
    survivors = list(range(len(updates)))
    bounds = []
    squares = [_sq(row) for row in q]
    if rule["norm_bound"] > 0:
        bounds.append(math.floor(rule["norm_bound"] * 2.0**frac_bits))
    if rule["norm_factor"] > 0:
        bounds.append(math.floor(rule["norm_factor"] * float(_lower_median([math.isqrt(s) for s in squares]))))
    if bounds:
        survivors = [k for k in survivors if squares[k] <= min(bounds) ** 2]
    if not survivors:
        return {name: list(base[name][1]) for name in names}, tuple(range(len(updates)))
    rows = [q[k] for k in survivors]
    w = list(samples)
    if rule["weight_cap"] > 0:  # the cap comes from every claim in the block, so the ledger can recompute it
        cap = rule["weight_cap"] * _lower_median(w)
        w = [min(x, cap) for x in w]
    w = [w[k] for k in survivors]
    m, size = len(rows), len(flat_base)
    kept = survivors
    if rule["rule"] == "fedavg":
        mean = _fedavg(rows, w)
    elif rule["rule"] == "median":
        cols = [sorted(r[i] for r in rows) for i in range(size)]
        mean = [c[m // 2] if m % 2 else (c[m // 2 - 1] + c[m // 2]) // 2 for c in cols]
    elif rule["rule"] == "trimmed-mean":
        b = math.floor(rule["trim"] * m)
        c = m - 2 * b
        mean = [(2 * sum(sorted(r[i] for r in rows)[b : m - b]) + c) // (2 * c) for i in range(size)]
    else:
        chosen = [0]
        if m > 1:
            near = min(m - 1, max(1, m - rule["f"] - 2))
            score = [sum(sorted(_sq(rows[i], rows[j]) for j in range(m) if j != i)[:near]) for i in range(m)]
            chosen = sorted(sorted(range(m), key=lambda i: (score[i], i))[: max(1, m - rule["f"])])
        kept = [survivors[i] for i in chosen]
        mean = _fedavg([rows[i] for i in chosen], [w[i] for i in chosen])
    out, at = {}, 0
    for name in names:
        values = base[name][1]
        out[name] = [v + mean[at + i] for i, v in enumerate(values)]
        at += len(values)
    return out, tuple(k for k in range(len(updates)) if k not in kept)
