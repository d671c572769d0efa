"""Rewards, derived from the chain: nothing to store that the best chain does not already say.

Each block credits its miner `rewards.mining`; each included update credits its device
`rewards.per_sample` per sample (an update's samples never exceed its certificate's quota, a
validity rule, so data rewards are capped by the quota).
"""

from __future__ import annotations

from collections import Counter

from edge_sdk.protocol.block import Block, Update
from edge_sdk.protocol.identity import node_id
from edge_sdk.protocol.task import Task


def balances(task: Task, best_chain_blocks: list[bytes]) -> dict[str, int]:
    """Credits per node id from the raw blocks of the best chain (genesis excluded)."""
    ledger: Counter = Counter()
    for raw in best_chain_blocks:
        block = Block.parse(raw, task.chain.max_block_bytes)
        ledger[node_id(block.header.miner)] += task.rewards.mining
        for update_raw in block.update_bytes:
            update = Update.parse(update_raw, task)
            ledger[node_id(update.device)] += task.rewards.per_sample * update.samples
    return dict(ledger)
