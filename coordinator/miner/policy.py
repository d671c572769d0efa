"""When a miner stops waiting for updates and mines: the task's round rules (miner policy, not a
block rule), as pure functions of the pool size and the time the round's first update arrived."""

from __future__ import annotations

from edge_sdk.protocol.task import RoundRules

IDLE_WAIT_S = 0.5  # the loop wakes at least this often
MIN_WAIT_S = 0.01


def should_mine(pooled: int, round_started_ms: int | None, now_ms: int, rules: RoundRules) -> bool:
    """Mine once the pool has min_updates, or it has any and the round's wait is over."""
    if pooled == 0 or round_started_ms is None:
        return False
    return pooled >= rules.min_updates or now_ms - round_started_ms >= rules.max_wait_ms


def wait_seconds(round_started_ms: int | None, now_ms: int, rules: RoundRules) -> float:
    """How long the loop may sleep without missing the end of the round's wait."""
    if round_started_ms is None:
        return IDLE_WAIT_S
    left = (round_started_ms + rules.max_wait_ms - now_ms) / 1000
    return max(MIN_WAIT_S, min(IDLE_WAIT_S, left))
