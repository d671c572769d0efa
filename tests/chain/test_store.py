import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from coordinator.miner.assembly import search_nonce
from coordinator.tools.chainverify import verify_database
from edge_sdk.chain.store import ChainStore
from edge_sdk.protocol.block import Block, seal_block
from edge_sdk.protocol.errors import ProtocolError, Reason


def blockfl(*args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_blocks_and_tip_survive_reopening(fed, tmp_path):
    db = tmp_path / "chain.db"
    store = ChainStore(db, fed.genesis)
    for i in range(3):
        store.add(fed.block(store, updates=[fed.update(i, store.tip.hash)]))
    tip = store.tip
    store.close()
    again = ChainStore(db)
    assert again.tip.hash == tip.hash and again.count() == 4
    assert [h.height for h in again.best_chain()] == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        ChainStore(db, __import__("conftest").make_federation(seed=3).genesis)


def test_invalid_block_changes_nothing(fed, tmp_path):
    store = ChainStore(tmp_path / "chain.db", fed.genesis)
    before = (store.count(), store.tip)
    with pytest.raises(ProtocolError) as info:
        store.add(fed.forged(store, model_hash=bytes(32)))
    assert info.value.reason is Reason.BAD_MODEL_HASH
    assert (store.count(), store.tip.hash) == (before[0], before[1].hash)


def test_reorg_switches_tip_and_persists(fed, tmp_path):
    db = tmp_path / "chain.db"
    store = ChainStore(db, fed.genesis)
    genesis = store.tip
    a1, moved = store.add(fed.block(store, parent=genesis, updates=[fed.update(0, genesis.hash)]))
    assert moved
    b1, _ = store.add(fed.block(store, parent=genesis, updates=[fed.update(1, genesis.hash)]))
    first = store.tip
    loser = a1 if first.hash == b1.hash else b1
    assert first.hash == min(a1.hash, b1.hash)
    b2, moved = store.add(fed.block(store, parent=loser, updates=[fed.update(2, loser.hash)]))
    assert moved and store.tip.hash == b2.hash
    store.close()
    assert ChainStore(db).tip.hash == b2.hash
    assert verify_database(db).ok


def test_kill_9_in_the_middle_of_writes_loses_nothing_committed(tmp_path):
    db = tmp_path / "chain.db"
    committed: list[str] = []
    for round_ in range(3):
        writer = subprocess.Popen(
            [sys.executable, "-m", "coordinator.cli", "chain", "demo", str(db), "--blocks", "500", "--devices", "3"],
            stdout=subprocess.PIPE,
            text=True,
        )
        seen = 0
        deadline = time.monotonic() + 60
        while seen < 8 + 5 * round_ and time.monotonic() < deadline:
            line = writer.stdout.readline()
            if not line:
                break  # the writer exited
            if line.startswith("committed"):
                committed.append(line.split()[2])
                seen += 1
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=10)
        assert writer.returncode == -signal.SIGKILL
        assert seen >= 8, "the writer did not commit blocks in time"
        store = ChainStore(db)
        for block_hash in committed:
            assert store.has(bytes.fromhex(block_hash)), f"committed block {block_hash[:16]} lost"
        assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        store.close()
    result = blockfl("chain", "verify", str(db))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok:")


@pytest.fixture
def demo_db(tmp_path):
    db = tmp_path / "chain.db"
    result = blockfl("chain", "demo", str(db), "--blocks", "6")
    assert result.returncode == 0, result.stderr
    return db


def test_chain_verify_passes_on_a_good_chain(demo_db):
    result = blockfl("chain", "verify", str(demo_db))
    assert result.returncode == 0, result.stdout
    assert "7 blocks verified" in result.stdout and "tip height 6" in result.stdout


def _tamper(db, height, column, fn):
    conn = sqlite3.connect(db)
    block_hash, value = conn.execute(f"SELECT hash, {column} FROM blocks WHERE height = ?", (height,)).fetchone()
    conn.execute(f"UPDATE blocks SET {column} = ? WHERE hash = ?", (fn(value), block_hash))
    conn.commit()
    conn.close()


def test_chain_verify_names_the_first_broken_rule_and_height(demo_db):
    _tamper(demo_db, 4, "raw", lambda raw: raw[:-5] + bytes([raw[-5] ^ 1]) + raw[-4:])  # a flipped signature bit
    _tamper(demo_db, 5, "model", lambda m: m[:-1] + bytes([m[-1] ^ 1]))
    result = blockfl("chain", "verify", str(demo_db))
    assert result.returncode == 1
    assert "height 4" in result.stdout and "bad_signature" in result.stdout


def test_chain_verify_catches_a_stored_model_that_differs(demo_db):
    _tamper(demo_db, 5, "model", lambda m: m[:-1] + bytes([m[-1] ^ 1]))
    result = blockfl("chain", "verify", str(demo_db))
    assert result.returncode == 1 and "height 5" in result.stdout and "stored_state" in result.stdout


def test_chain_verify_catches_a_mined_block_with_a_wrong_model_hash(demo_db):
    """A block that was signed and mined but breaks a consensus rule, slipped in past validation."""
    from edge_sdk.protocol.identity import Identity

    miner = Identity.from_seed(b"demo-miner-0")
    conn = sqlite3.connect(demo_db)
    block_hash, raw = conn.execute("SELECT hash, raw FROM blocks WHERE height = 3").fetchone()
    block = Block.parse(raw, 1 << 30)
    forged_header = search_nonce(dataclasses.replace(block.header, model_hash=bytes(32)))
    forged = seal_block(miner, forged_header, block.update_bytes, block.extras)
    conn.execute(
        "UPDATE blocks SET raw = ?, hash = ?, header = ? WHERE hash = ?",
        (forged, forged_header.hash, forged_header.encode(), block_hash),
    )
    conn.execute("UPDATE blocks SET prev = ? WHERE prev = ?", (forged_header.hash, block_hash))
    conn.commit()
    conn.close()
    result = blockfl("chain", "verify", str(demo_db))
    assert result.returncode == 1
    assert "height 3" in result.stdout and "bad_model_hash" in result.stdout


def test_chain_verify_usage_errors(tmp_path):
    assert blockfl("chain", "verify", "--help").returncode == 0
    missing = blockfl("chain", "verify", str(tmp_path / "none.db"))
    assert missing.returncode == 2 and "no chain database" in missing.stderr


def test_equal_work_siblings_give_the_lower_hash_tip_in_either_arrival_order(fed, tmp_path):
    """Fork choice on equal cumulative work is the lower block hash, not the first block seen: two
    stores fed the same two siblings in opposite orders end on the same tip (and a light one too)."""
    chain = fed.chain()
    genesis = chain.tip
    siblings = [fed.block(chain, parent=genesis, updates=[fed.update(i, genesis.hash)]) for i in range(2)]
    states = [chain.add(raw) for raw in siblings]
    assert states[0].cumwork == states[1].cumwork and states[0].hash != states[1].hash
    lower = min(s.hash for s in states)
    for name, order in (("ab", siblings), ("ba", siblings[::-1])):
        store = ChainStore(tmp_path / f"{name}.db", fed.genesis)
        first, moved = store.add(order[0])
        assert moved and store.tip.hash == first.hash
        second, moved = store.add(order[1])
        assert moved == (second.hash == lower)
        assert store.tip.hash == lower, f"arrival order {name} decided the tip"
        store.close()
        memory = fed.chain()
        for raw in order:
            memory.add(raw)
        assert memory.tip.hash == lower, f"arrival order {name} decided the in-memory tip"
