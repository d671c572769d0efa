"""Proof-of-work arithmetic: targets, work, and the difficulty retarget rule.

A target is a 256-bit unsigned integer; a header meets it when SHA-256(header), read big-endian,
is <= target. The work of a target is floor(2^256 / (target + 1)), the expected number of hashes.
"""

from __future__ import annotations

MAX_TARGET = (1 << 256) - 1


def meets_target(header_hash: bytes, target: int) -> bool:
    return int.from_bytes(header_hash, "big") <= target


def work(target: int) -> int:
    return (1 << 256) // (target + 1)


def target_for_hashes(expected_hashes: int) -> int:
    """The target at which one header in `expected_hashes` meets it on average."""
    return max(1, min(MAX_TARGET, (1 << 256) // max(1, expected_hashes) - 1))


def is_retarget_height(height: int, window: int) -> bool:
    """Heights at which the target changes: every `window + 1` blocks, from height window + 2.

    A window measures `window` intervals between the timestamps of `window + 1` blocks, and every
    one of those blocks has the same target. A miner stamps a block when it starts mining it, so
    the interval before a block is the time its parent took: had retargets come every `window`
    blocks, each window's first interval would time a block of the previous target, and a chain
    starting 10x off the real rate would overshoot and swing for about 20 blocks instead of
    settling at the second retarget.
    """
    return height >= window + 2 and (height - 1) % (window + 1) == 0


def next_target(
    *, height: int, parent_target: int, span_ms: int | None, window: int, interval_ms: int, pow_limit: int
) -> int:
    """Target for a block at `height`.

    At a retarget height, span_ms is the timestamp of block height-1 minus that of block
    height-1-window (genesis never counts: its time is when the task was written). The target
    scales by span / (window * interval), the factor clamped to [1/4, 4], the result to
    [1, pow_limit]. At any other height the parent's target carries over.
    """
    if not is_retarget_height(height, window):
        return parent_target
    if span_ms is None:
        raise ValueError("a retarget height needs the window's time span")
    expected = window * interval_ms
    new = parent_target * max(1, span_ms) // expected
    new = max(parent_target // 4, min(parent_target * 4, new))
    return max(1, min(pow_limit, new))
