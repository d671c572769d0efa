"""SQLite as nodes use it: WAL, synchronous=FULL, an autocommit connection and explicit transactions.

The chain store and a miner's pool share one `Database` (one file, one connection), and each
makes its own transactions through `transaction()`; nothing outside the storage modules writes SQL.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        if not Path(path).exists():
            raise FileNotFoundError(f"no chain database at {path}")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    else:
        # a node opens its store on one thread and uses it on its loop's thread (one user at a time)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        if not readonly:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
    except sqlite3.Error:  # not a database: let go of the file before the caller deals with it
        conn.close()
        raise
    return conn


class Database:
    """One connection in autocommit mode; `transaction()` is BEGIN IMMEDIATE ... COMMIT (or ROLLBACK)."""

    def __init__(self, path: str | Path, *, readonly: bool = False):
        self.path = Path(path)
        self.conn = connect(path, readonly=readonly)

    @contextmanager
    def transaction(self):
        """A write transaction; nested calls join the outer one, so callers can compose operations."""
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def execute(self, sql: str, params=()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows) -> sqlite3.Cursor:
        return self.conn.executemany(sql, rows)

    def one(self, sql: str, params=()):
        """The first row, or None."""
        return self.conn.execute(sql, params).fetchone()

    def script(self, sql: str) -> None:
        self.conn.executescript(sql)

    def close(self) -> None:
        self.conn.close()
