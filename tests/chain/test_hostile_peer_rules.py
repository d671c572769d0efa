"""Block rules against hostile peers: empty blocks, revocations, evidence, exclusions, deep reorgs, the ledger."""

from hashlib import sha256

import numpy as np
import pytest
from conftest import make_federation

from coordinator.miner.assembly import build_block
from edge_sdk.chain.aggregation import fedavg
from edge_sdk.chain.ledger import balances
from edge_sdk.chain.store import ChainStore
from edge_sdk.clock import now_ms
from edge_sdk.protocol.aggregation_rule import AggregationRule
from edge_sdk.protocol.block import Block
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.extras import Evidence, Extras
from edge_sdk.protocol.identity import Identity, node_id
from edge_sdk.protocol.revocations import make_revocations, parse_revocations


def reason_of(call) -> Reason:
    with pytest.raises(ProtocolError) as info:
        call()
    return info.value.reason


def test_empty_blocks_do_not_make_updates_stale_and_earn_no_mining_reward(fed):
    chain = fed.chain()
    first = chain.add(fed.block(chain, updates=[fed.update(0, chain.tip.hash)]))
    assert first.base == first.hash
    empty = chain.add(fed.block(chain))  # a censoring miner races an empty block onto the tip
    assert empty.base == first.hash and empty.model is not None
    on_round = fed.update(1, first.hash)  # trained on the last model-changing block: still valid
    third = chain.add(fed.block(chain, updates=[on_round]))
    assert third.base == third.hash
    on_empty = fed.update(2, empty.hash)  # naming the empty block is naming no round
    assert reason_of(lambda: chain.add(fed.forged(chain, parent=empty, updates=[on_empty]))) is Reason.STALE_BASE
    ledger = balances(fed.task, [chain.raw[h] for h in (first.hash, empty.hash, third.hash)])
    assert ledger[node_id(fed.miner.public.sign_pk)] == 2 * fed.task.rewards.mining  # the empty block paid nothing


def test_a_revocation_list_in_a_block_binds_every_later_block(fed):
    chain = fed.chain()
    revoked = fed.devices[1].public.sign_pk
    notice = make_revocations(fed.coordinator, fed.task, [revoked], now_ms())
    listed = parse_revocations(notice, fed.task)
    mine = dict(identity=fed.miner, task=fed.task, chain=chain, now_ms=now_ms())
    carrier = chain.add(build_block(**mine, parent=chain.tip, updates=[], revocations=listed))
    assert carrier.revocations.devices == {revoked}
    honest = build_block(**mine, parent=carrier, updates=[fed.update(1, carrier.base)])  # an honest miner leaves it out
    assert Block.parse(honest, 1 << 30).update_bytes == ()
    forged = fed.forged(chain, parent=carrier, updates=[fed.update(1, carrier.base)])  # a colluder does not
    assert reason_of(lambda: chain.add(forged)) is Reason.REVOKED
    older = make_revocations(fed.coordinator, fed.task, [], listed.ts)  # not newer than the chain's list
    again = fed.forged(chain, parent=carrier, extras=Extras(revocations=older))
    assert reason_of(lambda: chain.add(again)) is Reason.BAD_REVOCATIONS
    stranger = make_revocations(Identity.from_seed(b"not the coordinator"), fed.task, [], listed.ts + 1)
    bogus = fed.forged(chain, parent=carrier, extras=Extras(revocations=stranger))
    assert reason_of(lambda: chain.add(bogus)) is Reason.BAD_REVOCATIONS


def test_double_update_evidence_convicts_the_device_once(fed):
    chain = fed.chain()
    base = chain.tip.hash
    a, b = sorted([fed.update(0, base, seed=1), fed.update(0, base, seed=2)], key=lambda r: sha256(r).digest())
    item = Evidence("double-update", (a, b))
    first = chain.add(fed.forged(chain, extras=Extras(evidence=(item,))))
    second = chain.add(fed.forged(chain, parent=first, extras=Extras(evidence=(item,))))  # accused again
    ledger = balances(fed.task, [chain.raw[first.hash], chain.raw[second.hash]])
    assert ledger[node_id(fed.devices[0].public.sign_pk)] == -fed.task.rewards.deposit  # once
    swapped = Evidence("double-update", (b, a))
    assert reason_of(lambda: chain.add(fed.forged(chain, extras=Extras(evidence=(swapped,))))) is Reason.BAD_EVIDENCE
    other = Evidence("double-update", (a, fed.update(1, base)))  # two devices prove nothing
    assert reason_of(lambda: chain.add(fed.forged(chain, extras=Extras(evidence=(other,))))) is Reason.BAD_EVIDENCE
    twice = Extras(evidence=(item, item))
    assert reason_of(lambda: chain.add(fed.forged(chain, extras=twice))) is Reason.BAD_EVIDENCE


def test_an_invalid_block_signed_by_a_miner_convicts_it_and_a_valid_one_cannot_be_framed():
    fed = make_federation(peers=1)
    chain = fed.chain()
    rogue = Identity.from_seed(b"peer-0-0")  # in the miner set
    bad = fed.forged(chain, signer=rogue, miner=rogue.public.sign_pk, model_hash=bytes(32))
    assert reason_of(lambda: chain.add(bad)) is Reason.BAD_MODEL_HASH
    carrier = chain.add(fed.forged(chain, extras=Extras(evidence=(Evidence("invalid-block", (bad,)),))))
    ledger = balances(fed.task, [chain.raw[carrier.hash]])
    assert ledger[node_id(rogue.public.sign_pk)] == -fed.task.rewards.deposit
    genesis = chain.get(carrier.header.prev_hash)
    honest = fed.block(chain, parent=genesis)  # a valid sibling
    framed = Extras(evidence=(Evidence("invalid-block", (honest,)),))
    assert reason_of(lambda: chain.add(fed.forged(chain, parent=genesis, extras=framed))) is Reason.BAD_EVIDENCE
    elsewhere = Extras(evidence=(Evidence("invalid-block", (bad,)),))  # the accused block must be a sibling
    assert reason_of(lambda: chain.add(fed.forged(chain, extras=elsewhere))) is Reason.BAD_EVIDENCE


def test_the_block_must_list_exactly_the_updates_its_rule_excludes():
    fed = make_federation(devices=6, aggregation=AggregationRule("multi-krum", f=1))
    chain = fed.chain()
    base = chain.tip.hash
    attack = {k: v * 300 for k, v in fed.delta(5).items()}
    updates = [fed.update(i, base) for i in range(5)] + [fed.update(5, base, delta=attack)]
    block = chain.add(fed.forged(chain, updates=updates))  # forged() lists what the rule excludes
    assert 5 in Block.parse(chain.raw[block.hash], 1 << 30).extras.excluded
    ledger = balances(fed.task, [chain.raw[block.hash]])
    assert node_id(fed.devices[5].public.sign_pk) not in ledger  # excluded updates earn nothing
    lie = fed.forged(chain, parent=chain.get(block.header.prev_hash), updates=updates, extras=Extras(()))
    assert reason_of(lambda: chain.add(lie)) is Reason.BAD_EXCLUSIONS


def test_a_store_refuses_a_reorganisation_deeper_than_the_task_allows(tmp_path):
    fed = make_federation(max_reorg_depth=2)
    store = ChainStore(tmp_path / "c.db", fed.genesis)
    for _ in range(4):
        store.add(fed.block(store))
    honest_tip = store.tip
    fork_parent = store.get(store.best_chain()[1].hash)  # abandoning heights 2-4: three blocks
    parent = fork_parent
    for _ in range(5):
        state, _ = store.add(fed.block(store, parent=parent))
        parent = state
    assert store.tip.hash == honest_tip.hash and store.reorgs_refused >= 1
    shallow = store.get(store.best_chain()[3].hash)  # abandoning one block is fine
    parent = shallow
    for _ in range(3):
        state, _ = store.add(fed.block(store, parent=parent))
        parent = state
    assert store.tip.hash == parent.hash


def test_inflated_claims_buy_at_most_weight_cap_median_shares(fed):
    chain = fed.chain()
    base = chain.tip.hash
    updates = [fed.update(i, base, samples=60) for i in range(3)] + [fed.update(3, base, samples=10_000)]
    block = chain.add(fed.block(chain, updates=updates))
    ledger = balances(fed.task, [chain.raw[block.hash]])
    cap = fed.task.aggregation.weight_cap * 60
    assert ledger[node_id(fed.devices[3].public.sign_pk)] == cap * fed.task.rewards.per_sample
    assert ledger[node_id(fed.devices[0].public.sign_pk)] == 60 * fed.task.rewards.per_sample
    weighted = [(60, fed.delta(i)) for i in range(3)] + [(cap, fed.delta(3))]
    expected = fedavg(chain.get(base).model, weighted, fed.task.chain.frac_bits)
    assert all(np.array_equal(block.model[k], expected[k]) for k in expected)  # the weight is capped too
