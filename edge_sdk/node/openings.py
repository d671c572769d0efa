"""Partial decryptions a node has verified, and opening a block's aggregate once t of them arrive.

Every node (device, miner, observer) keeps one: devices train on the opened model, miners put t
verified partials of their tip into the next block (`extras.decryption`). A partial for a block
the node does not have yet is kept raw, at most one per miner, and tried again when blocks
arrive. Only partials whose proof verifies are kept, so opening never fails on a bad one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from edge_sdk.chain.opening import Opened, open_aggregate
from edge_sdk.chain.view import BlockState
from edge_sdk.privacy import threshold
from edge_sdk.protocol.decryption import PartialDecryption, parse_partial
from edge_sdk.protocol.errors import ProtocolError, Reason

log = logging.getLogger("blockfl.openings")
KEEP_BLOCKS = 32  # blocks whose partials are kept (forks and the last few rounds)


class Openings:
    def __init__(self, store, on_opened: Callable[[BlockState, Opened], None]):
        self.store, self.task = store, store.task
        self.key = self.task.privacy.threshold.key
        self.on_opened = on_opened
        self.verified: dict[bytes, dict[int, PartialDecryption]] = {}
        self.pending: dict[str, bytes] = {}  # sender -> its latest partial for a block not known here

    def count_of(self, block_hash: bytes) -> int | None:
        state = self.store.get(block_hash)
        return None if state is None or state.aggregate is None else len(state.aggregate.ciphertexts)

    def receive(self, raw: bytes, source: str) -> None:
        """A gossiped partial: signature, shape, then proof; raises ProtocolError for a bad one."""
        try:
            message = parse_partial(raw, self.task, self.count_of)
        except ProtocolError as exc:
            if exc.reason is not Reason.UNKNOWN_PARENT:
                raise
            if source in self.pending or len(self.pending) < 2 * self.key.holders:
                self.pending[source] = raw
            return
        self.add(message.block, message.item)

    def add(self, block_hash: bytes, item: PartialDecryption, *, verified: bool = False) -> None:
        have = self.verified.get(block_hash, {})
        if item.share in have:
            return
        state = self.store.get(block_hash)
        if state is None or state.aggregate is None or (state.model is not None and not verified):
            return  # nothing to open, or opened already: a peer cannot make us verify it again
        if not verified and not threshold.verify(
            self.key, item.share, list(state.aggregate.ciphertexts), list(item.partials), item.proof
        ):
            raise ProtocolError(Reason.BAD_DECRYPTION, f"partial decryption of share {item.share} does not verify")
        self.verified.setdefault(block_hash, {})[item.share] = item
        while len(self.verified) > KEEP_BLOCKS:  # the lowest block goes: the tip's partials are never pushed out
            lowest = min(self.verified, key=lambda h: self._height(h))
            del self.verified[lowest]
        self.try_open(block_hash)

    def _height(self, block_hash: bytes) -> int:
        header = self.store.header(block_hash)
        return -1 if header is None else header.height

    def block_arrived(self) -> None:
        """Retry the partials that named a block this node did not have."""
        waiting, self.pending = self.pending, {}
        for source, raw in waiting.items():
            try:
                self.receive(raw, source)
            except ProtocolError as exc:
                log.debug("pending partial from %s refused: %s", source[:64], exc.reason.value)

    def items_for(self, block_hash: bytes) -> list[dict] | None:
        """t verified partials of a block, as a child block carries them; None if fewer are known."""
        have = self.verified.get(block_hash, {})
        if len(have) < self.key.threshold:
            return None
        return [have[share].to_wire(self.key) for share in sorted(have)[: self.key.threshold]]

    def try_open(self, block_hash: bytes) -> None:
        state = self.store.get(block_hash)
        if state is None or state.model is not None or state.aggregate is None:
            return
        have = self.verified.get(block_hash, {})
        parent = self.store.get(state.header.prev_hash)
        if len(have) < self.key.threshold or parent is None or parent.model is None:
            return
        partials = {share: list(item.partials) for share, item in have.items()}
        opened = open_aggregate(self.task, parent.model, state.aggregate, partials)
        if self.store.set_model(block_hash, opened.model):
            self.on_opened(self.store.get(block_hash), opened)
