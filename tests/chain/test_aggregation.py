import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_sdk.chain.aggregation import fedavg, quantize
from edge_sdk.protocol.fixedpoint import model_hash, to_fixed, to_float

FRAC = 24


@st.composite
def rounds(draw):
    shape = (draw(st.integers(1, 5)), draw(st.integers(1, 4)))
    k = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1e-4, 1e-2, 1.0, 30.0]))
    base = to_fixed({"w": rng.standard_normal(shape)}, FRAC)
    updates = [
        (int(rng.integers(1, 1 << 20)), {"w": (rng.uniform(-1, 1, shape) * scale).astype(np.float32)}) for _ in range(k)
    ]
    return base, updates


@given(rounds())
@settings(max_examples=200)
def test_matches_float64_fedavg_within_quantization_bound(case):
    base, updates = case
    result = fedavg(base, updates, FRAC)
    total = sum(n for n, _ in updates)
    reference = to_float(base, FRAC, np.float64)["w"] + sum(n * d["w"].astype(np.float64) for n, d in updates) / total
    got = to_float(result, FRAC, np.float64)["w"]
    # each delta rounds by <= 1/2 ulp of the fixed point, the weighted mean keeps that, the division adds 1/2
    assert np.max(np.abs(got - reference)) <= 2.0**-FRAC + 1e-12


@given(rounds())
@settings(max_examples=50)
def test_is_deterministic_and_order_independent(case):
    base, updates = case
    a = fedavg(base, updates, FRAC)
    b = fedavg(base, list(reversed(updates)), FRAC)
    assert model_hash(a, FRAC) == model_hash(b, FRAC)
    assert all(v.dtype == np.int64 for v in a.values())


def test_no_updates_changes_nothing_and_hash_is_sensitive():
    base = to_fixed({"w": np.ones((2, 2))}, FRAC)
    assert model_hash(fedavg(base, [], FRAC), FRAC) == model_hash(base, FRAC)
    bumped = {"w": base["w"].copy()}
    bumped["w"][0, 0] += 1
    assert model_hash(bumped, FRAC) != model_hash(base, FRAC)
    assert model_hash(base, FRAC) != model_hash(base, FRAC - 1)


def test_rounding_is_half_to_even_then_half_up():
    assert list(quantize(np.array([0.5, 1.5, -0.5, -1.5, 2.5]) / 2**FRAC, FRAC)) == [0, 2, 0, -2, 2]
    base = {"w": np.zeros(1, np.int64)}
    one = np.array([1.0 / 2**FRAC], np.float32)
    # (1*1 + 1*0) / 2 = 0.5 ulp -> rounds half up to 1; -0.5 ulp -> 0
    assert fedavg(base, [(1, {"w": one}), (1, {"w": one * 0})], FRAC)["w"][0] == 1
    assert fedavg(base, [(1, {"w": -one}), (1, {"w": one * 0})], FRAC)["w"][0] == 0
