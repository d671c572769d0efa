"""Re-validate a stored chain from genesis, trusting nothing the database cached."""

from __future__ import annotations

from dataclasses import dataclass, replace
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
    """A ChainView over blocks verified so far: all headers, states only of the last three heights
    (a block needs its parent's state and, in Paillier modes, its grandparent's model)."""

    def __init__(self):
        self.headers: dict[bytes, Header] = {}
        self.states: dict[bytes, BlockState] = {}

    def get(self, block_hash: bytes) -> BlockState | None:
        return self.states.get(block_hash)

    def header(self, block_hash: bytes) -> Header | None:
        return self.headers.get(block_hash)

    def keep(self, state: BlockState) -> None:
        self.headers[state.hash] = state.header
        self.states[state.hash] = replace(state, opened=None)
        parent = self.states.get(state.header.prev_hash)
        if state.opened is not None and parent is not None:  # Paillier: this block opened its parent
            self.states[parent.hash] = replace(parent, model=state.opened.model)
        if state.header.height >= 3:
            stale = [h for h, s in self.states.items() if s.header.height < state.header.height - 2]
            for h in stale:
                del self.states[h]


def verify_database(path: str | Path) -> VerifyReport:
    with StoredChain(path) as stored:
        return _verify(stored.meta(), stored.blocks())


def _verify(meta: dict[str, bytes], blocks) -> VerifyReport:
    replay, task, best, count = _Replay(), None, None, 0
    cumwork: dict[bytes, int] = {}
    stored_models: dict[bytes, bytes] = {}  # Paillier: blocks whose model a child opens later
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
        if state.model is None and row.height > 0:
            stored_models[row.hash] = row.model
            mismatch = None if task.privacy.encrypted else mismatch
        if state.opened is not None and state.header.prev_hash in stored_models:
            opened = codec.encode(encode_model(state.opened.model, task.chain.frac_bits))
            if stored_models.pop(state.header.prev_hash) not in (b"", opened):
                mismatch = "the stored model of the parent differs from the one this block's decryption opens"
        if mismatch:
            return VerifyReport(count, best and best.header, Failure(row.height, row.hash, "stored_state", mismatch))
        replay.keep(state)
        cumwork[state.hash] = state.cumwork
        if best is None or is_better(state, best):
            best = state
    if best is None:
        return VerifyReport(0, None, Failure(0, bytes(32), "bad_genesis", "the database holds no blocks"))
    tip = replay.header(meta.get("tip", b""))
    if tip is None:
        failure = Failure(best.header.height, best.hash, "stored_state", "the stored tip is not a stored block")
        return VerifyReport(count, best.header, failure)
    # the tip is the best block, except that a node never reorganises deeper than max_reorg_depth
    tip_state = BlockState(tip, cumwork[tip.hash], None, tip.hash, tip.timestamp_ms)
    limit = task.chain.max_reorg_depth
    for block_hash, work in cumwork.items():
        candidate = BlockState(replay.header(block_hash), work, None, block_hash, 0)
        if is_better(candidate, tip_state) and _abandoned(replay, candidate.header, tip, limit) <= limit:
            failure = Failure(tip.height, tip.hash, "stored_state", "the stored tip is not the best block")
            return VerifyReport(count, tip, failure)
    return VerifyReport(count, tip, None)


def _abandoned(replay: _Replay, new: Header, old: Header, limit: int) -> int:
    """Blocks of the branch ending in `old` that a switch to `new` abandons (limit + 1 when more),
    as ChainStore.abandoned counts them."""
    while new.height > old.height:
        new = replay.header(new.prev_hash)
    lost = 0
    while old.hash != new.hash and lost <= limit:
        if old.height == new.height:
            new = replay.header(new.prev_hash)
        old = replay.header(old.prev_hash)
        lost += 1
    return lost


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
