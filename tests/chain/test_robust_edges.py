"""The exact-integer aggregation helpers at their boundaries: the ranges they accept (both ends,
inclusive or not), the refusals and what they say, and the values the public helpers return."""

import numpy as np
import pytest

from edge_sdk.chain.aggregation import MAX_TOTAL_SAMPLES, fedavg
from edge_sdk.chain.robust import (
    MAX_VALUES,
    aggregate,
    exact_square_sum,
    norm_bound,
    pairwise_sq_distances,
    trimmed_mean,
)
from edge_sdk.protocol.aggregation_rule import AggregationRule

BASE = {"w": np.zeros(2, np.int64)}


def one(value: float, n: int = 1):
    return (n, {"w": np.full(2, value, np.float32)})


def test_fedavg_refuses_a_round_of_zero_samples():
    with pytest.raises(ValueError, match="total sample count 0"):
        fedavg(BASE, [one(1.0, 0)], 8)


def test_fedavg_accepts_exactly_2_31_samples_and_no_more():
    half = MAX_TOTAL_SAMPLES // 2
    assert fedavg(BASE, [one(1.0, half), one(3.0, half)], 8)["w"].tolist() == [512, 512]
    with pytest.raises(ValueError, match="outside"):
        fedavg(BASE, [one(1.0, half), one(3.0, half + 1)], 8)


def test_a_quantized_delta_of_minus_2_30_is_refused_like_plus_2_30():
    for value in (64.0, -64.0):  # 64 * 2^24 = 2^30
        with pytest.raises(ValueError, match="outside"):
            aggregate(BASE, [one(value)], 24, AggregationRule())
    assert aggregate(BASE, [one(-63.5)], 24, AggregationRule())[0]["w"].tolist() == [-63.5 * 2**24] * 2


def test_a_delta_of_another_shape_is_refused_by_name():
    with pytest.raises(ValueError, match="update 0: w has shape"):
        aggregate(BASE, [(1, {"w": np.zeros(3, np.float32)})], 8, AggregationRule())


def test_exact_square_sum_takes_plus_and_minus_2_31_and_nothing_beyond():
    assert exact_square_sum(np.array([1 << 31, -(1 << 31)])) == 2 * (1 << 62)
    for outside in (1 << 31) + 1, -(1 << 31) - 1:
        with pytest.raises(ValueError, match="within"):
            exact_square_sum(np.array([outside]))


def test_exact_square_sum_widens_narrow_integers_before_squaring():
    assert exact_square_sum(np.array([50_000, -50_000], np.int32)) == 2 * 50_000**2  # > 2^31: no int32 overflow
    assert exact_square_sum(np.array([[100], [-3]], np.int8)) == [10_000, 9]


def test_exact_square_sum_takes_rows_of_2_28_values_and_no_longer():
    assert exact_square_sum(np.zeros((0, MAX_VALUES), np.int64)) == []  # no rows: nothing allocated
    with pytest.raises(ValueError, match="more than 2"):
        exact_square_sum(np.zeros((0, MAX_VALUES + 1), np.int64))


def test_norm_bound_is_none_when_both_bounds_are_off():
    assert norm_bound([3, 4, 100], 8, AggregationRule()) is None
    assert norm_bound([], 8, AggregationRule(norm_factor=2.0)) is None  # a relative bound needs norms
    assert norm_bound([3, 4, 100], 8, AggregationRule(norm_factor=2.0)) == 8


def test_pairwise_distances_are_exact_squares_with_a_zero_diagonal():
    q = np.array([[0, 0], [3, 4], [6, 8]], np.int64)
    assert pairwise_sq_distances(q) == [[0, 25, 100], [25, 0, 25], [100, 25, 0]]


def test_trimmed_mean_refuses_a_trim_that_leaves_nothing():
    q = np.array([[1], [2]], np.int64)
    assert trimmed_mean(q, 0.49).tolist() == [2]  # (2 * 3 + 2) // 4: floor((3 + 1) / 2) rounding half up
    with pytest.raises(ValueError, match="trim 0.5 leaves no values of 2"):
        trimmed_mean(q, 0.5)
