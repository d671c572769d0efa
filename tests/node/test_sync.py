"""Sync without a broker: the locator's positions (PROTOCOL.md §13.1), and what a miner answers to
it: the blocks after the first locator hash on its best chain, at most `max`, so a node far
behind asks again; answers and notices signed by anyone outside the miner set are refused."""

import hashlib

import pytest
from conftest import make_federation

from coordinator.miner.serving import answer_sync
from edge_sdk.chain.store import ChainStore
from edge_sdk.protocol import sync
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.identity import Identity
from edge_sdk.transport.mqtt import Incoming
from edge_sdk.transport.topics import Topics

FIRST_8 = list(range(8))


@pytest.mark.parametrize(
    "length, positions",
    [
        (1, [0]),
        (2, [0, 1]),
        (8, FIRST_8),
        (9, [*FIRST_8, 8]),  # position 8 is genesis: appended as the last
        (10, [*FIRST_8, 9]),  # position 9 is both the next step and genesis: once
        (11, [*FIRST_8, 9, 10]),
        (100, [*FIRST_8, 9, 13, 21, 37, 69, 99]),
        (134, [*FIRST_8, 9, 13, 21, 37, 69, 133]),
        (300, [*FIRST_8, 9, 13, 21, 37, 69, 133, 261, 299]),
    ],
)
def test_the_locator_takes_positions_0_to_7_then_doubling_steps_then_genesis(length, positions):
    chain = [hashlib.sha256(b"%d" % height).digest() for height in range(length)]  # genesis first
    from_tip = chain[::-1]
    assert sync.locator(chain) == [from_tip[p] for p in positions]


@pytest.fixture(scope="module")
def long_chain(tmp_path_factory):
    """A miner's store with 70 blocks, and the raw blocks in order."""
    fed = make_federation(retarget_window=1_000_000)  # no retarget: 70 blocks made in a burst stay cheap
    store = ChainStore(tmp_path_factory.mktemp("sync") / "m.db", fed.genesis)
    raws = []
    for _ in range(70):
        raws.append(fed.block(store))
        store.add(raws[-1])
    yield fed, store, raws
    store.close()


def ask(fed, store, requester: Identity, hashes: list[bytes], most: int = sync.MAX_SYNC_BLOCKS) -> list[bytes]:
    """The blocks the miner's answer to `requester` (whose best chain is `hashes`) carries."""
    request = sync.make_request(requester, fed.task, hashes, max_blocks=most)
    reply_to = Topics(fed.task.id).reply(requester.public.node_id)
    raw = answer_sync(store, fed.miner, Incoming("sync", request, response_topic=reply_to))
    response = sync.parse_response(raw, fed.task)
    assert response.signer == fed.miner.public.sign_pk and response.snapshot is None
    return response.blocks


def test_a_node_70_blocks_behind_gets_64_then_the_rest_by_asking_again(long_chain):
    fed, store, raws = long_chain
    node = Identity.from_seed(b"sync-node")
    follower = fed.chain()
    first = ask(fed, store, node, [follower.tip.hash])
    assert first == raws[:64]  # full: the node asks again
    for raw in first:
        follower.add(raw)
    best = [h.hash for h in follower.branch(follower.tip.hash)]
    rest = ask(fed, store, node, best)
    assert rest == raws[64:]
    for raw in rest:
        follower.add(raw)
    assert follower.tip.hash == store.tip.hash
    assert ask(fed, store, node, [h.hash for h in follower.branch(follower.tip.hash)]) == []
    assert ask(fed, store, node, [follower.tip.hash], most=3) == []  # `max` caps, the tip needs nothing
    assert ask(fed, store, node, best[:11], most=3) == raws[10:13]


def test_the_miner_answers_from_the_first_locator_hash_on_its_best_chain(long_chain):
    fed, store, raws = long_chain
    node = Identity.from_seed(b"sync-fork")
    mine = fed.chain()  # the node's chain: the miner's first 20 blocks, then two of its own
    for raw in raws[:20]:
        mine.add(raw)
    for _ in range(2):
        mine.add(fed.block(mine))
    hashes = [h.hash for h in mine.branch(mine.tip.hash)]
    assert not store.has(hashes[-1]) and store.has(hashes[20])
    assert ask(fed, store, node, hashes) == raws[20:]  # from height 21: the fork's blocks are unknown to it
    stranger = [hashlib.sha256(b"unknown %d" % i).digest() for i in range(3)]
    assert ask(fed, store, node, stranger) == raws[:64]  # no hash on its chain: from genesis


def test_answers_and_notices_signed_outside_the_miner_set_are_refused(long_chain):
    fed, _, raws = long_chain
    outsider = fed.devices[0]  # enrolled, but not a miner
    forged = sync.make_response(outsider, fed.task, raws[:3])
    for parse in (sync.parse_response, sync.parse_reply):
        with pytest.raises(ProtocolError) as info:
            parse(forged, fed.task)
        assert info.value.reason is Reason.BAD_MINER
    notice = sync.make_rejection(outsider, fed.task, bytes(32), Reason.STALE_BASE, bytes(32))
    with pytest.raises(ProtocolError) as info:
        sync.parse_reply(notice, fed.task)
    assert info.value.reason is Reason.BAD_MINER
    assert sync.parse_reply(sync.make_response(fed.miner, fed.task, raws[:3]), fed.task).blocks == raws[:3]
