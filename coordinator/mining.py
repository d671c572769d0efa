"""Building and mining blocks: the miner's side of proof-of-work."""
from __future__ import annotations

import hashlib
import threading

from edge_sdk.aggregation import apply_updates
from edge_sdk.block import NONCE_OFFSET, Header, Update, block_template, seal_block
from edge_sdk.keys import Identity
from edge_sdk.task import Task
from edge_sdk.validation import BlockState, ChainView, check_update, expected_target

NONCE_LIMIT = 1 << 64


def search_nonce(header: Header, *, stop: threading.Event | None = None, start: int = 0, limit: int = NONCE_LIMIT) -> Header | None:
    """Find a nonce whose header hash meets the target; None if stopped or out of nonces.

    Hashes the fixed 212-byte prefix once and finishes each try from that midstate.
    """
    prefix = hashlib.sha256(header.encode()[:NONCE_OFFSET])
    target = header.target
    for nonce in range(start, limit):
        if stop is not None and nonce & 0x3FF == 0 and stop.is_set():
            return None
        h = prefix.copy()
        h.update(nonce.to_bytes(8, "big"))
        if int.from_bytes(h.digest(), "big") <= target:
            return header.with_nonce(nonce)
    return None


def build_block(
    *, identity: Identity, task: Task, chain: ChainView, parent: BlockState, update_bytes: list[bytes],
    now_ms: int, stop: threading.Event | None = None,
) -> bytes | None:
    """A mined, signed block on `parent` recording `update_bytes` (already validated by the miner)."""
    timestamp = max(now_ms, parent.header.timestamp_ms)
    updates = [Update.parse(raw, task) for raw in update_bytes]
    for update in updates:
        check_update(update, parent.header, timestamp, task)
    commitment, _ = apply_updates(task, parent.model, updates)
    template = block_template(
        parent=parent.header, task=task, miner=identity.public.sign_pk, update_bytes=update_bytes,
        commitment=commitment, timestamp_ms=timestamp, target=expected_target(task, parent.header, chain),
    )
    mined = search_nonce(template, stop=stop)
    if mined is None:
        return None
    return seal_block(identity, mined, update_bytes)

