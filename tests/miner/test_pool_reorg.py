"""A miner's pool across forks: what a block off the best chain, or a reorganisation, does to it.

A device drops its update once a block records it (its round base moved on) and never signs a
second one on that base. So if the block that recorded it is abandoned — a longer branch, or an
empty block on the same parent that wins the equal-work tie-break — only the miners' pools can
still bring that round to a block. Driven by hand: a real Miner on a SQLite file, real keys, no
broker (what it publishes only shows in its byte counters)."""

import pytest
from conftest import make_federation

from coordinator.miner.assembly import build_block
from coordinator.miner.node import Miner
from edge_sdk.clock import now_ms
from edge_sdk.protocol import envelope
from edge_sdk.protocol.block import Block, Update
from edge_sdk.protocol.identity import Identity
from edge_sdk.transport.mqtt import BrokerConfig, Incoming

NOWHERE = BrokerConfig("mqtt://127.0.0.1:1")
PEER = Identity.from_seed(b"peer-0-0")  # the other miner of make_federation(peers=1)


@pytest.fixture
def fed():
    return make_federation(devices=4, peers=1)


@pytest.fixture
def miner(fed, tmp_path):
    node = Miner(identity=fed.miner, genesis=fed.genesis, db_path=tmp_path / "m.db", broker=NOWHERE)
    yield node
    node.store.close()


def send_updates(fed, miner, devices, base) -> list[bytes]:
    """Each device's update on `base`, through the miner's update topic (admission and all)."""
    digests = []
    for i in devices:
        raw = fed.update(i, base)
        topic = miner.topics.update(miner.me, fed.devices[i].public.node_id)
        miner.dispatch(Incoming(topic, envelope.seal(fed.miner.public.box_pk, raw)))
        digests.append(Update.parse(raw, fed.task).digest)
    assert miner.counters["updates_accepted"] >= len(devices), dict(miner.rejections)
    return digests


def peer_block(fed, miner, parent, updates=()) -> bytes:
    """A block by the other miner on `parent` (a state in the miner's own store), accepted by the miner."""
    raw = fed.block(miner.store, parent=parent, updates=list(updates), miner=PEER)
    assert miner.accept_block(raw, PEER.public.node_id), dict(miner.rejections)
    return raw


def pooled(miner, base) -> set[bytes]:
    return {u.digest for u in miner.pool.on_base(base, 100)}


def test_updates_of_a_block_the_best_chain_abandons_go_back_into_the_pool(fed, miner):
    genesis = miner.store.tip
    digests = send_updates(fed, miner, [0, 1, 2], genesis.hash)
    raws = [u.envelope.raw for u in miner.pool.on_base(genesis.hash, 100)]
    peer_block(fed, miner, genesis, raws)
    assert miner.store.tip.base == miner.store.tip.hash and pooled(miner, genesis.hash) == set()
    empty = peer_block(fed, miner, genesis)
    peer_block(fed, miner, miner.store.get(hash_of(empty)))  # two empty blocks outweigh the one that recorded them
    assert miner.store.tip.base == genesis.hash, "the empty branch is the best chain"
    assert pooled(miner, genesis.hash) == set(digests), "the abandoned block's updates are pooled again"
    assert miner.counters["updates_returned"] == 3
    own = fed.block(
        miner.store, parent=miner.store.tip, updates=[u.envelope.raw for u in miner.pool.on_base(genesis.hash, 100)]
    )
    assert miner.accept_block(own, miner.me), "and they make a valid block on the new tip"
    assert pooled(miner, genesis.hash) == set() and miner.store.tip.base == miner.store.tip.hash


def test_an_empty_block_winning_the_tie_break_does_not_lose_the_round(fed, miner):
    """The race the hostile-peers test hit: an empty block on the same parent as a block of
    updates, equal work, lower hash: every node switches to it."""
    genesis = miner.store.tip
    digests = send_updates(fed, miner, [0, 1, 2], genesis.hash)
    raws = [u.envelope.raw for u in miner.pool.on_base(genesis.hash, 100)]
    # a pair at a time, each at its own time: the empty block's hash is the lower with odds 1/2 per
    # pair (comparing many siblings with one block is not: a block of updates with a low hash beats them all)
    start = now_ms()
    for i in range(40):
        recorded = sibling(fed, miner.store, genesis, raws, start - i)
        empty = sibling(fed, miner.store, genesis, [], start - i)
        if hash_of(empty) < hash_of(recorded):
            break
    else:
        pytest.fail("40 pairs, never the empty block's hash the lower: odds 2^-40")
    assert miner.accept_block(recorded, "m") and miner.accept_block(empty, "m")
    assert miner.store.tip.hash == hash_of(empty)
    assert pooled(miner, genesis.hash) == set(digests)


def test_a_block_off_the_best_chain_does_not_take_updates_out_of_the_pool(fed, miner):
    """Otherwise a miner could censor a round for the price of one stale block: mine the pooled
    updates into a block that loses, and every honest pool forgets them."""
    genesis = miner.store.tip
    first = peer_block(fed, miner, genesis)
    peer_block(fed, miner, miner.store.get(hash_of(first)))  # the best chain: two empty blocks
    digests = send_updates(fed, miner, [0, 1, 2], genesis.hash)
    raws = [u.envelope.raw for u in miner.pool.on_base(genesis.hash, 100)]
    tip = miner.store.tip.hash
    peer_block(fed, miner, genesis, raws)  # valid, but lighter than the tip
    assert miner.store.tip.hash == tip
    assert pooled(miner, genesis.hash) == set(digests)


def test_a_block_that_records_updates_on_the_tip_takes_them_out(fed, miner):
    genesis = miner.store.tip
    send_updates(fed, miner, [0, 1, 2], genesis.hash)
    raws = [u.envelope.raw for u in miner.pool.on_base(genesis.hash, 100)][:2]
    peer_block(fed, miner, genesis, raws)
    assert miner.store.tip.base == miner.store.tip.hash
    assert miner.pool.count_on(genesis.hash) == 0, "the third is for a round that closed"
    assert miner.counters["updates_returned"] == 0


def sibling(fed, store, parent, updates, time_ms: int) -> bytes:
    """A block by the other miner on `parent` at `time_ms` (a distinct time gives a distinct block)."""
    built = build_block(identity=PEER, task=fed.task, chain=store, parent=parent, updates=updates, now_ms=time_ms)
    assert built is not None
    return built


def hash_of(raw: bytes) -> bytes:
    return Block.parse(raw, len(raw)).header.hash
