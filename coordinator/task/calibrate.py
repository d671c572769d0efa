"""The initial difficulty of a task, calibrated to what its miners really hash.

A fixed guess far below the miners' rate makes the chain's first blocks, and everything the
retarget rule needs to climb to the real rate, nearly free to forge. So the initial target is the
one at which the whole miner set finds one block per target interval, measured with the miners'
own nonce search (or from a per-miner rate the operator states, when miners run elsewhere).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from coordinator.miner.assembly import search_nonce
from edge_sdk.protocol.block import Header
from edge_sdk.protocol.work import target_for_hashes

# pow_limit's work is this fraction of the calibrated work: no block, honest or forged, is ever
# cheaper than a quarter of a calibrated block. A quarter is one retarget step (the rule clamps each
# step to 4x), so honest miners that really slowed down (half the miner set gone) still get an
# easier target, while a forger's chain of easiest blocks costs at least 1/4 of the honest chain's
# work per block (a limit of 1/64 of the initial work made it 64x cheaper).
POW_LIMIT_DIVISOR = 4
MEASURE_CHUNK = 20_000  # nonces per timed call


@dataclass(frozen=True)
class Difficulty:
    """Expected hashes per block at the start, and the per-miner rate it came from (if any)."""

    expected_hashes: int
    hash_rate: float | None = None  # hashes per second per miner; None when a hash count was given
    measured: bool = False
    miners: int = 1
    interval_ms: int = 0

    @property
    def initial_target(self) -> int:
        return target_for_hashes(self.expected_hashes)

    @property
    def pow_limit(self) -> int:
        return target_for_hashes(max(1, self.expected_hashes // POW_LIMIT_DIVISOR))

    def describe(self) -> str:
        limit = f"easiest block {max(1, self.expected_hashes // POW_LIMIT_DIVISOR):,} hashes"
        if self.hash_rate is None:
            return f"difficulty: {self.expected_hashes:,} expected hashes per block (given); {limit}"
        source = "measured on this machine" if self.measured else "given"
        return (
            f"difficulty: {self.hash_rate:,.0f} hashes/s per miner ({source}) x {self.miners} miners "
            f"x {self.interval_ms / 1000:g} s target interval = {self.expected_hashes:,} expected hashes "
            f"per block; {limit}"
        )


def measure_hash_rate(seconds: float = 0.5) -> float:
    """Hashes per second of one miner's nonce search (search_nonce itself) on this machine.

    Searches a header whose target no hash meets, in chunks, for about `seconds`.
    """
    header = Header(1, bytes(32), bytes(32), bytes(32), bytes(32), bytes(32), 0, 0)
    done, start = 0, time.perf_counter()
    while True:
        search_nonce(header, start=done, limit=done + MEASURE_CHUNK)
        done += MEASURE_CHUNK
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def initial_difficulty(
    *,
    miners: int,
    interval_ms: int,
    initial_hashes: int | None = None,
    hash_rate: float | None = None,
    seconds: float = 0.5,
) -> Difficulty:
    """An explicit hash count as is; otherwise miners x rate (stated, or measured here) x interval."""
    if initial_hashes is not None:
        if initial_hashes < 1:
            raise ValueError("initial hashes must be >= 1")
        return Difficulty(initial_hashes)
    if hash_rate is not None and hash_rate <= 0:
        raise ValueError("hash rate must be > 0")
    measured = hash_rate is None
    rate = measure_hash_rate(seconds) if measured else hash_rate
    expected = max(1, round(rate * miners * interval_ms / 1000))
    return Difficulty(expected, rate, measured, miners, interval_ms)
