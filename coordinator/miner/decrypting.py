"""This miner's part in threshold decryption (Paillier modes): which aggregates it decrypts.

A share holder decrypts a block's aggregate when the block becomes its tip, and on one round
base normally only aggregates of one update set: two blocks on one base with different update
sets S1, S2 reveal, once both are open, sum(S1 - S2) - sum(S2 - S1) (a single update when they
differ by one). Competing blocks with the same set (the usual fork: two miners, every update)
open alike. A round that no block of it opens for a block interval (honest holders split between
sets) may open a second set, but only if each side of the difference has no update or at least
min_participants of them, and never a third: what leaks is then an aggregate as large as any
block's. The choices are kept in the miner's database, so a restart keeps them.
"""

from __future__ import annotations

from edge_sdk.chain.database import Database
from edge_sdk.chain.view import BlockState
from edge_sdk.privacy.threshold import KeyShare, partial_decrypt, prove
from edge_sdk.protocol.decryption import PartialDecryption

SCHEMA = """CREATE TABLE IF NOT EXISTS decrypted (
    base BLOB NOT NULL, members BLOB NOT NULL, PRIMARY KEY (base, members)
)"""
DIGEST = 32
MAX_SETS_PER_BASE = 2


class ShareHolder:
    def __init__(self, db: Database, share: KeyShare, task):
        self.db, self.share = db, share
        self.key = task.privacy.threshold.key
        self.least = task.privacy.threshold.min_participants
        self.db.script(SCHEMA)

    def claim(self, block: BlockState, round_base: bytes, members: list[bytes], *, stuck: bool = False) -> bool:
        """Whether to decrypt `block`, whose updates (`members`: their digests) name `round_base`;
        records the choice. `stuck`: no block of this round has opened for a block interval."""
        if block.aggregate is None:
            return False
        packed = b"".join(sorted(members))
        rows = [r[0] for r in self.db.execute("SELECT members FROM decrypted WHERE base = ?", (round_base,))]
        if packed in rows:
            return True
        if rows and (not stuck or len(rows) >= MAX_SETS_PER_BASE):
            return False
        mine = set(members)
        for row in rows:
            other = {row[i : i + DIGEST] for i in range(0, len(row), DIGEST)}
            if any(0 < len(side) < self.least for side in (other - mine, mine - other)):
                return False  # opening both would reveal an aggregate of fewer than min_participants
        self.db.execute("INSERT INTO decrypted VALUES (?, ?)", (round_base, packed))
        return True

    def decrypt(self, block: BlockState) -> PartialDecryption:
        """This share's partial decryption of the block's aggregate, with its proof (a worker thread's job)."""
        ciphertexts = list(block.aggregate.ciphertexts)
        partials = partial_decrypt(self.share, self.key, ciphertexts)
        return PartialDecryption(self.share.index, tuple(partials), prove(self.share, self.key, ciphertexts, partials))
