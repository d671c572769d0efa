"""An in-memory chain that follows the best tip: what a verifier (the emulator's observer) keeps."""

from __future__ import annotations

from edge_sdk.chain.rules import validate_block, validate_genesis
from edge_sdk.chain.view import BlockState, HeaderWalk, is_better
from edge_sdk.clock import now_ms
from edge_sdk.protocol.block import Header


class MemoryChain(HeaderWalk):
    """Validates and keeps every block it is given; `tip` follows fork choice."""

    def __init__(self, genesis_raw: bytes, decryptor=None):
        state, self.task = validate_genesis(genesis_raw)
        self.decryptor = decryptor
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
        _, _, state = validate_block(raw, task=self.task, chain=self, now_ms=now, decryptor=self.decryptor)
        known = self._states.get(state.hash)
        if known is not None:
            return known
        self._states[state.hash] = state
        self.raw[state.hash] = raw
        if is_better(state, self.tip):
            self.tip = state
        return state
