"""ChainStore at its edges, in process on real SQLite files: blocks seen before, the caller's clock
and parses, light blocks and their full blocks, invalidation, the reorg limit at its boundary,
Paillier models opened later, and the read-only view `chain verify` replays."""

import json
import pathlib
import sqlite3

import numpy as np
import pytest
from conftest import make_federation

from edge_sdk.chain.database import Database
from edge_sdk.chain.store import ChainStore, StoredChain
from edge_sdk.protocol.block import Block, Update
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.light import make_light, parse_light

VECTORS = json.loads((pathlib.Path(__file__).resolve().parents[1] / "vectors" / "protocol.json").read_text())
H = bytes.fromhex


def flat():
    """No retargets: every block has the same work, so branch lengths decide fork choice."""
    return make_federation(retarget_window=1_000_000, max_reorg_depth=2)


def extend(fed, store, parent, count: int) -> list:
    states = []
    for _ in range(count):
        parent, _ = store.add(fed.block(store, parent=parent))
        states.append(parent)
    return states


def light_of(fed, state) -> bytes:
    return make_light(fed.miner, fed.task, state.header, model=state.model, changed=state.base == state.hash,
                      revocations=None)  # fmt: skip


def reason_of(call) -> Reason:
    """The refusal's reason code; its detail (what the operator's log says) must not be empty."""
    with pytest.raises(ProtocolError) as info:
        call()
    assert info.value.detail
    return info.value.reason


@pytest.fixture
def store(fed, tmp_path):
    s = ChainStore(tmp_path / "chain.db", fed.genesis)
    yield s
    s.close()


# --- add ---


def test_a_block_seen_before_is_recognised_by_its_bytes_without_validating_it_again(fed, store):
    raw = fed.block(store, updates=[fed.update(0, store.tip.hash)])
    state, moved = store.add(raw)
    assert moved
    again, moved = store.add(raw, now=0)  # at time 0 the block would be from the future
    assert again.hash == state.hash and not moved and store.count() == 2


def test_blocks_are_checked_against_the_given_clock(fed, store):
    raw = fed.block(store)
    stamp = Block.parse(raw, 1 << 30).header.timestamp_ms
    skew = fed.task.chain.max_skew_ms
    assert reason_of(lambda: store.add(raw, now=stamp - skew - 1)) is Reason.BAD_TIMESTAMP
    assert store.count() == 1
    assert store.add(raw, now=stamp - skew)[1]


def test_blocks_are_validated_with_the_parses_the_caller_already_holds(fed, store):
    """A miner passes its pool's parsed updates; the store takes them as the parse of those bytes."""
    mine, other = fed.update(0, store.tip.hash), fed.update(1, store.tip.hash)
    raw = fed.block(store, updates=[mine])
    lying = {Update.parse(mine, fed.task).digest: Update.parse(other, fed.task)}
    assert reason_of(lambda: store.add(raw, known_updates=lying)) is Reason.BAD_MODEL_HASH
    assert store.add(raw, known_updates={})[1]


def test_the_full_block_of_a_stored_light_block_changes_nothing(fed, store):
    chain = fed.chain()
    full = chain.add(fed.block(chain, updates=[fed.update(0, chain.tip.hash)]))
    light, moved = store.add_light(parse_light(light_of(fed, full), fed.task))
    assert moved and light.hash == full.hash and store.raw_block(full.hash) == b""
    again, moved = store.add(chain.raw[full.hash])
    assert again.hash == full.hash and not moved and store.count() == 2
    known, moved = store.add_light(parse_light(light_of(fed, full), fed.task))
    assert known.hash == full.hash and not moved


def test_an_unknown_block_has_no_header_state_or_raw_bytes(fed, store):
    assert store.header(bytes(32)) is None and store.get(bytes(32)) is None and store.raw_block(bytes(32)) is None
    assert not store.has(bytes(32)) and store.header(store.tip.hash) == store.tip.header


def test_light_blocks_are_checked_against_the_given_clock(fed, store):
    chain = fed.chain()
    state = chain.add(fed.block(chain))
    light = parse_light(light_of(fed, state), fed.task)
    late = state.header.timestamp_ms - fed.task.chain.max_skew_ms - 1
    assert reason_of(lambda: store.add_light(light, now=late)) is Reason.BAD_TIMESTAMP
    assert store.add_light(light, now=late + 1)[0].hash == state.hash


# --- invalidate ---


def test_invalidating_a_block_forgets_it_and_everything_on_it_and_picks_the_best_block_left(tmp_path):
    fed = flat()
    store = ChainStore(tmp_path / "c.db", fed.genesis)
    genesis = store.tip
    a1 = extend(fed, store, genesis, 1)[0]
    a2, b2 = (store.add(fed.block(store, parent=a1, updates=[fed.update(i, a1.hash)]))[0] for i in range(2))
    a3 = extend(fed, store, a2, 1)[0]  # a1 has two children: the walk goes through both
    sides = [store.add(fed.block(store, parent=genesis, updates=[fed.update(i, genesis.hash)]))[0] for i in range(2)]
    assert store.tip.hash == a3.hash
    assert store.invalidate(a1.hash) == 4
    assert not any(store.has(s.hash) for s in (a1, a2, b2, a3)) and store.count() == 3
    assert store.tip.hash == min(s.hash for s in sides)  # equal work: the lower hash
    assert store.is_invalid(a1.hash) and not store.is_invalid(a2.hash)
    light = parse_light(light_of(fed, a1), fed.task)
    assert reason_of(lambda: store.add_light(light)) is Reason.KNOWN_INVALID
    store.close()
    assert ChainStore(tmp_path / "c.db").tip.hash == min(s.hash for s in sides)


def test_invalidating_an_unknown_block_removes_nothing_but_remembers_it(fed, store):
    chain = fed.chain()
    state = chain.add(fed.block(chain))
    tip = store.tip.hash
    assert store.invalidate(state.hash) == 0
    assert store.tip.hash == tip and store.count() == 1 and store.is_invalid(state.hash)
    assert store.invalidate(state.hash) == 0  # again: still remembered once
    assert reason_of(lambda: store.add_light(parse_light(light_of(fed, state), fed.task))) is Reason.KNOWN_INVALID


def test_invalidating_a_side_branch_leaves_the_tip(tmp_path):
    fed = flat()
    store = ChainStore(tmp_path / "c.db", fed.genesis)
    genesis = store.tip
    main = extend(fed, store, genesis, 2)
    side = store.add(fed.block(store, parent=genesis, updates=[fed.update(0, genesis.hash)]))[0]
    assert store.invalidate(side.hash) == 1 and store.tip.hash == main[-1].hash
    store.close()


# --- the reorg limit ---


def test_a_reorg_abandoning_exactly_max_reorg_depth_blocks_is_adopted(tmp_path):
    fed = flat()  # max_reorg_depth 2
    store = ChainStore(tmp_path / "c.db", fed.genesis)
    genesis = store.tip
    honest = extend(fed, store, genesis, 3)
    fork = honest[0]  # a branch from height 1 abandons heights 2 and 3
    rival = extend(fed, store, fork, 3)
    assert store.tip.hash == rival[-1].hash and store.reorgs_refused == 0
    assert store.abandoned(honest[-1].header, rival[-1].header, 10) == 3
    store.close()


def test_a_reorg_abandoning_one_block_more_is_refused_and_counted_once(tmp_path):
    fed = flat()
    store = ChainStore(tmp_path / "c.db", fed.genesis)
    genesis = store.tip
    honest = extend(fed, store, genesis, 3)
    rival = extend(fed, store, genesis, 3)  # equal work: refused only if the lower hash would win
    before = store.reorgs_refused  # 1 if the equal-work rival tip had the lower hash, else 0
    deeper, moved = store.add(fed.block(store, parent=rival[-1]))  # more work, abandoning all three
    assert not moved and store.tip.hash == honest[-1].hash and store.reorgs_refused == before + 1
    rival.append(deeper)
    assert not store.add(fed.block(store, parent=deeper))[1] and store.reorgs_refused == before + 2  # each counts
    assert store.abandoned(rival[-1].header, honest[-1].header, 2) == 3  # limit + 1: the walk stops there
    assert store.abandoned(rival[-1].header, honest[-1].header, 10) == 3
    assert store.abandoned(honest[-1].header, honest[-1].header, 2) == 0
    store.close()


def test_a_reorg_limit_is_the_tasks_not_a_constant(tmp_path):
    fed = make_federation(retarget_window=1_000_000, max_reorg_depth=3)
    store = ChainStore(tmp_path / "c.db", fed.genesis)
    genesis = store.tip
    extend(fed, store, genesis, 3)
    rival = extend(fed, store, genesis, 4)
    assert store.tip.hash == rival[-1].hash and store.reorgs_refused == 0
    store.close()


# --- opening, construction, the read-only view ---


def test_a_paillier_block_stores_its_aggregate_and_gets_its_model_when_its_child_opens_it(tmp_path):
    p = VECTORS["paillier"]
    store = ChainStore(tmp_path / "p.db", H(p["chain"]["genesis"]))
    b1, moved = store.add(H(p["chain"]["blocks"][0]))
    assert moved and b1.model is None and b1.aggregate is not None
    store.close()
    store = ChainStore(tmp_path / "p.db")
    assert store.get(b1.hash).aggregate == b1.aggregate  # the ciphertexts as stored, at the task's width
    b2, _ = store.add(H(p["chain"]["blocks"][1]))
    assert b2.opened is not None and store.get(b2.hash).opened is None  # the opening became the parent's model
    expected = {name: v["values"] for name, v in p["model"].items()}
    assert {k: v.ravel().tolist() for k, v in store.get(b1.hash).model.items()} == expected
    assert store.set_model(b1.hash, store.get(b1.hash).model) is False  # known: kept
    assert store.set_model(bytes(32), store.get(b1.hash).model) is False  # no such block
    store.close()
    reopened = ChainStore(tmp_path / "p.db")
    assert {k: v.ravel().tolist() for k, v in reopened.get(b1.hash).model.items()} == expected
    reopened.close()


def test_a_store_opens_only_a_chain_it_can_name(fed, tmp_path):
    db = tmp_path / "chain.db"
    with pytest.raises(ValueError, match="holds no chain"):
        ChainStore(db)
    store = ChainStore(Database(db), fed.genesis)
    assert store.path == db and store.genesis_hash == store.tip.hash and store.reorgs_refused == 0
    store.close()
    again = ChainStore(db, fed.genesis)  # the same genesis again is fine
    assert again.genesis_hash == store.genesis_hash and again.count() == 1
    again.close()
    with pytest.raises(ValueError, match="another genesis"):
        ChainStore(db, make_federation(seed=5).genesis)


def test_the_stored_rows_read_back_as_chain_verify_replays_them(fed, store, tmp_path):
    raws = []
    for i in range(2):
        raws.append(fed.block(store, updates=[fed.update(i, store.tip.hash)]))
        store.add(raws[-1])
    tip = store.tip
    with StoredChain(tmp_path / "chain.db") as stored:
        assert stored.meta() == {"genesis": store.genesis_hash, "tip": tip.hash}
        rows = list(stored.blocks())
    assert [r.height for r in rows] == [0, 1, 2] and [r.raw for r in rows] == [fed.genesis, *raws]
    assert rows[-1].hash == tip.hash and rows[-1].cumwork == tip.cumwork.to_bytes(32, "big")
    assert all(r.model for r in rows)


def test_stored_blocks_of_a_height_come_in_hash_order(tmp_path):
    fed = flat()
    store = ChainStore(tmp_path / "c.db", fed.genesis)
    genesis = store.tip
    siblings = [store.add(fed.block(store, parent=genesis, updates=[fed.update(i, genesis.hash)]))[0] for i in range(3)]
    store.close()
    with StoredChain(tmp_path / "c.db") as stored:
        assert [r.hash for r in stored.blocks()][1:] == sorted(s.hash for s in siblings)


def test_the_read_only_view_never_creates_a_database(tmp_path):
    with pytest.raises(FileNotFoundError):
        StoredChain(tmp_path / "none.db")
    assert not (tmp_path / "none.db").exists()


def test_the_cumulative_work_column_sorts_as_a_number(tmp_path):
    fed = flat()
    store = ChainStore(tmp_path / "c.db", fed.genesis)
    tips = extend(fed, store, store.tip, 2)
    store.close()
    conn = sqlite3.connect(tmp_path / "c.db")
    rows = conn.execute("SELECT cumwork, raw_digest, received_ms FROM blocks ORDER BY height").fetchall()
    conn.close()
    assert [int.from_bytes(r[0], "big") for r in rows][1:] == [s.cumwork for s in tips]
    assert all(len(r[0]) == 32 and len(r[1]) == 32 and r[2] > 0 for r in rows)
    assert np.diff([int.from_bytes(r[0], "big") for r in rows]).min() > 0
