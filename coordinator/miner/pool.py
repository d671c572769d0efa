"""The miner's pool: verified updates waiting for a block, and the digests of updates already in one.

Stored in the miner's chain database (tables `pool` and `included`), so a restart keeps both.
Tables `admitted` and `refused` are an append-only audit trail (benchmarks/chaos.py reads them).
The parsed, verified `Update` of each pooled entry stays in memory, so mining and validating
blocks that carry pooled updates never check their signatures again; after a restart the pool
is parsed (and so verified) once when first read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from edge_sdk.chain.database import Database
from edge_sdk.clock import now_ms
from edge_sdk.protocol.block import Update
from edge_sdk.protocol.task import Task

SCHEMA = """
CREATE TABLE IF NOT EXISTS pool (
    digest BLOB PRIMARY KEY, base BLOB NOT NULL, device BLOB NOT NULL, raw BLOB NOT NULL, received_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS pool_by_round ON pool(base, device);
CREATE TABLE IF NOT EXISTS included (digest BLOB NOT NULL, block BLOB NOT NULL, PRIMARY KEY (digest, block));
CREATE TABLE IF NOT EXISTS admitted (
    digest BLOB PRIMARY KEY, base BLOB NOT NULL, device BLOB NOT NULL, ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS refused (digest BLOB NOT NULL, reason TEXT NOT NULL, ms INTEGER NOT NULL);
"""


class Pool:
    def __init__(self, db: Database, task: Task):
        self.db = db
        self.task = task
        self.db.script(SCHEMA)
        self.parsed: dict[bytes, Update] = {}  # digest -> verified update, for every pooled row read or added

    def seen(self, digest: bytes) -> bool:
        """Pooled now, or recorded in a block this miner accepted."""
        return bool(
            self.db.one("SELECT 1 FROM pool WHERE digest = ?", (digest,))
            or self.db.one("SELECT 1 FROM included WHERE digest = ?", (digest,))
        )

    def devices_on(self, base: bytes) -> _Round:
        """The devices with a pooled update on `base` (a container: `device in pool.devices_on(base)`)."""
        return _Round(self.db, base)

    def add(self, update: Update, received_ms: int) -> None:
        row = (update.digest, update.base, update.device, update.envelope.raw, received_ms)
        with self.db.transaction():
            self.db.execute("INSERT INTO pool VALUES (?, ?, ?, ?, ?)", row)
            self.db.execute("INSERT OR IGNORE INTO admitted VALUES (?, ?, ?, ?)", (*row[:3], received_ms))  # audit
        self.parsed[update.digest] = update

    def refuse(self, digest: bytes, reason: str) -> None:
        """Audit trail: this miner refused the update with this digest."""
        self.db.execute("INSERT INTO refused VALUES (?, ?, ?)", (digest, reason, now_ms()))

    def drop(self, digest: bytes, reason: str) -> None:
        """Take an update out of the pool (it can no longer go into a block) and record why."""
        with self.db.transaction():
            self.db.execute("DELETE FROM pool WHERE digest = ?", (digest,))
            self.refuse(digest, reason)
        self.parsed.pop(digest, None)

    def count_on(self, base: bytes) -> int:
        """How many updates are pooled on `base` (an index count: cheap enough to ask after every event)."""
        return self.db.one("SELECT count(*) FROM pool WHERE base = ?", (base,))[0]

    def on_base(self, base: bytes, limit: int) -> list[Update]:
        """Pooled updates on `base`, oldest first (ties by digest), at most `limit`."""
        rows = self.db.execute(
            "SELECT digest, raw FROM pool WHERE base = ? ORDER BY received_ms, digest LIMIT ?", (base, limit)
        ).fetchall()
        return [self._parsed(digest, raw) for digest, raw in rows]

    def _parsed(self, digest: bytes, raw: bytes) -> Update:
        if digest not in self.parsed:  # pooled before a restart: verified again, once
            self.parsed[digest] = Update.parse(raw, self.task)
        return self.parsed[digest]

    def of_device(self, base: bytes, device: bytes) -> Update | None:
        """The device's pooled update on `base`, if any (one per round)."""
        row = self.db.one("SELECT digest, raw FROM pool WHERE base = ? AND device = ?", (base, device))
        return None if row is None else self._parsed(*row)

    def mark_included(self, block_hash: bytes, update_bytes: Iterable[bytes]) -> None:
        """Recorded in a block: out of the pool (a block whose updates were all excluded leaves the
        round's base where it was, so they would otherwise be offered again)."""
        rows = [(hashlib.sha256(u).digest(), block_hash) for u in update_bytes]
        with self.db.transaction():
            self.db.executemany("INSERT OR IGNORE INTO included VALUES (?, ?)", rows)
            self.db.executemany("DELETE FROM pool WHERE digest = ?", [(d,) for d, _ in rows])
        for digest, _ in rows:
            self.parsed.pop(digest, None)

    def keep_only(self, base: bytes) -> None:
        """A new tip: updates on any other base can no longer go into a block."""
        with self.db.transaction():
            self.db.execute("DELETE FROM pool WHERE base != ?", (base,))
        self.parsed = {d: u for d, u in self.parsed.items() if u.base == base}


def read_audit(db_path: str | Path) -> tuple[list[tuple[bytes, bytes, bytes, int]], list[tuple[bytes, str, int]]]:
    """A miner database's audit trail, read-only: admitted (digest, base, device, ms), refused (digest, reason, ms)."""
    db = Database(db_path, readonly=True)
    try:
        return db.execute("SELECT * FROM admitted").fetchall(), db.execute("SELECT * FROM refused").fetchall()
    finally:
        db.close()


class _Round:
    def __init__(self, db: Database, base: bytes):
        self.db, self.base = db, base

    def __contains__(self, device: object) -> bool:
        return self.db.one("SELECT 1 FROM pool WHERE base = ? AND device = ?", (self.base, device)) is not None
