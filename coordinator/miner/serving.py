"""What a miner answers to a sync request: blocks after the requester's locator, or a late joiner's
snapshot (headers and the tip's model), signed, and only to the requester's own reply topic."""

from __future__ import annotations

from edge_sdk.chain.store import ChainStore
from edge_sdk.protocol import sync
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.identity import Identity, node_id
from edge_sdk.transport.mqtt import Incoming
from edge_sdk.transport.topics import Topics


def answer_sync(store: ChainStore, identity: Identity, msg: Incoming) -> bytes:
    """The signed response to a sync request; raises ProtocolError for a request to refuse."""
    task = store.task
    request = sync.parse_request(msg.payload, task)
    if msg.response_topic != Topics(task.id).reply(node_id(request.requester)):  # no reflection onto others
        raise ProtocolError(Reason.BAD_BODY, "a sync answer goes only to the requester's own reply topic")
    best = store.best_chain()
    hashes = [h.hash for h in best]
    if sync.wants_snapshot(request, hashes) and not task.privacy.encrypted:
        # a late joiner: headers and the tip's model, not every block
        tip = store.tip
        snapshot = sync.Snapshot([h.encode() for h in best[1:]], tip.model, tip.base, tip.revocations.raw or None)
        return sync.make_response(identity, task, [], snapshot)
    blocks, size = [], 0
    for h in sync.blocks_after(hashes, request):
        raw = store.raw_block(h)
        size += len(raw)
        if blocks and size > task.chain.max_block_bytes:
            break
        blocks.append(raw)
    return sync.make_response(identity, task, blocks)
