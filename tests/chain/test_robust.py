"""Robust aggregation in exact integers: against FedAvg, against a plain-Python reference, by hand."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from robust_reference import aggregate as reference

from edge_sdk.chain.aggregation import fedavg, quantize
from edge_sdk.chain.robust import aggregate, exact_square_sum, weights
from edge_sdk.protocol.aggregation_rule import AggregationRule
from edge_sdk.protocol.fixedpoint import model_hash

FRAC = 24
SHAPES = {"W": (3, 2), "b": (2,)}
TOP = np.float32(64 - 2.0**-18)  # the largest float32 below 2^delta_bits = 64: |q| = 2^30 - 64


@st.composite
def rounds(draw, max_k=8):
    """(base, updates): honest noise, exact ties, outliers, values at the range limit."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    k = draw(st.integers(1, max_k))
    kind = draw(st.sampled_from(["normal", "ties", "outlier", "extreme"]))
    base = {name: rng.integers(-(2**40), 2**40, shape) for name, shape in SHAPES.items()}
    updates = []
    for i in range(k):
        if kind == "ties":  # few distinct values: equal sorts, equal distances, equal scores
            delta = {name: (rng.integers(-2, 3, shape) * 2.0**-3).astype(np.float32) for name, shape in SHAPES.items()}
        elif kind == "extreme":
            delta = {name: rng.choice([-TOP, TOP, np.float32(0)], shape) for name, shape in SHAPES.items()}
        else:
            scale = 30.0 if kind == "outlier" and i == 0 else 0.01
            delta = {
                name: np.clip(rng.standard_normal(shape) * scale, -TOP, TOP).astype(np.float32)
                for name, shape in SHAPES.items()
            }
        n = int(rng.choice([1, 100, 1 << 20])) if kind == "extreme" else int(rng.integers(1, 1000))
        updates.append((n, delta))
    return base, updates


@st.composite
def rules(draw):
    name = draw(st.sampled_from(["fedavg", "median", "trimmed-mean", "multi-krum"]))
    trim = draw(st.sampled_from([0.0, 0.1, 0.2, 0.3, 0.49])) if name == "trimmed-mean" else 0.0
    f = draw(st.integers(0, 9)) if name == "multi-krum" else 0
    return AggregationRule(
        name,
        trim=trim,
        f=f,
        norm_bound=draw(st.sampled_from([0.0, 0.01, 0.1, 100.0])),
        norm_factor=draw(st.sampled_from([0.0, 1.0, 1.5, 3.0])),
        weight_cap=draw(st.sampled_from([0, 1, 2, 1 << 20])),
    )


def plain(base, updates):
    return (
        {name: (list(v.shape), v.ravel().tolist()) for name, v in base.items()},
        [(n, {name: [float(x) for x in d[name].ravel()] for name in base}) for n, d in updates],
    )


def same(a, b):
    return a.keys() == b.keys() and all(a[k].dtype == np.int64 and np.array_equal(a[k], b[k]) for k in a)


@given(rounds())
@settings(max_examples=200, deadline=None)
def test_plain_rule_is_fedavg_bit_for_bit(case):
    base, updates = case
    model, excluded = aggregate(base, updates, FRAC, AggregationRule(weight_cap=0))
    assert same(model, fedavg(base, updates, FRAC)) and excluded == ()


@given(rounds(), rules())
@settings(max_examples=300, deadline=None)
def test_agrees_with_the_plain_python_reference(case, rule):
    base, updates = case
    model, excluded = aggregate(base, updates, FRAC, rule)
    values, ref_excluded = reference(*plain(base, updates), FRAC, rule.to_wire())
    assert excluded == ref_excluded
    assert {name: v.ravel().tolist() for name, v in model.items()} == values


def krum_has_ties(base, updates, rule):
    norm_only = AggregationRule(norm_bound=rule.norm_bound, norm_factor=rule.norm_factor)
    survivors = sorted(set(range(len(updates))) - set(aggregate(base, updates, FRAC, norm_only)[1]))
    q = [np.concatenate([quantize(updates[k][1][n], FRAC).ravel() for n in base]).tolist() for k in survivors]
    m = len(q)
    near = min(m - 1, max(1, m - rule.f - 2))
    dist = [[sum((a - b) ** 2 for a, b in zip(x, y, strict=True)) for y in q] for x in q]
    scores = [sum(sorted(row[:i] + row[i + 1 :])[:near]) for i, row in enumerate(dist)]
    return len(set(scores)) < len(scores)


@given(rounds(), rules(), st.randoms(use_true_random=False))
@settings(max_examples=150, deadline=None)
def test_order_of_updates_does_not_matter(case, rule, rnd):
    base, updates = case
    order = list(range(len(updates)))
    rnd.shuffle(order)
    model, excluded = aggregate(base, updates, FRAC, rule)
    shuffled, excluded2 = aggregate(base, [updates[i] for i in order], FRAC, rule)
    if rule.rule == "multi-krum" and krum_has_ties(base, updates, rule):
        return  # equal scores break by block order, so only tie-free rounds are order independent
    assert model_hash(model, FRAC) == model_hash(shuffled, FRAC)
    assert sorted(order[i] for i in excluded2) == list(excluded)


@given(rounds(), rules())
@settings(max_examples=50, deadline=None)
def test_same_input_same_bytes(case, rule):
    base, updates = case
    a = aggregate(base, updates, FRAC, rule)
    copies = [(n, {k: v.copy() for k, v in d.items()}) for n, d in updates]
    b = aggregate({k: v.copy() for k, v in base.items()}, copies, FRAC, rule)
    assert model_hash(a[0], FRAC) == model_hash(b[0], FRAC) and a[1] == b[1]
    assert all(np.array_equal(base[k], v) for k, v in aggregate(base, [], FRAC, rule)[0].items())


@given(st.integers(0, 2**32 - 1), st.integers(0, 300), st.integers(1, 5))
@settings(max_examples=200)
def test_exact_square_sum_is_the_python_sum(seed, size, rows):
    rng = np.random.default_rng(seed)
    edge = 2**31 - 1
    x = rng.integers(-(2**31), 2**31, (rows, size))
    x[rng.random((rows, size)) < 0.3] = edge
    x[rng.random((rows, size)) < 0.3] = -edge
    assert exact_square_sum(x) == [sum(int(v) ** 2 for v in row) for row in x]
    assert exact_square_sum(x[0]) == sum(int(v) ** 2 for v in x[0])


def test_exact_square_sum_at_the_limits():
    full = np.full(100_000, -(2**31), np.int64)  # 2^62 per value: int64 squares, 2^78 in all
    assert exact_square_sum(full) == 100_000 * 2**62
    assert exact_square_sum(np.zeros((2, 0), np.int64)) == [0, 0]
    with pytest.raises(ValueError):
        exact_square_sum(np.array([2**31 + 1]))


# --- by hand: frac_bits 8, so a delta of v/256 is q = v ---
def units(*rows):
    return [(100, {"w": np.array(r, np.float32) / 256}) for r in rows]


BASE = {"w": np.array([10, 20, 30], np.int64)}
HONEST = [[1, 2, 3], [2, 3, 4], [3, 4, 5], [4, 5, 6]]
POISONED = units(HONEST[0], [100, 200, 300], *HONEST[1:])  # index 1 is 100 x index 0


@pytest.mark.parametrize(
    "rule, mean, excluded",
    [
        # per coordinate, sorted: [1 2 3 4 100] [2 3 4 5 200] [3 4 5 6 300]
        (AggregationRule("median"), [3, 4, 5], ()),
        # drop floor(0.2 * 5) = 1 per side: (2+3+4)/3 = 3, 4, 5
        (AggregationRule("trimmed-mean", trim=0.2), [3, 4, 5], ()),
        # 2 nearest neighbours each, 4 kept; mean of the honest: 2.5 -> 3, 3.5 -> 4, 4.5 -> 5 (half up)
        (AggregationRule("multi-krum", f=1), [3, 4, 5], (1,)),
        # norms isqrt: 3, 374, 5, 7, 8; lower median 7, B = 21, S = 140000 > 441
        (AggregationRule(norm_factor=3.0), [3, 4, 5], (1,)),
        # plain fedavg is dragged along: 110/5 = 22, 214/5 = 42.8 -> 43, 318/5 = 63.6 -> 64
        (AggregationRule(), [22, 43, 64], ()),
    ],
)
def test_one_attacker_among_five(rule, mean, excluded):
    model, got = aggregate(BASE, POISONED, 8, rule)
    assert model["w"].tolist() == [b + m for b, m in zip(BASE["w"].tolist(), mean, strict=True)]
    assert got == excluded


def test_median_of_an_even_count_rounds_down():
    model, _ = aggregate({"w": np.zeros(3, np.int64)}, units([-1, 1, 4], [-2, 2, 7]), 8, AggregationRule("median"))
    assert model["w"].tolist() == [-2, 1, 5]  # floor(-1.5), floor(1.5), floor(5.5)


def test_weight_cap_limits_a_huge_claim_to_twice_the_median():
    assert weights([100, 1 << 20, 100], AggregationRule()) == [100, 200, 100]
    assert weights([100, 1 << 20, 100], AggregationRule(weight_cap=0)) == [100, 1 << 20, 100]
    ups = units([0], [0], [0], [500])
    ups[3] = (1 << 20, ups[3][1])
    base = {"w": np.zeros(1, np.int64)}
    assert aggregate(base, ups, 8, AggregationRule())[0]["w"].tolist() == [200]  # 200 * 500 / 500
    uncapped = aggregate(base, ups, 8, AggregationRule(weight_cap=0))[0]["w"].tolist()
    assert uncapped == [(2 * (1 << 20) * 500 + (300 + (1 << 20))) // (2 * (300 + (1 << 20)))]


def test_absolute_norm_bound_is_inclusive():
    # B = floor(0.05 * 256) = 12: sum q^2 = 144 stays, 145 goes
    ups = units([3, 4, 0], [12, 0, 0], [12, 1, 0], [0, 0, 0])
    _, excluded = aggregate(BASE, ups, 8, AggregationRule(norm_bound=0.05))
    assert excluded == (2,)


def test_relative_bound_compares_squares_not_rounded_norms():
    # isqrt: 3, 5, 5 -> median 5, B = 5; [5, 1] has isqrt 5 but 26 > 25, so it goes
    ups = units([3, 0, 0], [3, 4, 0], [5, 1, 0])
    model, excluded = aggregate(BASE, ups, 8, AggregationRule(norm_factor=1.0))
    assert excluded == (2,)
    assert model["w"].tolist() == [13, 22, 30]
    # both bounds on: the smaller wins (B_abs = floor(0.02 * 256) = 5 vs B_rel = 10)
    assert aggregate(BASE, ups, 8, AggregationRule(norm_bound=0.02, norm_factor=2.0))[1] == (2,)
    assert aggregate(BASE, ups, 8, AggregationRule(norm_factor=2.0))[1] == ()


def test_everything_excluded_leaves_the_model_unchanged():
    model, excluded = aggregate(BASE, POISONED, 8, AggregationRule("median", norm_bound=0.001))  # B = 0
    assert model["w"].tolist() == BASE["w"].tolist() and model["w"] is not BASE["w"]
    assert excluded == (0, 1, 2, 3, 4)


def test_multi_krum_with_one_survivor_and_with_ties():
    rule = AggregationRule("multi-krum", f=3)
    model, excluded = aggregate(BASE, units([1, 1, 1]), 8, rule)
    assert model["w"].tolist() == [11, 21, 31] and excluded == ()
    # four equal updates and one other: max(1, 5 - 3) = 2 kept, equal scores break by block order
    _, excluded = aggregate(BASE, units([9, 9, 9], [1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1]), 8, rule)
    assert excluded == (0, 3, 4)


def test_multi_krum_scores_sum_m_minus_f_minus_2_neighbours():
    # points 0, 7, 8, 14, 19 with f = 1: two nearest give scores 113 50 37 61 146, so 19 goes;
    # three nearest would give 309 99 101 110 290 and drop 0 instead
    rule = AggregationRule("multi-krum", f=1)
    model, excluded = aggregate({"w": np.zeros(1, np.int64)}, units([0], [7], [8], [14], [19]), 8, rule)
    assert excluded == (4,) and model["w"].tolist() == [round(29 / 4)]


def test_refuses_what_breaks_the_int64_bounds():
    base = {"w": np.zeros(1, np.int64)}
    with pytest.raises(ValueError):
        aggregate(base, [(0, {"w": np.zeros(1, np.float32)})], 8, AggregationRule())
    with pytest.raises(ValueError):
        aggregate(base, [(1, {"w": np.full(1, 64.0, np.float32)})], 24, AggregationRule())
    with pytest.raises(ValueError):
        aggregate(base, [(1, {"w": np.zeros(1, np.float32)})] * 2049, 8, AggregationRule())
    with pytest.raises(ValueError):
        aggregate(base, [(1, {"w": np.zeros(2, np.float32)})], 8, AggregationRule())
