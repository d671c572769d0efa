"""Initial difficulty and retargeting: calibration, convergence from a bad start, what a fork costs."""

import random

import pytest

from coordinator.task.calibrate import POW_LIMIT_DIVISOR, initial_difficulty, measure_hash_rate
from coordinator.tools.retarget_sim import blocks_to_target, cheapest_fork_hashes, simulate
from edge_sdk.protocol.task import ChainParams
from edge_sdk.protocol.work import work

RATE = 1_000_000  # hashes/s of the whole simulated miner set
INTERVAL_MS = 10_000
CALIBRATED = RATE * INTERVAL_MS // 1000


def params(initial_hashes: int) -> ChainParams:
    """A task starting at `initial_hashes` whose easiest block is a quarter of the calibrated one
    (or of its start, when that is easier: the manifest needs initial_target <= pow_limit)."""
    start = initial_difficulty(miners=1, interval_ms=INTERVAL_MS, initial_hashes=initial_hashes)
    limit = initial_difficulty(miners=1, interval_ms=INTERVAL_MS, initial_hashes=min(initial_hashes, CALIBRATED))
    return ChainParams(
        initial_target=start.initial_target,
        pow_limit=limit.pow_limit,
        target_interval_ms=INTERVAL_MS,
        retarget_window=4,
    )


def test_calibration_is_miners_times_rate_times_interval():
    d = initial_difficulty(miners=3, interval_ms=10_000, hash_rate=250_000)
    assert d.expected_hashes == 7_500_000 and not d.measured
    assert work(d.initial_target) == pytest.approx(7_500_000, rel=1e-9)
    assert work(d.pow_limit) == pytest.approx(7_500_000 // POW_LIMIT_DIVISOR, rel=1e-9)
    assert "250,000 hashes/s per miner (given) x 3 miners" in d.describe()
    assert initial_difficulty(miners=3, interval_ms=10_000, initial_hashes=2000).expected_hashes == 2000
    with pytest.raises(ValueError):
        initial_difficulty(miners=1, interval_ms=1000, hash_rate=0)


def test_measuring_uses_the_miners_search_and_stays_bounded():
    assert measure_hash_rate(0.05) > 10_000
    d = initial_difficulty(miners=2, interval_ms=1000, seconds=0.05)
    assert d.measured and d.expected_hashes == round(d.hash_rate * 2)


@pytest.mark.parametrize("off", [10, 0.1])
@pytest.mark.parametrize("stamp_at_found", [False, True])
def test_retargeting_reaches_the_interval_within_two_retargets(off, stamp_at_found):
    sim = simulate(params(int(CALIBRATED * off)), RATE, 30, stamp_at_found=stamp_at_found)
    # window 4: retargets at heights 6 and 11; a 10x error needs two 4x steps
    assert blocks_to_target(sim, INTERVAL_MS, tolerance=0.25) == 11
    assert all(b.seconds == pytest.approx(10, rel=1e-3) for b in sim[10:])


def test_random_block_times_settle_near_the_interval():
    sim = simulate(params(CALIBRATED * 10), RATE, 3000, rng=random.Random(1))
    settled = [b.seconds for b in sim[20:]]
    # difficulty follows 1/span and a 4-interval span is noisy, so the mean interval runs about
    # W/(W-1) = 4/3 of the target (see docs/difficulty.md)
    assert 10 < sum(settled) / len(settled) < 14


def test_a_fork_costs_at_least_a_quarter_of_honest_work_per_block():
    task = params(CALIBRATED)
    honest = sum(b.hashes for b in simulate(task, RATE, 62))
    assert honest == pytest.approx(62 * CALIBRATED, rel=1e-6)
    # the first window is at the calibrated target, then the easiest target (1/4) from height 6
    for k in (3, 62):
        assert cheapest_fork_hashes(task, k) == pytest.approx(
            CALIBRATED * (min(k, 5) + max(0, k - 5) / POW_LIMIT_DIVISOR), rel=1e-6
        )
