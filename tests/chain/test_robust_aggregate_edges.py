"""robust.aggregate at its limits: exactly MAX_UPDATES updates, models of more than two parameters
(each laid back at its own offset), and refusals that say what is wrong."""

import numpy as np
import pytest

from edge_sdk.chain.aggregation import fedavg
from edge_sdk.chain.robust import MAX_UPDATES, aggregate
from edge_sdk.protocol.aggregation_rule import AggregationRule

BASE = {"w": np.zeros(1, np.int64)}


def test_exactly_max_updates_are_aggregated():
    updates = [(1, {"w": np.array([k % 3], np.float32) / 256}) for k in range(MAX_UPDATES)]
    model, excluded = aggregate(BASE, updates, 8, AggregationRule())
    assert excluded == () and model["w"].tolist() == [(2 * sum(k % 3 for k in range(MAX_UPDATES)) + 2048) // 4096]
    with pytest.raises(ValueError, match=f"{MAX_UPDATES + 1} updates, at most {MAX_UPDATES}"):
        aggregate(BASE, updates + updates[:1], 8, AggregationRule())


@pytest.mark.parametrize("rule", [AggregationRule(weight_cap=0), AggregationRule("median")])
def test_each_parameter_of_a_larger_model_gets_its_own_values_back(rule):
    base = {"a": np.arange(2, dtype=np.int64), "b": np.arange(3, dtype=np.int64) * 10, "c": np.array([7], np.int64)}
    delta = {"a": np.array([1, 2], np.float32), "b": np.array([3, 4, 5], np.float32), "c": np.array([6], np.float32)}
    model, _ = aggregate(base, [(5, {k: v / 256 for k, v in delta.items()})], 8, rule)
    assert {k: v.tolist() for k, v in model.items()} == {"a": [1, 3], "b": [3, 14, 25], "c": [13]}
    assert all(
        np.array_equal(model[k], v) for k, v in fedavg(base, [(5, {k: v / 256 for k, v in delta.items()})], 8).items()
    )


def test_refusals_name_what_is_wrong():
    with pytest.raises(ValueError, match="sample counts must be in"):
        aggregate(BASE, [(0, {"w": np.zeros(1, np.float32)})], 8, AggregationRule())
    unknown = AggregationRule()
    object.__setattr__(unknown, "rule", "mean-of-best")  # past the manifest's validation, as a bug would be
    with pytest.raises(ValueError, match="unknown aggregation rule 'mean-of-best'"):
        aggregate(BASE, [(1, {"w": np.zeros(1, np.float32)})], 8, unknown)
