"""The miner's pool on a real SQLite file, and block assembly (the one used by miner, chain demo and tests)."""

import threading

from conftest import make_federation

from coordinator.miner.assembly import BLOCK_OVERHEAD, assemble, build_block, fitting, search_nonce
from coordinator.miner.pool import Pool, read_audit
from edge_sdk.chain.database import Database
from edge_sdk.chain.memory import MemoryChain
from edge_sdk.chain.rules import validate_block
from edge_sdk.chain.store import ChainStore
from edge_sdk.clock import now_ms
from edge_sdk.protocol.aggregation_rule import AggregationRule
from edge_sdk.protocol.block import Update
from edge_sdk.protocol.errors import Reason


def pooled(fed, tmp_path, n=3):
    chain = fed.chain()
    pool = Pool(Database(tmp_path / "pool.db"), fed.task)
    updates = [Update.parse(fed.update(i, chain.tip.hash), fed.task) for i in range(n)]
    for i, u in enumerate(updates):
        pool.add(u, received_ms=1000 - i)  # received newest-first
    return chain, pool, updates


def test_the_pool_orders_by_arrival_and_knows_what_it_holds(fed, tmp_path):
    chain, pool, updates = pooled(fed, tmp_path)
    base = chain.tip.hash
    assert [u.digest for u in pool.on_base(base, 10)] == [u.digest for u in reversed(updates)]
    assert len(pool.on_base(base, 2)) == 2
    assert all(pool.seen(u.digest) for u in updates)
    assert fed.devices[0].public.sign_pk in pool.devices_on(base)
    assert fed.devices[3].public.sign_pk not in pool.devices_on(base)
    assert fed.devices[0].public.sign_pk not in pool.devices_on(bytes(32))


def test_the_pool_keeps_an_audit_trail_of_admitted_and_refused_updates(fed, tmp_path):
    chain, pool, updates = pooled(fed, tmp_path)
    pool.refuse(b"r" * 32, "stale_base")
    pool.drop(updates[0].digest, "cert_expired")
    admitted, refused = read_audit(tmp_path / "pool.db")  # the pool forgets; the audit trail does not
    assert pool.on_base(chain.tip.hash, 10) == [updates[2], updates[1]]
    assert {(d, b, dev) for d, b, dev, _ in admitted} == {(u.digest, u.base, u.device) for u in updates}
    assert [(d, r) for d, r, _ in refused] == [(b"r" * 32, "stale_base"), (updates[0].digest, "cert_expired")]


def test_the_pool_survives_a_restart_and_reverifies_once(fed, tmp_path):
    chain, pool, updates = pooled(fed, tmp_path)
    pool.db.close()
    again = Pool(Database(tmp_path / "pool.db"), fed.task)
    assert again.parsed == {}
    got = again.on_base(chain.tip.hash, 10)
    assert sorted(u.digest for u in got) == sorted(u.digest for u in updates)
    assert set(again.parsed) == {u.digest for u in updates}


def test_a_new_round_drops_the_last_one_and_recorded_updates_stay_seen(fed, tmp_path):
    store = ChainStore(tmp_path / "chain.db", fed.genesis)
    _, pool, updates = pooled(fed, tmp_path)
    genesis = store.tip
    raw = fed.block(store, updates=[updates[0].envelope.raw])
    state, _ = store.add(raw)
    pool.record(state.hash, [updates[0].envelope.raw])
    assert pool.follow(store, genesis.hash, store.tip) == 0
    assert pool.on_base(genesis.hash, 10) == [] and pool.parsed == {}
    assert pool.seen(updates[0].digest)  # in a block: a replay from now on
    assert not pool.seen(updates[1].digest)


def test_an_update_recorded_in_a_block_leaves_the_pool_even_when_the_base_stays(tmp_path):
    """Review finding: a block whose updates were all excluded keeps the round's base, and the pool
    offered the same updates again in every later block."""
    fed = make_federation(aggregation=AggregationRule(norm_bound=1e-6))  # every update is excluded
    store = ChainStore(tmp_path / "chain.db", fed.genesis)
    _, pool, updates = pooled(fed, tmp_path)
    genesis = store.tip
    state, _ = store.add(fed.block(store, updates=[updates[0].envelope.raw]))
    assert state.base == genesis.hash, "no model changed"
    pool.follow(store, genesis.hash, store.tip)
    assert [u.digest for u in pool.on_base(genesis.hash, 10)] == [updates[2].digest, updates[1].digest]
    assert updates[0].digest not in pool.parsed


def test_assembly_from_parsed_updates_equals_assembly_from_bytes(fed):
    chain = fed.chain()
    raws = [fed.update(i, chain.tip.hash) for i in range(3)]
    parsed = [Update.parse(r, fed.task) for r in raws]
    now = now_ms()
    a = build_block(identity=fed.miner, task=fed.task, chain=chain, parent=chain.tip, updates=raws, now_ms=now)
    b = build_block(identity=fed.miner, task=fed.task, chain=chain, parent=chain.tip, updates=parsed, now_ms=now)
    assert a == b
    assert chain.add(a).header.height == 1


def test_validation_reuses_known_updates_instead_of_parsing_again(fed):
    chain = fed.chain()
    parsed = [Update.parse(fed.update(i, chain.tip.hash), fed.task) for i in range(3)]
    raw = build_block(identity=fed.miner, task=fed.task, chain=chain, parent=chain.tip, updates=parsed, now_ms=now_ms())
    known = {u.digest: u for u in parsed}
    _, checked, _ = validate_block(
        raw, task=fed.task, chain=MemoryChain(fed.genesis), now_ms=now_ms(), known_updates=known
    )
    assert all(a is b for a, b in zip(checked, parsed, strict=True))
    _, fresh, _ = validate_block(raw, task=fed.task, chain=MemoryChain(fed.genesis), now_ms=now_ms())
    assert all(a is not b and a.digest == b.digest for a, b in zip(fresh, parsed, strict=True))


def test_assembly_rechecks_the_chain_state_rules(fed):
    chain = fed.chain()
    stale = Update.parse(fed.update(0, bytes(32)), fed.task)
    template = assemble(
        miner=fed.miner.public.sign_pk,
        task=fed.task,
        chain=chain,
        parent=chain.tip,
        updates=[stale],
        now_ms=now_ms(),
    )
    assert template.updates == ()
    assert [(u, e.reason) for u, e in template.left_out] == [(stale, Reason.STALE_BASE)]


def test_a_stopped_nonce_search_gives_up(fed):
    chain = fed.chain()
    template = assemble(
        miner=fed.miner.public.sign_pk, task=fed.task, chain=chain, parent=chain.tip, updates=[], now_ms=now_ms()
    )
    stop = threading.Event()
    stop.set()
    impossible = template.header.__class__(**{**template.header.__dict__, "target": 0})
    assert search_nonce(impossible, stop=stop) is None


def test_a_clock_stepped_back_still_assembles_a_valid_block(fed):
    """An update admitted while dated up to max_skew_ms ahead stays inside the block's time window."""
    chain = fed.chain()
    now = now_ms()
    ahead = Update.parse(fed.update(0, chain.tip.hash, ts=now + fed.task.chain.max_skew_ms), fed.task)
    stepped_back = now - 5_000
    template = assemble(
        miner=fed.miner.public.sign_pk,
        task=fed.task,
        chain=chain,
        parent=chain.tip,
        updates=[ahead],
        now_ms=stepped_back,
    )
    assert template.header.timestamp_ms == now
    block = build_block(
        identity=fed.miner, task=fed.task, chain=chain, parent=chain.tip, updates=[ahead], now_ms=stepped_back
    )
    assert chain.add(block, now=now).header.height == 1


def test_assembly_takes_only_what_fits_in_a_block(fed):
    chain = fed.chain()
    updates = [Update.parse(fed.update(i, chain.tip.hash), fed.task) for i in range(4)]
    size = len(updates[0].envelope.raw)
    small = make_federation(max_block_bytes=BLOCK_OVERHEAD + 2 * (size + 8), max_update_bytes=size + 100).task
    assert len(fitting(updates, small)) == 2
    capped = make_federation(max_updates=3).task
    assert len(fitting(updates, capped)) == 3
    assert fitting(updates, fed.task) == updates


def test_an_update_whose_certificate_expires_while_pooled_is_left_out_not_fatal(fed):
    """Review finding: assembly raised cert_expired for such an update on every try, halting mining."""
    from edge_sdk.protocol.block import make_update
    from edge_sdk.protocol.cert import issue_certificate

    chain = fed.chain()
    now = now_ms()
    short = issue_certificate(fed.coordinator, fed.task, fed.devices[0].public, quota=1000, expires_ms=now + 1000)
    expiring = Update.parse(
        make_update(fed.devices[0], fed.task, short, chain.tip.hash, 10, fed.delta(0), now), fed.task
    )
    fine = Update.parse(fed.update(1, chain.tip.hash), fed.task)
    later = now + 5000
    on_tip = dict(task=fed.task, chain=chain, parent=chain.tip, now_ms=later)
    template = assemble(miner=fed.miner.public.sign_pk, updates=[expiring, fine], **on_tip)
    assert [(u, e.reason) for u, e in template.left_out] == [(expiring, Reason.CERT_EXPIRED)]
    assert template.updates == (fine,)
    block = build_block(identity=fed.miner, updates=[fine], **on_tip)
    assert chain.add(block, now=later).header.height == 1
