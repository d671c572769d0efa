"""This miner's part in threshold decryption (Paillier modes): which aggregates it decrypts.

A share holder decrypts a block's aggregate when the block becomes its tip, and at most one
aggregate per round base: two competing blocks on one base hold overlapping update sets, and
opening both would reveal their difference (a single update when they differ by one). The
choice is kept in the miner's database, so a restart does not decrypt a second one.
"""

from __future__ import annotations

from edge_sdk.chain.database import Database
from edge_sdk.chain.view import BlockState
from edge_sdk.privacy.threshold import KeyShare, partial_decrypt, prove
from edge_sdk.protocol.decryption import PartialDecryption

SCHEMA = "CREATE TABLE IF NOT EXISTS decrypted (base BLOB PRIMARY KEY, block BLOB NOT NULL)"


class ShareHolder:
    def __init__(self, db: Database, share: KeyShare, task):
        self.db, self.share = db, share
        self.key = task.privacy.threshold.key
        self.db.script(SCHEMA)

    def claim(self, block: BlockState, round_base: bytes) -> bool:
        """Whether to decrypt `block` (whose updates name `round_base`); records the choice if so."""
        if block.aggregate is None:
            return False
        row = self.db.one("SELECT block FROM decrypted WHERE base = ?", (round_base,))
        if row is not None:
            return row[0] == block.hash  # the same block again (after a restart): publish it again
        self.db.execute("INSERT INTO decrypted VALUES (?, ?)", (round_base, block.hash))
        return True

    def decrypt(self, block: BlockState) -> PartialDecryption:
        """This share's partial decryption of the block's aggregate, with its proof (a worker thread's job)."""
        ciphertexts = list(block.aggregate.ciphertexts)
        partials = partial_decrypt(self.share, self.key, ciphertexts)
        return PartialDecryption(self.share.index, tuple(partials), prove(self.share, self.key, ciphertexts, partials))
