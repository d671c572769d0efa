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
from edge_sdk.chain.store import ChainStore
from edge_sdk.chain.view import BlockState
from edge_sdk.clock import now_ms
from edge_sdk.protocol import codec
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
CREATE TABLE IF NOT EXISTS followed (one INTEGER PRIMARY KEY CHECK (one = 0), tip BLOB NOT NULL);
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

    def record(self, block_hash: bytes, update_bytes: Iterable[bytes]) -> None:
        """A valid block carries these updates: from now on a copy of one is a replay. They stay
        pooled until a block of the best chain carries them (see `follow`): a block that loses the
        fork choice must not take a round's updates out of every honest pool."""
        rows = [(hashlib.sha256(u).digest(), block_hash) for u in update_bytes]
        self.db.executemany("INSERT OR IGNORE INTO included VALUES (?, ?)", rows)

    def followed(self) -> bytes | None:
        """The tip the pool last followed, on disk: the store commits a tip before the miner's hooks
        run, so a miner killed in between follows that move when it starts again."""
        row = self.db.one("SELECT tip FROM followed")
        return None if row is None else row[0]

    def follow(self, chain: ChainStore, old: bytes, new: BlockState) -> int:
        """The tip moved from `old` to `new`; keep what the new tip's round can still take. Updates
        on another base go; so do those the new best chain carries (a block whose updates were all
        excluded keeps the base, and would otherwise offer them again). Those of abandoned blocks
        come back: their devices saw them recorded and never sign again on that base, so only the
        pools can still bring them into a block. One transaction with the new followed tip.
        Returns how many came back."""
        gone, added = _switch(chain, old, new)
        carried = {hashlib.sha256(u).digest() for block in added for u in _updates(chain, block)}
        back = 0
        with self.db.transaction():
            self.db.execute("DELETE FROM pool WHERE base != ?", (new.base,))
            self.db.executemany("DELETE FROM pool WHERE digest = ?", [(d,) for d in carried])
            self.parsed = {d: u for d, u in self.parsed.items() if u.base == new.base and d not in carried}
            for raw in (u for block in gone for u in _updates(chain, block)):
                update = Update.parse(raw, self.task)  # was valid in a block; verified again, it is rare
                if (
                    update.base == new.base
                    and update.digest not in carried
                    and update.device not in self.devices_on(new.base)
                    and not self._kept_by(chain, new, update.digest, set(gone))
                ):
                    self.add(update, now_ms())
                    back += 1
            self.db.execute("INSERT OR REPLACE INTO followed VALUES (0, ?)", (new.hash,))
        return back

    def _kept_by(self, chain: ChainStore, new: BlockState, digest: bytes, gone: set[bytes]) -> bool:
        """Whether a block of the best chain ending in `new`, below the switch, records `digest`: a
        miner can record an update twice on one branch (all excluded, the base stays), then abandon
        the second copy. One walk down the best chain per other block that recorded it."""
        rows = self.db.execute("SELECT block FROM included WHERE digest = ?", (digest,)).fetchall()
        for header in (chain.header(block) for (block,) in rows if block not in gone):
            if header.height <= new.header.height and chain.ancestor(new.hash, header.height).hash == header.hash:
                return True
        return False


def _switch(chain: ChainStore, old: bytes, new: BlockState) -> tuple[list[bytes], list[bytes]]:
    """The blocks a move of the tip from `old` to `new` abandons and adds, down to the new round's
    base block (updates in blocks at or below it are on older bases). Usually ([], [new]); longer
    only in a reorganisation, which the store bounds by max_reorg_depth abandoned blocks."""
    floor = chain.header(new.base).height
    a, b = chain.header(old), new.header
    gone, added = [], []
    while a.hash != b.hash and max(a.height, b.height) > floor:
        if a.height >= b.height:
            gone.append(a.hash)
            a = chain.header(a.prev_hash)
        else:
            added.append(b.hash)
            b = chain.header(b.prev_hash)
    return gone, added


def _updates(chain: ChainStore, block_hash: bytes) -> list[bytes]:
    """The update envelopes a stored block carries (none for a block known by its header only)."""
    raw = chain.raw_block(block_hash)
    return [] if not raw else codec.decode(raw)[3]["updates"]  # b"" below a checkpoint


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
