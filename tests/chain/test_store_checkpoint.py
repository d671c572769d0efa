"""ChainStore.add_checkpoint, in process: a late joiner adopts a snapshot (headers, the model after
the last one, its round base, the revocation list) that extends a block it has. Each refusal is
checked by its reason code and leaves the store as it was; each stored field is read back."""

import dataclasses
from contextlib import closing

import numpy as np
import pytest
from conftest import make_federation

from coordinator.miner.assembly import build_block
from edge_sdk.chain.store import ChainStore
from edge_sdk.clock import now_ms
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.identity import Identity
from edge_sdk.protocol.revocations import make_revocations, parse_revocations
from edge_sdk.protocol.sync import Snapshot


def miner_chain(fed, kinds: str):
    """A full chain (in memory) with one block per letter: "u" aggregates two updates, "e" is empty."""
    chain = fed.chain()
    for i, kind in enumerate(kinds):
        updates = [fed.update(d, chain.tip.base, seed=10 * i + d) for d in range(2)] if kind == "u" else []
        chain.add(fed.block(chain, updates=updates))
    return chain


def snapshot_of(chain, start: int = 1, base: bytes | None = None, revocations: bytes | None = None) -> Snapshot:
    headers = chain.branch(chain.tip.hash)[start:]
    tip = chain.tip
    return Snapshot([h.encode() for h in headers], tip.model, tip.base if base is None else base, revocations)


def refusal(store, snapshot, **kw) -> Reason:
    before = (store.count(), store.tip.hash)
    with pytest.raises(ProtocolError) as info:
        store.add_checkpoint(snapshot, **kw)
    assert (store.count(), store.tip.hash) == before, "a refused snapshot changed the store"
    assert isinstance(info.value.detail, str) and info.value.detail, "a refusal says why (the operator's log)"
    return info.value.reason


def same_model(a, b) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture
def joiner(fed, tmp_path):
    with closing(ChainStore(tmp_path / "joiner.db", fed.genesis)) as store:
        yield store


def test_the_tip_of_an_adopted_snapshot_has_its_model_base_and_the_miners_cumulative_work(fed, joiner):
    chain = miner_chain(fed, "uue")
    state = joiner.add_checkpoint(snapshot_of(chain))
    assert state.hash == chain.tip.hash == joiner.tip.hash
    assert state.cumwork == chain.tip.cumwork
    assert same_model(state.model, chain.tip.model)
    assert (state.base, state.base_ms) == (chain.tip.base, chain.tip.base_ms)
    assert joiner.count() == 4 and [h.hash for h in joiner.best_chain()] == [h.hash for h in chain.branch(state.hash)]


def test_blocks_below_the_checkpoint_keep_only_their_header_and_work(fed, joiner):
    chain = miner_chain(fed, "uuee")  # height 4 retargets: its header is checked against stored ancestors
    joiner.add_checkpoint(snapshot_of(chain))
    for header in chain.branch(chain.tip.hash)[1:-1]:
        below = joiner.get(header.hash)
        assert below.model is None and below.cumwork == chain.get(header.hash).cumwork
        assert (below.base, below.base_ms) == (header.hash, header.timestamp_ms)  # placeholders
        assert below.revocations.raw == b"" and joiner.raw_block(header.hash) == b""
    assert joiner.raw_block(chain.tip.hash) == b""


def test_the_revocation_list_of_a_snapshot_holds_at_its_tip_only(fed, joiner):
    chain = fed.chain()
    revoked = fed.devices[1].public.sign_pk
    notice = make_revocations(fed.coordinator, fed.task, [revoked], now_ms())
    listed = parse_revocations(notice, fed.task)
    chain.add(build_block(identity=fed.miner, task=fed.task, chain=chain, parent=chain.tip, updates=[],
                          now_ms=now_ms(), revocations=listed))  # fmt: skip
    chain.add(fed.block(chain, updates=[fed.update(0, chain.tip.base)]))
    state = joiner.add_checkpoint(snapshot_of(chain, revocations=notice))
    assert state.revocations.devices == {revoked} and joiner.tip.revocations.raw == notice
    first = chain.branch(chain.tip.hash)[1]
    assert joiner.get(first.hash).revocations.devices == frozenset()


def test_a_revocation_list_not_signed_by_the_coordinator_is_refused(fed, joiner):
    chain = miner_chain(fed, "ue")
    forged = make_revocations(Identity.from_seed(b"not the coordinator"), fed.task, [], now_ms())
    assert refusal(joiner, snapshot_of(chain, revocations=forged)) is Reason.BAD_BODY


def test_a_snapshot_without_headers_is_refused(fed, joiner):
    chain = miner_chain(fed, "u")
    assert refusal(joiner, Snapshot([], chain.tip.model, chain.tip.base, None)) is Reason.BAD_BODY


def test_a_snapshot_that_extends_no_known_block_is_refused(fed, joiner):
    chain = miner_chain(fed, "uue")
    assert refusal(joiner, snapshot_of(chain, start=2)) is Reason.UNKNOWN_PARENT


def test_a_model_that_is_not_the_tips_is_refused(fed, joiner):
    chain = miner_chain(fed, "ueu")
    wrong = dataclasses.replace(snapshot_of(chain), model={k: v + 1 for k, v in chain.tip.model.items()})
    assert refusal(joiner, wrong) is Reason.BAD_MODEL_HASH
    earlier = chain.get(chain.tip.header.prev_hash).model  # the model of the block before the tip
    assert refusal(joiner, dataclasses.replace(snapshot_of(chain), model=earlier)) is Reason.BAD_MODEL_HASH
    assert joiner.add_checkpoint(snapshot_of(chain)).hash == chain.tip.hash  # the last header's model, not another's


def test_a_base_outside_the_snapshot_is_refused(fed, joiner):
    chain = miner_chain(fed, "uue")
    assert refusal(joiner, snapshot_of(chain, base=bytes(32))) is Reason.BAD_BODY


def test_a_base_of_the_snapshot_with_another_model_is_refused(fed, joiner):
    chain = miner_chain(fed, "uue")
    first = chain.branch(chain.tip.hash)[1]  # changed the model, but not to the tip's
    assert refusal(joiner, snapshot_of(chain, base=first.hash)) is Reason.BAD_BODY


def test_the_block_a_snapshot_extends_may_be_its_base(fed, joiner):
    chain = miner_chain(fed, "uee")
    first = chain.branch(chain.tip.hash)[1]
    joiner.add(chain.raw[first.hash])
    state = joiner.add_checkpoint(snapshot_of(chain, start=2, base=first.hash))
    assert state.hash == chain.tip.hash and state.base == first.hash
    assert state.base_ms == first.timestamp_ms


def test_a_snapshot_over_blocks_already_stored_keeps_them_as_they_are(fed, joiner):
    chain = miner_chain(fed, "uue")
    first = chain.branch(chain.tip.hash)[1]
    joiner.add(chain.raw[first.hash])
    state = joiner.add_checkpoint(snapshot_of(chain))
    assert state.hash == joiner.tip.hash == chain.tip.hash and joiner.count() == 4
    assert joiner.raw_block(first.hash) == chain.raw[first.hash]
    assert same_model(joiner.get(first.hash).model, chain.get(first.hash).model)


def test_a_bad_header_anywhere_stores_none_of_the_snapshot(fed, joiner):
    chain = miner_chain(fed, "uee")  # the base is the first block
    headers = chain.branch(chain.tip.hash)[1:]
    broken = dataclasses.replace(headers[1], nonce=headers[1].nonce + 1)  # no longer meets its target...
    snapshot = dataclasses.replace(snapshot_of(chain), headers=[h.encode() for h in (headers[0], broken, headers[2])])
    assert refusal(joiner, snapshot) in (Reason.INSUFFICIENT_WORK, Reason.UNKNOWN_PARENT)  # ...or breaks the link
    assert not joiner.has(headers[0].hash)


def test_headers_are_checked_against_the_given_clock(fed, joiner):
    chain = miner_chain(fed, "ue")
    newest = chain.tip.header.timestamp_ms
    skew = fed.task.chain.max_skew_ms
    assert refusal(joiner, snapshot_of(chain), now=newest - skew - 1) is Reason.BAD_TIMESTAMP
    assert joiner.add_checkpoint(snapshot_of(chain), now=newest - skew).hash == chain.tip.hash


def test_a_snapshot_on_a_branch_with_less_work_is_stored_without_moving_the_tip(tmp_path):
    fed = make_federation(retarget_window=1_000_000)
    chain = miner_chain(fed, "ue")
    store = ChainStore(tmp_path / "c.db", fed.genesis)
    longer = miner_chain(fed, "eee")  # three blocks of equal target beat two
    for header in longer.branch(longer.tip.hash)[1:]:
        store.add(longer.raw[header.hash])
    state = store.add_checkpoint(snapshot_of(chain))
    assert state.hash == chain.tip.hash and store.has(state.hash)
    assert store.tip.hash == longer.tip.hash
    store.close()
