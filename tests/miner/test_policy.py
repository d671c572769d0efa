"""When a miner mines: the round rules as pure functions of pool size and time."""

from coordinator.miner.policy import IDLE_WAIT_S, MIN_WAIT_S, should_mine, wait_seconds
from edge_sdk.protocol.task import RoundRules

RULES = RoundRules(min_updates=3, max_wait_ms=1000)


def test_an_empty_pool_never_mines():
    assert not should_mine(0, 0, 10_000, RULES)
    assert not should_mine(0, None, 10_000, RULES)


def test_a_full_pool_mines_at_once():
    assert should_mine(3, 5000, 5000, RULES)
    assert should_mine(4, 5000, 5001, RULES)


def test_a_partial_pool_waits_for_the_round_to_end():
    assert not should_mine(2, 5000, 5999, RULES)
    assert should_mine(2, 5000, 6000, RULES)
    assert not should_mine(2, None, 6000, RULES)  # no round started, nothing to wait for


def test_the_loop_wakes_in_time_for_the_end_of_the_round():
    assert wait_seconds(None, 0, RULES) == IDLE_WAIT_S
    assert wait_seconds(5000, 5000, RULES) == IDLE_WAIT_S  # 1 s left, capped
    assert abs(wait_seconds(5000, 5800, RULES) - 0.2) < 1e-9
    assert wait_seconds(5000, 7000, RULES) == MIN_WAIT_S  # overdue: wake almost at once
