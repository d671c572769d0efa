"""Proof-of-work arithmetic at its edges: exact integers (no float ever creeps in), the clamps at
both ends, and the values every node must compute bit for bit."""

import pytest

from edge_sdk.protocol.work import MAX_TARGET, next_target, target_for_hashes, work


def test_work_is_the_exact_floor_of_2_256_over_target_plus_one():
    assert work(2) == (1 << 256) // 3
    assert work(10**70) == (1 << 256) // (10**70 + 1)
    assert isinstance(work(2), int)


def test_target_for_hashes_is_exact():
    assert target_for_hashes(2) == (1 << 255) - 1
    assert target_for_hashes(3) == (1 << 256) // 3 - 1
    assert isinstance(target_for_hashes(3), int)


def test_one_or_fewer_expected_hashes_is_the_easiest_target():
    assert target_for_hashes(1) == MAX_TARGET
    assert target_for_hashes(0) == MAX_TARGET
    assert target_for_hashes(-5) == MAX_TARGET


def test_more_expected_hashes_than_targets_is_the_hardest_target_1():
    assert target_for_hashes(1 << 256) == 1
    assert target_for_hashes(1 << 300) == 1


def retarget(parent, span, window=4, interval=1000, limit=MAX_TARGET):
    return next_target(
        height=window + 2, parent_target=parent, span_ms=span, window=window, interval_ms=interval, pow_limit=limit
    )


def test_retarget_is_an_exact_integer_floor():
    parent = 3 * 10**60 + 7
    assert retarget(parent, 4001) == parent * 4001 // 4000
    assert retarget(parent, 3999) == parent * 3999 // 4000
    assert isinstance(retarget(parent, 4001), int)


def test_retarget_clamps_are_exact_for_targets_not_divisible_by_4():
    parent = 10**60 + 3
    assert retarget(parent, 0) == parent // 4
    assert retarget(parent, 10**12) == parent * 4


def test_a_zero_or_negative_span_counts_as_one_millisecond():
    # window 1 of 1 ms: a 1 ms span keeps the target; a shorter one must not make it easier
    assert retarget(1 << 100, 1, window=1, interval=1) == 1 << 100
    assert retarget(1 << 100, 0, window=1, interval=1) == 1 << 100
    assert retarget(1 << 100, -7, window=1, interval=1) == 1 << 100
    assert retarget(1 << 100, 2, window=1, interval=1) == 1 << 101


def test_the_target_never_falls_below_1():
    assert retarget(1, 0) == 1
    assert retarget(3, 0) == 1


def test_the_target_never_exceeds_the_pow_limit():
    assert retarget(1 << 200, 16_000, limit=(1 << 201) + 5) == (1 << 201) + 5


def test_a_retarget_height_without_a_time_span_is_an_error():
    with pytest.raises(ValueError, match="needs the window's time span"):
        retarget(1 << 200, None)
