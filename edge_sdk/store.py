"""SQLite chain store: every valid block with its cumulative work and resulting model, and the tip.

WAL with synchronous=FULL: a block is durable once `add` returns, and a kill -9 at any moment
leaves the last committed state. A block and a tip change are one transaction, so a reorg
switches the tip atomically.
"""
from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from . import codec
from .block import Header
from .chain import now_ms
from .errors import ProtocolError, Reason
from .params import decode_model, encode_model, model_hash
from .validation import BlockState, check_header, is_better, validate_block, validate_genesis
from .work import work

SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    hash BLOB PRIMARY KEY,
    prev BLOB NOT NULL,
    height INTEGER NOT NULL,
    cumwork BLOB NOT NULL,      -- 32-byte big-endian, so BLOB order is numeric order
    header BLOB NOT NULL,
    raw BLOB NOT NULL,          -- the block envelope exactly as received
    raw_digest BLOB NOT NULL,   -- SHA-256 of raw: finds a block seen before without validating it again
    model BLOB NOT NULL,        -- canonical CBOR of the global model after this block
    received_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS blocks_by_height ON blocks(height);
CREATE INDEX IF NOT EXISTS blocks_by_raw ON blocks(raw_digest);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        if not Path(path).exists():
            raise FileNotFoundError(f"no chain database at {path}")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    else:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class ChainStore:
    """A node's chain on disk. Implements edge_sdk's ChainView, so blocks validate against it."""

    def __init__(self, path: str | Path, genesis_raw: bytes | None = None, decryptor=None):
        """`decryptor`: a device's Paillier key, so encrypted blocks yield models (miners have none)."""
        self.path = Path(path)
        self.decryptor = decryptor
        self.conn = connect(self.path)
        self.conn.executescript(SCHEMA)
        self._cache: dict[bytes, BlockState] = {}
        stored = self._meta("genesis")
        if stored is None:
            if genesis_raw is None:
                raise ValueError(f"{path} holds no chain; give a genesis block to start one")
            state, self.task = validate_genesis(genesis_raw)
            with self._transaction():
                self._insert(state, genesis_raw)
                self.conn.execute("INSERT INTO meta VALUES ('genesis', ?), ('tip', ?)", (state.hash, state.hash))
            stored = state.hash
        else:
            _, self.task = validate_genesis(self.raw_block(stored))
            if genesis_raw is not None and validate_genesis(genesis_raw)[0].hash != stored:
                raise ValueError(f"{path} holds the chain of another genesis")
        self.genesis_hash = stored

    def close(self) -> None:
        self.conn.close()

    def _meta(self, key: str) -> bytes | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _transaction(self):
        return _Transaction(self.conn)

    def _insert(self, state: BlockState, raw: bytes) -> None:
        header = state.header
        model = b"" if state.model is None else codec.encode(encode_model(state.model, self.task.chain.frac_bits))
        self.conn.execute(
            "INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (header.hash, header.prev_hash, header.height, state.cumwork.to_bytes(32, "big"), header.encode(), raw,
             hashlib.sha256(raw or header.hash).digest(), model, now_ms()),
        )

    # ChainView
    def get(self, block_hash: bytes) -> BlockState | None:
        state = self._cache.get(block_hash)
        if state is not None:
            return state
        row = self.conn.execute("SELECT header, cumwork, model FROM blocks WHERE hash = ?", (block_hash,)).fetchone()
        if row is None:
            return None
        model = decode_model(codec.decode(row[2]))[0] if row[2] else None
        state = BlockState(Header.decode(row[0]), int.from_bytes(row[1], "big"), model)
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[block_hash] = state
        return state

    def ancestor(self, block_hash: bytes, height: int) -> Header:
        row = self.conn.execute("SELECT header FROM blocks WHERE hash = ?", (block_hash,)).fetchone()
        header = Header.decode(row[0])
        while header.height > height:
            header = Header.decode(self.conn.execute("SELECT header FROM blocks WHERE hash = ?", (header.prev_hash,)).fetchone()[0])
        if header.height != height:
            raise ProtocolError(Reason.BAD_HEIGHT, f"no ancestor at height {height}")
        return header

    # node operations
    @property
    def tip(self) -> BlockState:
        return self.get(self._meta("tip"))

    def has(self, block_hash: bytes) -> bool:
        return self.conn.execute("SELECT 1 FROM blocks WHERE hash = ?", (block_hash,)).fetchone() is not None

    def add(self, raw: bytes, now: int | None = None) -> tuple[BlockState, bool]:
        """Validate and store a block. Returns (state, tip_changed). Raises ProtocolError if invalid."""
        row = self.conn.execute("SELECT hash FROM blocks WHERE raw_digest = ?", (hashlib.sha256(raw).digest(),)).fetchone()
        if row is not None:
            return self.get(row[0]), False
        _, _, state = validate_block(raw, task=self.task, chain=self, now_ms=now_ms() if now is None else now, decryptor=self.decryptor)
        if self.has(state.hash):
            return self.get(state.hash), False
        with self._transaction():
            self._insert(state, raw)
            tip = self.get(self._meta("tip"))
            better = is_better(state, tip)
            if better:
                self.conn.execute("UPDATE meta SET value = ? WHERE key = 'tip'", (state.hash,))
        self._cache[state.hash] = state
        return state, better

    def add_checkpoint(self, headers: list[Header], model, now: int | None = None) -> BlockState:
        """Adopt a snapshot: headers that extend a block this store has, each checked as a header
        (link, height, retarget, proof-of-work, miner set, time), and the global model after the
        last one, checked against that header's model hash. Blocks below the checkpoint keep only
        their headers. Atomic: a bad header or model changes nothing."""
        if not headers:
            raise ProtocolError(Reason.BAD_BODY, "a snapshot needs at least one header")
        parent = self.get(headers[0].prev_hash)
        if parent is None:
            raise ProtocolError(Reason.UNKNOWN_PARENT, "the snapshot does not extend a known block")
        if model_hash(model, self.task.chain.frac_bits) != headers[-1].model_hash:
            raise ProtocolError(Reason.BAD_MODEL_HASH, "the snapshot's model is not the one its header commits to")
        now = now_ms() if now is None else now
        with self._transaction():
            cumwork, previous = parent.cumwork, parent.header
            for i, header in enumerate(headers):
                check_header(header, previous, self.task, self, now)
                cumwork += work(header.target)
                state = BlockState(header, cumwork, model if i == len(headers) - 1 else None)
                if not self.has(header.hash):
                    self._insert(state, b"")
                previous = header
            if is_better(state, self.get(self._meta("tip"))):
                self.conn.execute("UPDATE meta SET value = ? WHERE key = 'tip'", (state.hash,))
        self._cache.clear()
        return self.get(headers[-1].hash)

    def raw_block(self, block_hash: bytes) -> bytes | None:
        row = self.conn.execute("SELECT raw FROM blocks WHERE hash = ?", (block_hash,)).fetchone()
        return row[0] if row else None

    def best_chain(self) -> list[Header]:
        """Headers from genesis to the tip."""
        headers = [self.tip.header]
        while headers[-1].height > 0:
            headers.append(self.ancestor(headers[-1].hash, headers[-1].height - 1))
        return headers[::-1]

    def count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM blocks").fetchone()[0]


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error (the connection runs in autocommit mode)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False
