"""Re-validate a stored chain from genesis, trusting nothing the database cached."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_sdk.chain.rules import validate_block, validate_genesis
from edge_sdk.chain.store import StoredBlock, StoredChain
from edge_sdk.chain.view import BlockState, HeaderWalk, is_better
from edge_sdk.clock import now_ms
from edge_sdk.protocol import codec
from edge_sdk.protocol.block import Header
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.fixedpoint import encode_model


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


class _Replay(HeaderWalk):
    """A ChainView over blocks verified so far: all headers, models only of the last two heights."""

    def __init__(self):
        self.headers: dict[bytes, Header] = {}
        self.states: dict[bytes, BlockState] = {}

    def get(self, block_hash: bytes) -> BlockState | None:
        return self.states.get(block_hash)

    def header(self, block_hash: bytes) -> Header | None:
        return self.headers.get(block_hash)

    def keep(self, state: BlockState) -> None:
        self.headers[state.hash] = state.header
        self.states[state.hash] = state
        if state.header.height >= 2:
            stale = [h for h, s in self.states.items() if s.header.height < state.header.height - 1]
            for h in stale:
                del self.states[h]


def verify_database(path: str | Path) -> VerifyReport:
    with StoredChain(path) as stored:
        return _verify(stored.meta(), stored.blocks())


def _verify(meta: dict[str, bytes], blocks) -> VerifyReport:
    replay, task, best, count = _Replay(), None, None, 0
    now = now_ms()
    for row in blocks:
        count += 1
        try:
            if row.height == 0:
                if row.hash != meta.get("genesis"):
                    raise ProtocolError(Reason.BAD_GENESIS, "a second genesis block is stored")
                state, task = validate_genesis(row.raw)
            else:
                _, _, state = validate_block(row.raw, task=task, chain=replay, now_ms=now)
        except ProtocolError as exc:
            return VerifyReport(
                count, best and best.header, Failure(row.height, row.hash, exc.reason.value, exc.detail)
            )
        mismatch = _compare_stored(state, row, task.chain.frac_bits)
        if mismatch:
            return VerifyReport(count, best and best.header, Failure(row.height, row.hash, "stored_state", mismatch))
        replay.keep(state)
        if best is None or is_better(state, best):
            best = state
    if best is None:
        return VerifyReport(0, None, Failure(0, bytes(32), "bad_genesis", "the database holds no blocks"))
    if meta.get("tip") != best.hash:
        failure = Failure(best.header.height, best.hash, "stored_state", "the stored tip is not the best block")
        return VerifyReport(count, best.header, failure)
    return VerifyReport(count, best.header, None)


def _compare_stored(state: BlockState, row: StoredBlock, frac_bits: int) -> str | None:
    if state.hash != row.hash:
        return "stored hash differs from the header's hash"
    if state.header.height != row.height:
        return "stored height differs from the header's"
    if int.from_bytes(row.cumwork, "big") != state.cumwork:
        return "stored cumulative work differs"
    if (b"" if state.model is None else codec.encode(encode_model(state.model, frac_bits))) != row.model:
        return "stored model differs from the recomputed one"
    return None
