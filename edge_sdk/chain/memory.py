"""An in-memory chain that follows the best tip: what a verifier (the emulator's observer) keeps."""

from __future__ import annotations

from dataclasses import replace

from edge_sdk.chain.rules import validate_block, validate_genesis
from edge_sdk.chain.view import BlockState, HeaderWalk, is_better
from edge_sdk.clock import now_ms
from edge_sdk.protocol.block import Header


class MemoryChain(HeaderWalk):
    """Validates and keeps every block it is given; `tip` follows fork choice."""

    def __init__(self, genesis_raw: bytes):
        state, self.task = validate_genesis(genesis_raw)
        self.genesis_hash = state.hash
        self._states: dict[bytes, BlockState] = {state.hash: state}
        self.raw: dict[bytes, bytes] = {state.hash: genesis_raw}
        self.tip = state

    @property
    def task_id(self) -> bytes:
        return self.task.id

    def get(self, block_hash: bytes) -> BlockState | None:
        return self._states.get(block_hash)

    def header(self, block_hash: bytes) -> Header | None:
        state = self._states.get(block_hash)
        return state.header if state else None

    def add(self, raw: bytes, now: int | None = None) -> BlockState:
        """Validate and keep a block; returns its state (the known one if it was seen before)."""
        now = now_ms() if now is None else now
        _, _, state = validate_block(raw, task=self.task, chain=self, now_ms=now)
        known = self._states.get(state.hash)
        if known is not None:
            return known
        if state.opened is not None:
            self.set_model(state.header.prev_hash, state.opened.model)
        self._states[state.hash] = state
        self.raw[state.hash] = raw
        if is_better(state, self.tip):
            self.tip = state
        return state

    def set_model(self, block_hash: bytes, model) -> bool:
        """Record the model of a block whose aggregate was just opened (Paillier); False if known."""
        state = self._states.get(block_hash)
        if state is None or state.model is not None:
            return False
        self._states[block_hash] = replace(state, model=model)
        if self.tip.hash == block_hash:
            self.tip = self._states[block_hash]
        return True
