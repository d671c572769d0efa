"""Re-validate a stored chain from genesis, trusting nothing the database cached."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_sdk import codec
from edge_sdk.block import Header
from edge_sdk.chain import now_ms
from edge_sdk.errors import ProtocolError, Reason
from edge_sdk.params import encode_model
from edge_sdk.validation import BlockState, is_better, validate_block, validate_genesis

from edge_sdk.store import connect


@dataclass(frozen=True)
class Failure:
    height: int
    block_hash: bytes
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"height {self.height} block {self.block_hash.hex()[:16]}: {self.rule}: {self.detail}"


@dataclass(frozen=True)
class VerifyReport:
    blocks: int
    tip: Header | None
    failure: Failure | None

    @property
    def ok(self) -> bool:
        return self.failure is None


class _Replay:
    """A ChainView over blocks verified so far: all headers, models only of the last two heights."""

    def __init__(self):
        self.headers: dict[bytes, Header] = {}
        self.states: dict[bytes, BlockState] = {}

    def get(self, block_hash: bytes) -> BlockState | None:
        return self.states.get(block_hash)

    def ancestor(self, block_hash: bytes, height: int) -> Header:
        header = self.headers[block_hash]
        while header.height > height:
            header = self.headers[header.prev_hash]
        return header

    def keep(self, state: BlockState) -> None:
        self.headers[state.hash] = state.header
        self.states[state.hash] = state
        if state.header.height >= 2:
            stale = [h for h, s in self.states.items() if s.header.height < state.header.height - 1]
            for h in stale:
                del self.states[h]


def verify_database(path: str | Path) -> VerifyReport:
    conn = connect(path, readonly=True)
    try:
        return _verify(conn)
    finally:
        conn.close()


def _verify(conn) -> VerifyReport:
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    rows = conn.execute("SELECT hash, height, raw, cumwork, model FROM blocks ORDER BY height, hash")
    replay, task, best, count = _Replay(), None, None, 0
    now = now_ms()
    for stored_hash, height, raw, cumwork, model in rows:
        count += 1
        try:
            if height == 0:
                if stored_hash != meta.get("genesis"):
                    raise ProtocolError(Reason.BAD_GENESIS, "a second genesis block is stored")
                state, task = validate_genesis(raw)
            else:
                _, _, state = validate_block(raw, task=task, chain=replay, now_ms=now)
        except ProtocolError as exc:
            return VerifyReport(count, best and best.header, Failure(height, stored_hash, exc.reason.value, exc.detail))
        mismatch = _compare_stored(state, stored_hash, height, cumwork, model, task.chain.frac_bits)
        if mismatch:
            return VerifyReport(count, best and best.header, Failure(height, stored_hash, "stored_state", mismatch))
        replay.keep(state)
        if best is None or is_better(state, best):
            best = state
    if best is None:
        return VerifyReport(0, None, Failure(0, bytes(32), "bad_genesis", "the database holds no blocks"))
    if meta.get("tip") != best.hash:
        return VerifyReport(count, best.header, Failure(best.header.height, best.hash, "stored_state", "the stored tip is not the best block"))
    return VerifyReport(count, best.header, None)


def _compare_stored(state: BlockState, stored_hash, height, cumwork, model, frac_bits) -> str | None:
    if state.hash != stored_hash:
        return "stored hash differs from the header's hash"
    if state.header.height != height:
        return "stored height differs from the header's"
    if int.from_bytes(cumwork, "big") != state.cumwork:
        return "stored cumulative work differs"
    if (b"" if state.model is None else codec.encode(encode_model(state.model, frac_bits))) != model:
        return "stored model differs from the recomputed one"
    return None
