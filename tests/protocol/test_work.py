import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_sdk.protocol.work import MAX_TARGET, is_retarget_height, meets_target, next_target, target_for_hashes, work


def test_meets_target_is_big_endian_and_inclusive():
    h = bytes(31) + b"\x10"
    assert meets_target(h, 0x10) and not meets_target(h, 0x0F)
    assert meets_target(b"\xff" * 32, MAX_TARGET)


def test_work_grows_as_target_shrinks():
    assert work(MAX_TARGET) == 1
    assert work(target_for_hashes(1000)) == pytest.approx(1000, rel=1e-9)
    assert work(1) == 1 << 255


def test_retarget_heights():
    assert [h for h in range(1, 17) if is_retarget_height(h, 4)] == [6, 11, 16]
    assert [h for h in range(1, 8) if is_retarget_height(h, 1)] == [3, 5, 7]


def kw(**over):
    base = dict(height=6, parent_target=1 << 200, span_ms=4000, window=4, interval_ms=1000, pow_limit=MAX_TARGET)
    base.update(over)
    return base


def test_retarget_scales_with_time_span():
    assert next_target(**kw()) == 1 << 200  # on schedule: unchanged
    assert next_target(**kw(span_ms=8000)) == 1 << 201  # twice as slow: twice as easy
    assert next_target(**kw(span_ms=2000)) == 1 << 199  # twice as fast: twice as hard
    assert next_target(**kw(span_ms=10**9)) == 1 << 202  # clamped to 4x
    assert next_target(**kw(span_ms=0)) == 1 << 198  # clamped to 1/4
    assert next_target(**kw(span_ms=10**9, pow_limit=1 << 201)) == 1 << 201
    assert next_target(**kw(height=7, span_ms=None)) == 1 << 200  # not a retarget height


@given(st.integers(1, MAX_TARGET), st.integers(-(10**6), 10**9), st.integers(1, 16), st.integers(1, 10**6))
def test_retarget_stays_within_bounds(parent, span, window, interval):
    new = next_target(
        height=window + 2, parent_target=parent, span_ms=span, window=window, interval_ms=interval, pow_limit=MAX_TARGET
    )
    assert 1 <= new <= MAX_TARGET
    assert parent // 4 <= new <= parent * 4
