"""The retarget rule over simulated block times: no hashing, no sleeping.

A miner set with a true hash rate takes work(target) / rate to mine a block (the expected time,
or an exponential draw around it) and, like coordinator/miner/assembly.py, stamps a block when it
starts mining it. Targets come from the consensus rule itself (edge_sdk.chain.rules.expected_target)
over a one-branch chain view. A forger who lies about time is the same simulation with a rate near
zero: every window looks slow, so each retarget eases the target as far as the rule allows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from types import SimpleNamespace

from edge_sdk.chain.rules import expected_target
from edge_sdk.protocol.task import ChainParams
from edge_sdk.protocol.work import work

FORGER_RATE = 1e-9  # hashes/s: spans so long that every retarget eases the target fully


@dataclass(frozen=True)
class SimBlock:
    height: int
    hash: bytes  # the height; the view finds ancestors by height
    timestamp_ms: int
    target: int
    seconds: float  # time the miner set took to mine it

    @property
    def hashes(self) -> int:
        return work(self.target)


class _Branch:
    def __init__(self, genesis: SimBlock):
        self.blocks = [genesis]

    def ancestor(self, block_hash: bytes, height: int) -> SimBlock:
        return self.blocks[height]


def simulate(
    chain: ChainParams, hash_rate: float, blocks: int, *, rng: random.Random | None = None, stamp_at_found: bool = False
) -> list[SimBlock]:
    """Blocks 1..`blocks` mined by a miner set hashing `hash_rate` per second in total.

    stamp_at_found: stamp a block when it is found instead (the rule must settle either way).
    """
    task = SimpleNamespace(chain=chain)
    branch = _Branch(SimBlock(0, b"\0", 0, chain.initial_target, 0.0))
    clock_ms = 0.0
    for height in range(1, blocks + 1):
        parent = branch.blocks[-1]
        target = expected_target(task, parent, branch)
        mean = work(target) / hash_rate
        seconds = rng.expovariate(1 / mean) if rng else mean
        start = clock_ms
        clock_ms += seconds * 1000
        stamp = int(clock_ms if stamp_at_found else start)
        branch.blocks.append(SimBlock(height, height.to_bytes(8, "big"), stamp, target, seconds))
    return branch.blocks[1:]


def cheapest_fork_hashes(chain: ChainParams, blocks: int) -> int:
    """Expected hashes of the cheapest `blocks`-block chain from genesis the rules accept."""
    return sum(b.hashes for b in simulate(chain, FORGER_RATE, blocks))


def blocks_to_target(sim: list[SimBlock], interval_ms: int, tolerance: float = 0.25) -> int | None:
    """The first height from which every block's time is within `tolerance` of the interval."""
    settled = None
    for block in sim:
        if abs(block.seconds * 1000 / interval_ms - 1) <= tolerance:
            settled = settled or block.height
        else:
            settled = None
    return settled
