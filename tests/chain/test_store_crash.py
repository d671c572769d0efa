"""SIGKILL at random points of a long loop of block writes: whatever instant the kill lands on, the
SQLite store holds a consistent chain (its tip is a stored block and the best one by fork choice,
every block's parent is stored), because a block and its tip change are one transaction."""

import os
import random
import signal
import sqlite3
import time

from conftest import make_federation

from coordinator.miner.assembly import build_block
from edge_sdk.chain.store import ChainStore
from edge_sdk.clock import now_ms

KILLS = 30
MAX_DELAY_S = 0.05  # the writer adds a block in 1-10 ms (a busy machine): each kill lands among a few writes
BLOCKS = 1200  # more than 30 kills at MAX_DELAY_S let the writer store, so every kill lands in the loop


def arrivals(fed, blocks: int, seed: int) -> tuple[list[bytes], list[bytes]]:
    """A chain with a sibling at every third height: both siblings arrive (in a random order) and
    the chain goes on from a random one of them, so the tip moves by extension, by the lower-hash
    tie-break and by one-block reorgs. Returns the blocks in arrival order and, for each, the tip
    of a chain that received the blocks up to it."""
    rng = random.Random(seed)
    chain = fed.chain()
    parent, raws, tips = chain.tip, [], []
    while len(raws) < blocks:
        made = [
            build_block(identity=fed.miner, task=fed.task, chain=chain, parent=parent, updates=[], now_ms=now_ms() + k)
            for k in range(2 if parent.header.height % 3 == 0 else 1)
        ]
        rng.shuffle(made)
        states = []
        for raw in made:
            states.append(chain.add(raw))
            raws.append(raw)
            tips.append(chain.tip.hash)
        parent = rng.choice(states)
    return raws, tips


def write_until_killed(db, genesis: bytes, raws: list[bytes], ready: int) -> None:
    """The child: open the store (it holds a prefix of `raws`), say so, then add the rest in order."""
    try:
        store = ChainStore(db, genesis)
        todo = raws[store.count() - 1 :]
        os.write(ready, b"r")
        for raw in todo:
            store.add(raw)
    finally:
        os._exit(0)


def check_invariant(db, tips: list[bytes]) -> int:
    """The stored tip is a stored block, and the best one (most work, then lowest hash), and the
    tip of a chain that received the same blocks; every block but genesis has its parent stored.
    Returns how many blocks after genesis are stored."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tip = conn.execute("SELECT value FROM meta WHERE key = 'tip'").fetchone()[0]
        assert conn.execute("SELECT 1 FROM blocks WHERE hash = ?", (tip,)).fetchone(), "the tip is not stored"
        best = conn.execute("SELECT hash FROM blocks ORDER BY cumwork DESC, hash ASC LIMIT 1").fetchone()[0]
        assert tip == best, "a stored block is better than the stored tip"
        orphans = conn.execute(
            "SELECT count(*) FROM blocks b WHERE b.height > 0"
            " AND NOT EXISTS (SELECT 1 FROM blocks p WHERE p.hash = b.prev)"
        ).fetchone()[0]
        assert orphans == 0, f"{orphans} stored blocks without their parent"
        stored = conn.execute("SELECT count(*) FROM blocks").fetchone()[0] - 1
        if stored:
            assert tip == tips[stored - 1], "the tip is not that of a chain that received the same blocks"
        return stored
    finally:
        conn.close()


def test_sigkill_inside_block_writes_never_splits_a_block_from_its_tip_change(tmp_path):
    fed = make_federation(retarget_window=1_000_000)  # no retarget: blocks made in a burst stay cheap
    raws, tips = arrivals(fed, BLOCKS, seed=16)
    db = tmp_path / "chain.db"
    ChainStore(db, fed.genesis).close()
    rng = random.Random(16)
    stored = [0]
    for _ in range(KILLS):
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            write_until_killed(db, fed.genesis, raws, ready_w)
        os.close(ready_w)
        try:
            assert os.read(ready_r, 1) == b"r", "the writer died before its first write"
            time.sleep(rng.uniform(0, MAX_DELAY_S))
        finally:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            os.close(ready_r)
        assert os.WIFSIGNALED(status), "the writer ran out of blocks before the kill"
        stored.append(check_invariant(db, tips))
    assert stored[-1] >= KILLS // 2, f"kills landed outside the writes (blocks stored after each): {stored}"
