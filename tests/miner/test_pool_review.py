"""Hostile review of the pool following forks (Pool.follow): attacks, each a test.

Driven like test_pool_reorg.py: a real Miner on a SQLite file, real keys, no broker."""

from chain.test_store_checkpoint import miner_chain, snapshot_of
from conftest import make_federation
from test_pool_reorg import NOWHERE, PEER, fed, hash_of, miner, peer_block, pooled, send_updates  # noqa: F401 (fed, miner are fixtures)

from coordinator.miner.node import Miner
from coordinator.miner.pool import Pool
from edge_sdk.chain.store import ChainStore
from edge_sdk.protocol.aggregation_rule import AggregationRule


def test_a_restart_between_the_tip_change_and_follow_loses_no_update(fed, miner, tmp_path):  # noqa: F811
    """The store commits a reorganisation before the miner's hooks run: killed in between, the
    miner must still pool the abandoned block's updates again when it comes back (the tip the
    pool last followed cannot live in memory only)."""
    genesis = miner.store.tip
    digests = send_updates(fed, miner, [0, 1, 2], genesis.hash)
    peer_block(fed, miner, genesis, [u.envelope.raw for u in miner.pool.on_base(genesis.hash, 100)])
    assert pooled(miner, genesis.hash) == set()
    empty = fed.block(miner.store, parent=genesis, miner=PEER)
    miner.store.add(empty)  # committed; then SIGKILL before on_block_accepted / on_new_tip
    miner.store.add(fed.block(miner.store, parent=miner.store.get(hash_of(empty)), miner=PEER))
    assert miner.store.tip.base == genesis.hash, "the empty branch is the best chain"
    miner.store.close()
    again = Miner(identity=fed.miner, genesis=fed.genesis, db_path=tmp_path / "m.db", broker=NOWHERE)
    try:
        assert pooled(again, genesis.hash) == set(digests), "the abandoned block's updates are pooled again"
        peer_block(fed, again, again.store.tip)  # and the next tip keeps them
        assert pooled(again, genesis.hash) == set(digests)
    finally:
        again.store.close()


def test_following_onto_blocks_known_by_header_only_does_not_raise(tmp_path):
    """Below and at a snapshot's checkpoint a store keeps headers only (raw b"", not None): follow
    treats them as carrying nothing, as its docstring says, instead of raising out of on_new_tip."""
    federation = make_federation()
    full = miner_chain(federation, "ue")  # the round base is the first block; the tip is empty
    store = ChainStore(tmp_path / "joiner.db", federation.genesis)
    genesis = store.tip.hash
    store.add_checkpoint(snapshot_of(full))
    assert store.raw_block(store.tip.hash) == b"" and store.tip.base != store.tip.hash
    pool = Pool(store.db, federation.task)
    assert pool.follow(store, genesis, store.tip) == 0
    assert pool.followed() == store.tip.hash


def test_an_abandoned_second_copy_does_not_bring_back_what_the_best_chain_records(tmp_path):
    """A hostile miner records the round's updates twice on one branch (every update excluded, so
    the base stays: valid, §5 has no once-per-branch rule), then abandons the second copy: the
    first copy is still on the best chain, so the updates must not be pooled and mined again."""
    excluding = make_federation(devices=4, peers=1, aggregation=AggregationRule(norm_bound=1e-6))
    node = Miner(identity=excluding.miner, genesis=excluding.genesis, db_path=tmp_path / "m.db", broker=NOWHERE)
    try:
        genesis = node.store.tip
        send_updates(excluding, node, [0, 1, 2], genesis.hash)
        raws = [u.envelope.raw for u in node.pool.on_base(genesis.hash, 100)]
        first = node.store.get(hash_of(peer_block(excluding, node, genesis, raws)))
        assert node.store.tip.base == genesis.hash and pooled(node, genesis.hash) == set()
        peer_block(excluding, node, first, raws)  # the second copy, on top of the first
        empty = peer_block(excluding, node, first)
        peer_block(excluding, node, node.store.get(hash_of(empty)))  # two empty blocks abandon the second copy
        assert node.store.tip.header.prev_hash == hash_of(empty)
        assert pooled(node, genesis.hash) == set() and node.counters["updates_returned"] == 0
    finally:
        node.store.close()
