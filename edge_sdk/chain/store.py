"""SQLite chain store: every valid block with its cumulative work and resulting model, and the tip.

WAL with synchronous=FULL: a block is durable once `add` returns, and a kill -9 at any moment
leaves the last committed state. A block and a tip change are one transaction, so a reorg
switches the tip atomically.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from edge_sdk.chain.database import Database
from edge_sdk.chain.light_rules import light_state
from edge_sdk.chain.opening import Aggregate
from edge_sdk.chain.rules import check_header, validate_block, validate_genesis
from edge_sdk.chain.view import BlockState, HeaderWalk, is_better
from edge_sdk.clock import now_ms
from edge_sdk.protocol import codec
from edge_sdk.protocol.block import Header, Update
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.fixedpoint import decode_model, encode_model, model_hash
from edge_sdk.protocol.light import LightBlock
from edge_sdk.protocol.revocations import NO_REVOCATIONS, RevocationList, parse_revocations
from edge_sdk.protocol.sync import Snapshot
from edge_sdk.protocol.work import work

SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    hash BLOB PRIMARY KEY,
    prev BLOB NOT NULL,
    height INTEGER NOT NULL,
    cumwork BLOB NOT NULL,      -- 32-byte big-endian, so BLOB order is numeric order
    header BLOB NOT NULL,
    raw BLOB NOT NULL,          -- the block envelope exactly as received (empty below a snapshot)
    raw_digest BLOB NOT NULL,   -- SHA-256 of raw: finds a block seen before without validating it again
    model BLOB NOT NULL,        -- canonical CBOR of the global model after this block (empty if unknown)
    base BLOB NOT NULL,         -- the last block on this branch that changed the model
    base_ms INTEGER NOT NULL,   -- its timestamp
    revocations BLOB NOT NULL,  -- the revocation list in effect after this block (empty if none)
    aggregate BLOB NOT NULL,    -- Paillier: the encrypted sum of its updates, for its children to open (or empty)
    received_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS blocks_by_height ON blocks(height);
CREATE INDEX IF NOT EXISTS blocks_by_raw ON blocks(raw_digest);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS invalid (hash BLOB PRIMARY KEY);  -- light blocks shown invalid by an alert
"""
_CACHE_SIZE = 64


class ChainStore(HeaderWalk):
    """A node's chain on disk. A ChainView, so blocks validate against it."""

    def __init__(self, path: str | Path | Database, genesis_raw: bytes | None = None):
        self.db = path if isinstance(path, Database) else Database(path)
        self.path = self.db.path
        self.db.script(SCHEMA)
        self._cache: dict[bytes, BlockState] = {}
        self._revocation_cache = NO_REVOCATIONS
        self.reorgs_refused = 0
        stored = self._meta("genesis")
        if stored is None:
            if genesis_raw is None:
                raise ValueError(f"{self.path} holds no chain; give a genesis block to start one")
            state, self.task = validate_genesis(genesis_raw)
            with self.db.transaction():
                self._insert(state, genesis_raw)
                self.db.execute("INSERT INTO meta VALUES ('genesis', ?), ('tip', ?)", (state.hash, state.hash))
            stored = state.hash
        else:
            _, self.task = validate_genesis(self.raw_block(stored))
            if genesis_raw is not None and validate_genesis(genesis_raw)[0].hash != stored:
                raise ValueError(f"{self.path} holds the chain of another genesis")
        self.genesis_hash = stored

    def close(self) -> None:
        self.db.close()

    def _meta(self, key: str) -> bytes | None:
        row = self.db.one("SELECT value FROM meta WHERE key = ?", (key,))
        return row[0] if row else None

    def _insert(self, state: BlockState, raw: bytes) -> None:
        header = state.header
        model = b"" if state.model is None else codec.encode(encode_model(state.model, self.task.chain.frac_bits))
        row = (
            header.hash,
            header.prev_hash,
            header.height,
            state.cumwork.to_bytes(32, "big"),
            header.encode(),
            raw,
            hashlib.sha256(raw or header.hash).digest(),
            model,
            state.base,
            state.base_ms,
            state.revocations.raw,
            b"" if state.aggregate is None else state.aggregate.encode(self._width),
            now_ms(),
        )
        self.db.execute("INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)

    @property
    def _width(self) -> int:
        return self.task.privacy.packing.ciphertext_bytes

    def set_model(self, block_hash: bytes, model) -> bool:
        """Record the model of a block whose aggregate was just opened (Paillier); False if known.
        Empty light blocks stored on it before it opened (no model, no aggregate) share its model."""
        state = self.get(block_hash)
        if state is None or state.model is not None:
            return False
        encoded = codec.encode(encode_model(model, self.task.chain.frac_bits))
        self.db.execute("UPDATE blocks SET model = ? WHERE hash = ?", (encoded, block_hash))
        self._cache[block_hash] = replace(state, model=model)
        rows = self.db.execute(
            "SELECT hash FROM blocks WHERE prev = ? AND model = x'' AND aggregate = x''", (block_hash,)
        )
        for (child,) in rows.fetchall():
            if self.raw_block(child) == b"":  # a light block (a full one on an unopened parent is refused)
                self.set_model(child, model)
        return True

    def _set_tip_if_better(self, state: BlockState) -> bool:
        """Fork choice, except that a branch abandoning more than max_reorg_depth blocks of the
        best chain is never adopted (counted in `reorgs_refused`): history that deep is final here."""
        tip = self.get(self._meta("tip"))
        if not is_better(state, tip):
            return False
        limit = self.task.chain.max_reorg_depth
        if self.abandoned(state.header, tip.header, limit) > limit:
            self.reorgs_refused += 1
            return False
        self.db.execute("UPDATE meta SET value = ? WHERE key = 'tip'", (state.hash,))
        return True

    def abandoned(self, new: Header, old: Header, limit: int) -> int:
        """How many blocks of the branch ending in `old` a switch to `new` would abandon (limit + 1 when more)."""
        while new.height > old.height:
            new = self.header(new.prev_hash)
        lost = 0
        while old.hash != new.hash:
            if old.height == new.height:
                new = self.header(new.prev_hash)
            old = self.header(old.prev_hash)
            lost += 1
            if lost > limit:
                break
        return lost

    # ChainView
    def get(self, block_hash: bytes) -> BlockState | None:
        state = self._cache.get(block_hash)
        if state is not None:
            return state
        row = self.db.one(
            "SELECT header, cumwork, model, base, base_ms, revocations, aggregate FROM blocks WHERE hash = ?",
            (block_hash,),
        )
        if row is None:
            return None
        model = decode_model(codec.decode(row[2]))[0] if row[2] else None
        revocations = self._revocations(row[5])
        aggregate = Aggregate.decode(row[6]) if row[6] else None
        header, cumwork = Header.decode(row[0]), int.from_bytes(row[1], "big")
        state = BlockState(header, cumwork, model, row[3], row[4], revocations, aggregate)
        if len(self._cache) > _CACHE_SIZE:
            self._cache.clear()
        self._cache[block_hash] = state
        return state

    def _revocations(self, raw: bytes) -> RevocationList:
        """Parsed once per distinct list (lists change rarely; blocks share them)."""
        if not raw:
            return NO_REVOCATIONS
        if self._revocation_cache.raw != raw:
            self._revocation_cache = parse_revocations(raw, self.task)
        return self._revocation_cache

    def header(self, block_hash: bytes) -> Header | None:
        state = self._cache.get(block_hash)
        if state is not None:
            return state.header
        row = self.db.one("SELECT header FROM blocks WHERE hash = ?", (block_hash,))
        return Header.decode(row[0]) if row else None

    # node operations
    @property
    def tip(self) -> BlockState:
        return self.get(self._meta("tip"))

    def has(self, block_hash: bytes) -> bool:
        return self.db.one("SELECT 1 FROM blocks WHERE hash = ?", (block_hash,)) is not None

    def add(
        self, raw: bytes, now: int | None = None, *, known_updates: Mapping[bytes, Update] | None = None
    ) -> tuple[BlockState, bool]:
        """Validate and store a block. Returns (state, tip_changed). Raises ProtocolError if invalid."""
        row = self.db.one("SELECT hash FROM blocks WHERE raw_digest = ?", (hashlib.sha256(raw).digest(),))
        if row is not None:
            return self.get(row[0]), False
        now = now_ms() if now is None else now
        _, _, state = validate_block(raw, task=self.task, chain=self, now_ms=now, known_updates=known_updates)
        if self.has(state.hash):
            return self.get(state.hash), False
        with self.db.transaction():
            if state.opened is not None:
                self.set_model(state.header.prev_hash, state.opened.model)
            self._insert(state, raw)
            better = self._set_tip_if_better(state)
        self._cache[state.hash] = replace(state, opened=None)
        return state, better

    def add_light(self, light: LightBlock, now: int | None = None) -> tuple[BlockState, bool]:
        """Store a light block (header, and the model or aggregate it commits to) without its
        updates; see chain/light_rules.py for what that does and does not check."""
        header_hash = light.header.hash
        if self.is_invalid(header_hash):
            raise ProtocolError(Reason.KNOWN_INVALID, "an alert showed this block invalid")
        if self.has(header_hash):
            return self.get(header_hash), False
        state = light_state(light, self.task, self, now_ms() if now is None else now)
        with self.db.transaction():
            self._insert(state, b"")
            better = self._set_tip_if_better(state)
        self._cache[state.hash] = state
        return state, better

    def is_invalid(self, block_hash: bytes) -> bool:
        return self.db.one("SELECT 1 FROM invalid WHERE hash = ?", (block_hash,)) is not None

    def invalidate(self, block_hash: bytes) -> int:
        """Forget a block shown invalid and every block built on it, never accept it again, and move
        the tip to the best block left. Returns how many blocks were removed."""
        doomed, frontier = [], [block_hash] if self.has(block_hash) else []
        while frontier:
            doomed.extend(frontier)
            marks = ",".join("?" * len(frontier))
            frontier = [r[0] for r in self.db.execute(f"SELECT hash FROM blocks WHERE prev IN ({marks})", frontier)]
        with self.db.transaction():
            self.db.execute("INSERT OR IGNORE INTO invalid VALUES (?)", (block_hash,))
            for h in doomed:
                self.db.execute("DELETE FROM blocks WHERE hash = ?", (h,))
            if self._meta("tip") in doomed:
                best = self.db.one("SELECT hash FROM blocks ORDER BY cumwork DESC, hash ASC LIMIT 1")[0]
                self.db.execute("UPDATE meta SET value = ? WHERE key = 'tip'", (best,))
        self._cache.clear()
        return len(doomed)

    def add_checkpoint(self, snapshot: Snapshot, now: int | None = None) -> BlockState:
        """Adopt a snapshot: headers that extend a block this store has, each checked as a header
        (link, height, retarget, proof-of-work, miner set, time), and the global model after the
        last one, checked against that header's model hash. Its round base must be one of its
        blocks (or the block it extends) with the same model hash, and its revocation list must
        be the coordinator's. Blocks below the checkpoint keep only their headers. Atomic: a bad
        header or model changes nothing. Whether to trust the snapshot at all (several miners
        agree) is the caller's decision."""
        headers = [Header.decode(h) for h in snapshot.headers]
        if not headers:
            raise ProtocolError(Reason.BAD_BODY, "a snapshot needs at least one header")
        parent = self.get(headers[0].prev_hash)
        if parent is None:
            raise ProtocolError(Reason.UNKNOWN_PARENT, "the snapshot does not extend a known block")
        tip = headers[-1]
        if model_hash(snapshot.model, self.task.chain.frac_bits) != tip.model_hash:
            raise ProtocolError(Reason.BAD_MODEL_HASH, "the snapshot's model is not the one its header commits to")
        base = next((h for h in [parent.header, *headers] if h.hash == snapshot.base), None)
        if base is None or base.model_hash != tip.model_hash:
            raise ProtocolError(Reason.BAD_BODY, "the snapshot's base is not one of its blocks with its model")
        revocations = NO_REVOCATIONS
        if snapshot.revocations is not None:
            revocations = parse_revocations(snapshot.revocations, self.task)
        now = now_ms() if now is None else now
        with self.db.transaction():
            cumwork, previous = parent.cumwork, parent.header
            for i, header in enumerate(headers):
                check_header(header, previous, self.task, self, now)
                cumwork += work(header.target)
                last = i == len(headers) - 1
                state = BlockState(
                    header,
                    cumwork,
                    snapshot.model if last else None,
                    base.hash if last else header.hash,  # below the checkpoint nobody trains: placeholders
                    base.timestamp_ms if last else header.timestamp_ms,
                    revocations if last else NO_REVOCATIONS,
                )
                if not self.has(header.hash):
                    self._insert(state, b"")
                previous = header
            self._set_tip_if_better(state)
        self._cache.clear()
        return self.get(headers[-1].hash)

    def raw_block(self, block_hash: bytes) -> bytes | None:
        row = self.db.one("SELECT raw FROM blocks WHERE hash = ?", (block_hash,))
        return row[0] if row else None

    def best_chain(self) -> list[Header]:
        """Headers from genesis to the tip."""
        return self.branch(self._meta("tip"))

    def count(self) -> int:
        return self.db.one("SELECT count(*) FROM blocks")[0]


@dataclass(frozen=True)
class StoredBlock:
    """A row as stored, trusting nothing: what `chain verify` replays."""

    hash: bytes
    height: int
    raw: bytes
    cumwork: bytes
    model: bytes


class StoredChain:
    """Read-only access to a chain database: its meta entries and every block in height order."""

    def __init__(self, path: str | Path):
        self.db = Database(path, readonly=True)

    def __enter__(self) -> StoredChain:
        return self

    def __exit__(self, *exc) -> None:
        self.db.close()

    def meta(self) -> dict[str, bytes]:
        return dict(self.db.execute("SELECT key, value FROM meta").fetchall())

    def blocks(self) -> Iterator[StoredBlock]:
        rows = self.db.execute("SELECT hash, height, raw, cumwork, model FROM blocks ORDER BY height, hash")
        for row in rows:
            yield StoredBlock(*row)
