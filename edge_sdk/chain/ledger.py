"""Rewards and penalties, derived from the chain: nothing to store that the best chain does not already say.

Per block: its miner earns `rewards.mining` only if the block aggregates at least
`rounds.min_updates` updates (an empty or thin block earns nothing, so censoring a round by
racing empty blocks does not pay); each aggregated update earns its device `rewards.per_sample`
per weighted sample (the claim capped as the aggregation rule caps it, never above the
certificate's quota); excluded updates earn nothing. Every node convicted by evidence in a
block forfeits `rewards.deposit`, once however often it is accused.
"""

from __future__ import annotations

from collections import Counter

from edge_sdk.chain.robust import weights
from edge_sdk.protocol import envelope
from edge_sdk.protocol.block import Block, Update
from edge_sdk.protocol.identity import node_id
from edge_sdk.protocol.task import Task


def balances(task: Task, best_chain_blocks: list[bytes]) -> dict[str, int]:
    """Balance per node id from the raw, already validated blocks of the best chain (genesis excluded)."""
    ledger: Counter = Counter()
    convicted: set[bytes] = set()
    rewards = task.rewards
    for raw in best_chain_blocks:
        block = Block.parse(raw, task.chain.max_block_bytes)
        updates = [Update.parse(u, task) for u in block.update_bytes]
        excluded = set(block.extras.excluded)
        if len(updates) - len(excluded) >= task.rounds.min_updates:
            ledger[node_id(block.header.miner)] += rewards.mining
        capped = weights([u.samples for u in updates], task.aggregation)
        for index, (update, weight) in enumerate(zip(updates, capped, strict=True)):
            if index not in excluded:
                ledger[node_id(update.device)] += rewards.per_sample * weight
        for item in block.extras.evidence:  # validated with the block: its first message's signer is the offender
            convicted.add(envelope.open_envelope(item.signed[0], max_bytes=len(item.signed[0])).signer)
    for offender in convicted:
        ledger[node_id(offender)] -= rewards.deposit
    return dict(ledger)
