"""This miner's part in threshold decryption (Paillier modes): which aggregates it decrypts.

A share holder decrypts a block's aggregate when the block becomes its tip, and on one round
base only aggregates of one update set: two competing blocks on one base with different,
overlapping update sets would reveal their difference when both are opened (a single update when
they differ by one). Competing blocks with the same set (the usual fork: two miners, the same
updates) open alike. The choice is kept in the miner's database, so a restart keeps it. Only when
the round is stuck (no block of it opens for two block intervals) does a holder open a second
set, for liveness: counted and logged, a named hole.
"""

from __future__ import annotations

import hashlib

from edge_sdk.chain.database import Database
from edge_sdk.chain.view import BlockState
from edge_sdk.privacy.threshold import KeyShare, partial_decrypt, prove
from edge_sdk.protocol.decryption import PartialDecryption

SCHEMA = "CREATE TABLE IF NOT EXISTS decrypted (base BLOB PRIMARY KEY, update_set BLOB NOT NULL)"


class ShareHolder:
    def __init__(self, db: Database, share: KeyShare, task):
        self.db, self.share = db, share
        self.key = task.privacy.threshold.key
        self.db.script(SCHEMA)

    def claim(self, block: BlockState, round_base: bytes, update_set: bytes, *, force: bool = False) -> bool:
        """Whether to decrypt `block` (whose updates name `round_base` and hash to `update_set`);
        records the choice. `force`: the round is stuck, open it anyway."""
        if block.aggregate is None:
            return False
        row = self.db.one("SELECT update_set FROM decrypted WHERE base = ?", (round_base,))
        if row is not None and row[0] != update_set and not force:
            return False
        self.db.execute("INSERT OR REPLACE INTO decrypted VALUES (?, ?)", (round_base, update_set))
        return True

    @staticmethod
    def update_set(update_bytes) -> bytes:
        """One digest for a set of updates, whatever their order in the block."""
        return hashlib.sha256(b"".join(sorted(hashlib.sha256(u).digest() for u in update_bytes))).digest()

    def decrypt(self, block: BlockState) -> PartialDecryption:
        """This share's partial decryption of the block's aggregate, with its proof (a worker thread's job)."""
        ciphertexts = list(block.aggregate.ciphertexts)
        partials = partial_decrypt(self.share, self.key, ciphertexts)
        return PartialDecryption(self.share.index, tuple(partials), prove(self.share, self.key, ciphertexts, partials))
