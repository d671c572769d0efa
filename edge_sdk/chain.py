"""An in-memory chain that follows the best tip: what a device (or a verifier) keeps."""
from __future__ import annotations

import time

from .block import Header
from .errors import ProtocolError, Reason
from .validation import BlockState, is_better, validate_block, validate_genesis


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class MemoryChain:
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

    def ancestor(self, block_hash: bytes, height: int) -> Header:
        state = self._states[block_hash]
        while state.header.height > height:
            state = self._states[state.header.prev_hash]
        if state.header.height != height:
            raise ProtocolError(Reason.BAD_HEIGHT, f"no ancestor at height {height}")
        return state.header

    def add(self, raw: bytes, now: int | None = None) -> BlockState:
        """Validate and keep a block; returns its state (the known one if it was seen before)."""
        block, _, state = validate_block(raw, task=self.task, chain=self, now_ms=now_ms() if now is None else now, decryptor=self.decryptor)
        known = self._states.get(state.hash)
        if known is not None:
            return known
        self._states[state.hash] = state
        self.raw[state.hash] = raw
        if is_better(state, self.tip):
            self.tip = state
        return state
