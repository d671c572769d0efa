"""Threshold Paillier: t shares open exactly an aggregate, fewer open nothing, and every node checks
every partial decryption and every block's opening of its parent."""

import dataclasses
import functools
import secrets

import numpy as np
import pytest
from conftest import make_federation
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.miner.admission import admit
from coordinator.miner.assembly import build_block
from coordinator.task.dealer import deal, safe_prime
from edge_sdk.chain.memory import MemoryChain
from edge_sdk.chain.opening import encrypted_aggregate
from edge_sdk.chain.rules import validate_genesis
from edge_sdk.clock import now_ms
from edge_sdk.privacy import paillier, threshold
from edge_sdk.privacy.sealed_share import open_share, seal_share
from edge_sdk.protocol import envelope
from edge_sdk.protocol import packing as slots
from edge_sdk.protocol.block import Update, make_genesis, make_update
from edge_sdk.protocol.cert import issue_certificate
from edge_sdk.protocol.decryption import DecryptionRules, PartialDecryption, ThresholdKey, make_partial, parse_partial
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.identity import Identity
from edge_sdk.protocol.task import Privacy

BITS = 512  # small keys keep the suite fast; the arithmetic is the same at 2048


@functools.cache
def dealt(t: int, m: int):
    return deal(BITS, t, m)


def encrypt(values, n):
    return paillier.encrypt(values, n)


def test_safe_primes_are_safe():
    p = safe_prime(128)
    assert p.bit_length() == 128 and pow(2, p - 1, p) == 1 and pow(2, (p - 1) // 2 - 1, (p - 1) // 2) == 1


@given(st.data())
@settings(max_examples=20, deadline=None)
def test_any_t_verified_partials_open_exactly_and_bad_ones_fail(data):
    m = data.draw(st.integers(1, 4))
    t = data.draw(st.integers(1, m))
    key, shares = dealt(t, m)
    plaintexts = data.draw(st.lists(st.integers(0, key.n - 1), min_size=1, max_size=4))
    cts = encrypt(plaintexts, key.n)
    chosen = data.draw(st.lists(st.sampled_from(shares), min_size=t, max_size=m, unique_by=lambda s: s.index))
    partials = {s.index: threshold.partial_decrypt(s, key, cts) for s in chosen}
    for s in chosen:
        proof = threshold.prove(s, key, cts, partials[s.index])
        assert threshold.verify(key, s.index, cts, partials[s.index], proof)
        other = s.index % m + 1
        if other != s.index:  # a proof binds its share
            assert not threshold.verify(key, other, cts, partials[s.index], proof)
        bad = list(partials[s.index])
        j = data.draw(st.integers(0, len(bad) - 1))
        bad[j] = bad[j] * 4 % (key.n * key.n)  # a square factor: survives the squaring in the check
        assert not threshold.verify(key, s.index, cts, bad, proof)
    assert threshold.combine(key, partials) == plaintexts


def test_one_share_of_two_opens_nothing_two_open_exactly_the_aggregate():
    key, shares = dealt(2, 3)
    single = encrypt([123456789, 42], key.n)  # one device's update
    others = encrypt([1000, 2000], key.n)
    one = {1: threshold.partial_decrypt(shares[0], key, single)}
    with pytest.raises(ValueError, match="2 are needed"):
        threshold.combine(key, one)
    # using the one partial as if it were enough (a threshold of 1) gives garbage, not the update
    forged = ThresholdKey(key.n, 1, key.v, key.verification_keys)
    assert threshold.combine(forged, one) != [123456789, 42]
    # what honest share holders decrypt is the aggregate, and two of them give exactly its sums
    n2 = key.n * key.n
    aggregate = [a * b % n2 for a, b in zip(single, others, strict=True)]
    two = {s.index: threshold.partial_decrypt(s, key, aggregate) for s in shares[1:]}
    assert threshold.combine(key, two) == [123456789 + 1000, 42 + 2000]


def test_a_share_opens_only_for_its_miner_and_must_match_the_task():
    fed = paillier_federation()
    key = fed.task.privacy.threshold.key
    miner = fed.miner
    sealed = seal_share(fed.shares[0], miner.public.box_pk)
    assert open_share(sealed, miner.box_key, fed.task, miner.public.sign_pk).value == fed.shares[0].value
    with pytest.raises(ProtocolError):
        open_share(sealed, Identity.generate().box_key, fed.task, miner.public.sign_pk)
    wrong = threshold.KeyShare(1, fed.shares[0].value + 1)
    with pytest.raises(ValueError, match="verification key"):
        open_share(seal_share(wrong, miner.public.box_pk), miner.box_key, fed.task, miner.public.sign_pk)
    with pytest.raises(ValueError, match="not this miner's"):
        open_share(seal_share(fed.shares[1], miner.public.box_pk), miner.box_key, fed.task, miner.public.sign_pk)
    assert "value" not in repr(fed.shares[0]) and str(fed.shares[0].value) not in repr(fed.shares[0])
    assert key.holders == 3


# --- a Paillier federation in memory: blocks, openings, rules ---


def paillier_federation(least: int = 2):
    fed = make_federation(devices=4, peers=2, max_updates=8)
    key, shares = dealt(2, 3)
    packing = slots.Packing(key.n, 12, 0, 10_000, 8)
    privacy = Privacy("paillier", packing=packing, threshold=DecryptionRules(key, least))
    from dataclasses import replace

    from edge_sdk.protocol.aggregation_rule import AggregationRule

    task = replace(fed.task, privacy=privacy, aggregation=AggregationRule(weight_cap=0))
    fed.task, fed.genesis = task, make_genesis(fed.coordinator, task)
    fed.certs = [
        issue_certificate(fed.coordinator, task, d.public, quota=10_000, expires_ms=now_ms() + 3_600_000)
        for d in fed.devices
    ]
    fed.shares = shares
    return fed


def encrypted_update(fed, device, base, *, samples=100, plaintexts=None):
    packing = fed.task.privacy.packing
    if plaintexts is None:
        delta = fed.delta(device, scale=0.1)
        cts = paillier.encrypt_update(delta, samples, fed.task.shapes, packing)
    else:
        cts = [c.to_bytes(packing.ciphertext_bytes, "big") for c in paillier.encrypt(plaintexts, packing.n)]
    dev = fed.devices[device]
    return make_update(dev, fed.task, fed.certs[device], base, samples, None, now_ms(), ciphertexts=cts)


def opening(fed, state, shares=(0, 1)):
    key = fed.task.privacy.threshold.key
    cts = list(state.aggregate.ciphertexts)
    items = []
    for i in shares:
        share = fed.shares[i]
        partials = threshold.partial_decrypt(share, key, cts)
        items.append(PartialDecryption(share.index, tuple(partials), threshold.prove(share, key, cts, partials)))
    return [item.to_wire(key) for item in items]


def mine(fed, chain, parent, updates=(), decryption=()):
    return build_block(
        identity=fed.miner,
        task=fed.task,
        chain=chain,
        parent=parent,
        updates=list(updates),
        now_ms=now_ms(),
        decryption=decryption,
    )


def reason_of(call) -> Reason:
    with pytest.raises(ProtocolError) as info:
        call()
    return info.value.reason


def test_every_node_opens_the_same_model_from_the_child_and_from_gossip():
    fed = paillier_federation()
    chain = fed.chain()
    genesis = chain.tip
    ups = [encrypted_update(fed, i, genesis.hash) for i in range(3)]
    b1 = chain.add(mine(fed, chain, genesis, ups))
    assert b1.model is None and b1.aggregate is not None  # nobody knows it until t partials
    # a second node opens it from gossiped partials
    other = fed.chain()
    other.add(chain.raw[b1.hash])
    from edge_sdk.node.openings import Openings

    opened = []
    book = Openings(other, lambda state, o: opened.append(o))
    key = fed.task.privacy.threshold.key
    for i, item in enumerate(opening(fed, b1)):
        raw = make_partial(fed.miner if i == 0 else Identity.from_seed(b"peer-0-0"), key, b1.hash, item_of(item, key))
        book.receive(raw, f"m{i}")
    assert len(opened) == 1 and not opened[0].overflow
    # the child carries the decryption; the first node opens b1 from it, with the same bytes
    b2 = chain.add(mine(fed, chain, chain.tip, decryption=opening(fed, b1)))
    assert b2.opened is not None
    gossip_model, chain_model = other.get(b1.hash).model, chain.get(b1.hash).model
    assert all(np.array_equal(gossip_model[k], chain_model[k]) for k in chain_model)
    # and it is the exact fixed-point sample-weighted mean of the clipped, quantized deltas
    packing = fed.task.privacy.packing
    parsed = [Update.parse(u, fed.task) for u in ups]
    agg = encrypted_aggregate(fed.task, parsed)
    qs = [slots.quantize(slots.flatten(fed.delta(d, 0.1), fed.task.shapes), packing) for d in range(3)]
    sums = [sum(100 * q[i] for q in qs) for i in range(len(qs[0]))]
    mean = slots.mean_fixed(sums, agg.weight, packing, fed.task.chain.frac_bits)
    flat = np.concatenate([(chain_model[k] - fed.task.initial_model[k]).reshape(-1) for k in sorted(chain_model)])
    assert flat.tolist() == mean


def item_of(wire, key):
    return PartialDecryption.from_wire(wire, key, len(wire["partials"]))


def test_block_rules_for_openings_and_participants():
    fed = paillier_federation(least=2)
    chain = fed.chain()
    genesis = chain.tip
    lone = [encrypted_update(fed, 0, genesis.hash)]
    assert reason_of(lambda: chain.add(mine(fed, chain, genesis, lone))) is Reason.TOO_FEW_UPDATES
    b1 = chain.add(mine(fed, chain, genesis, [encrypted_update(fed, i, genesis.hash) for i in range(2)]))
    good = opening(fed, b1)
    assert reason_of(lambda: chain.add(mine(fed, chain, b1))) is Reason.BAD_DECRYPTION  # missing
    assert reason_of(lambda: chain.add(mine(fed, chain, b1, decryption=good[:1]))) is Reason.BAD_DECRYPTION
    swapped = [good[1], good[0]]
    assert reason_of(lambda: chain.add(mine(fed, chain, b1, decryption=swapped))) is Reason.BAD_DECRYPTION
    tampered = [dict(good[0]), good[1]]
    tampered[0]["partials"] = [tampered[0]["partials"][1], *tampered[0]["partials"][1:]]
    assert reason_of(lambda: chain.add(mine(fed, chain, b1, decryption=tampered))) is Reason.BAD_DECRYPTION
    forged_share = [dict(good[0], share=3), good[1]]  # share 1's partials claimed as share 3's
    assert reason_of(lambda: chain.add(mine(fed, chain, b1, decryption=forged_share))) is Reason.BAD_DECRYPTION
    b2 = chain.add(mine(fed, chain, b1, decryption=good))  # an empty block that opens b1
    assert b2.model is not None and chain.get(b1.hash).model is not None
    # a decryption where the parent has nothing to open
    assert reason_of(lambda: chain.add(mine(fed, chain, b2, decryption=good))) is Reason.BAD_DECRYPTION


def test_a_partial_is_refused_unless_its_signer_holds_that_share_and_it_verifies():
    fed = paillier_federation()
    chain = fed.chain()
    b1 = chain.add(mine(fed, chain, chain.tip, [encrypted_update(fed, i, chain.tip.hash) for i in range(2)]))
    key = fed.task.privacy.threshold.key
    good = item_of(opening(fed, b1, shares=(1,))[0], key)  # share 2 belongs to the first peer
    from edge_sdk.node.openings import Openings

    book = Openings(chain, lambda *_: None)
    wrong_signer = make_partial(fed.miner, key, b1.hash, good)
    assert reason_of(lambda: book.receive(wrong_signer, "m0")) is Reason.BAD_DECRYPTION
    stranger = make_partial(Identity.generate(), key, b1.hash, good)
    assert reason_of(lambda: book.receive(stranger, "x")) is Reason.BAD_MINER
    peer = Identity.from_seed(b"peer-0-0")
    bad = PartialDecryption(2, (good.partials[1], *good.partials[1:]), good.proof)
    assert reason_of(lambda: book.receive(make_partial(peer, key, b1.hash, bad), "m1")) is Reason.BAD_DECRYPTION
    book.receive(make_partial(peer, key, b1.hash, good), "m1")
    assert list(book.verified[b1.hash]) == [2]
    # one for a block not known yet is kept (one per sender) and used when the block arrives
    unknown = make_partial(peer, key, secrets.token_bytes(32), good)
    book.receive(unknown, "m1")
    assert book.pending == {"m1": unknown}
    with pytest.raises(ProtocolError):
        parse_partial(b"\x00" * 10, fed.task, book.count_of)


@pytest.mark.parametrize("carry", [True, False])
def test_an_overflowing_update_voids_the_round_on_every_node(carry):
    """Slots at their top carry into their neighbours and above the last slot; half-way up they
    carry nowhere but exceed what weight * (2^precision - 1) allows. Both void the round."""
    fed = paillier_federation()
    chain = fed.chain()
    genesis = chain.tip
    packing = fed.task.privacy.packing
    values = sum(v.size for v in fed.task.initial_model.values())
    top = (1 << packing.slot_bits) - 1 if carry else 1 << (packing.slot_bits - 1)
    attack = encrypted_update(fed, 3, genesis.hash, plaintexts=slots.pack([top] * values, packing))
    honest = [encrypted_update(fed, i, genesis.hash) for i in range(2)]
    b1 = chain.add(mine(fed, chain, genesis, [*honest, attack]))  # miners cannot tell: valid ciphertexts
    b2 = chain.add(mine(fed, chain, b1, decryption=opening(fed, b1)))
    assert b2.opened.overflow
    model = chain.get(b1.hash).model
    assert all(np.array_equal(model[k], fed.task.initial_model[k]) for k in model)  # unchanged
    # an honest round on it moves the model again
    b3 = chain.add(mine(fed, chain, b2, [encrypted_update(fed, i, b1.hash) for i in range(2)]))
    b4 = chain.add(mine(fed, chain, b3, decryption=opening(fed, b3, shares=(1, 2))))
    assert not b4.opened.overflow
    changed = chain.get(b3.hash).model
    assert any(not np.array_equal(changed[k], model[k]) for k in model)


def test_a_proof_hides_the_share():
    """z = r + e Delta s_i with r 2^128 times larger than e Delta s_i can be: z // e says nothing."""
    key, shares = dealt(2, 3)
    cts = encrypt([5, 6], key.n)
    share = shares[0]
    for _ in range(5):
        proof = threshold.prove(share, key, cts, threshold.partial_decrypt(share, key, cts))
        secret_part = proof.challenge * key.delta * share.value
        r = proof.response - secret_part
        assert r >= 0 and r.bit_length() >= secret_part.bit_length() + 120


def test_unsafe_threshold_settings_are_refused():
    fed = paillier_federation()
    wire = fed.task.to_wire()
    for change in ({"min_participants": 1}, {"t": 1}):
        bad = {**wire, "privacy": {**wire["privacy"], "threshold": {**wire["privacy"]["threshold"], **change}}}
        with pytest.raises(ProtocolError, match="min_participants >= 2"):
            type(fed.task).from_wire(bad)


def test_a_share_holder_opens_one_update_set_per_base_and_a_second_only_when_stuck(tmp_path):
    from coordinator.miner.decrypting import ShareHolder
    from edge_sdk.chain.database import Database

    fed = paillier_federation(least=2)
    chain = fed.chain()
    b1 = chain.add(mine(fed, chain, chain.tip, [encrypted_update(fed, i, chain.tip.hash) for i in range(2)]))
    digests = [bytes([i]) * 32 for i in range(6)]
    base = b"\x07" * 32
    holder = ShareHolder(Database(tmp_path / "m.db"), fed.shares[0], fed.task)
    s1 = digests[:4]
    assert holder.claim(b1, base, s1)
    assert holder.claim(b1, base, list(reversed(s1)))  # the same set, another order: a fork that opens alike
    assert not holder.claim(b1, base, digests[:3])  # not stuck: never a second set
    assert not holder.claim(b1, base, digests[:3], stuck=True)  # the difference would be one update
    assert not holder.claim(b1, base, [*digests[:3], digests[4]], stuck=True)  # one update against another
    assert holder.claim(b1, base, digests[2:6], stuck=True)  # each side differs by two = min_participants
    assert not holder.claim(b1, base, digests[:2], stuck=True)  # never a third set
    assert holder.claim(b1, b"\x08" * 32, digests[:3])  # another base is another round
    reopened = ShareHolder(Database(tmp_path / "m.db"), fed.shares[0], fed.task)  # choices survive a restart
    assert not reopened.claim(b1, base, digests[1:5], stuck=True) and reopened.claim(b1, base, s1)


def test_every_node_refuses_a_certificate_quota_above_the_paillier_max_quota():
    """Headroom covers max_updates updates at max_quota samples: a certificate granting more could
    overflow a slot (and void every device's round), so the update's own parse refuses it, even
    when the update claims few samples."""
    fed = paillier_federation()
    chain = fed.chain()
    genesis = chain.tip
    packing = fed.task.privacy.packing
    fed.certs[3] = issue_certificate(
        fed.coordinator, fed.task, fed.devices[3].public, quota=packing.max_quota + 1, expires_ms=now_ms() + 3_600_000
    )
    over = encrypted_update(fed, 3, genesis.hash, samples=100)
    with pytest.raises(ProtocolError, match="max_quota") as info:
        Update.parse(over, fed.task)
    assert info.value.reason is Reason.OVER_QUOTA
    verdict = admit(
        envelope.seal(fed.miner.public.box_pk, over),
        box_key=fed.miner.box_key,
        task=fed.task,
        tip=genesis,
        now_ms=now_ms(),
        revoked=set(),
        seen=lambda _: False,
        devices_in_round=set(),
    )
    assert not verdict.admitted and verdict.error.reason is Reason.OVER_QUOTA
    honest = [encrypted_update(fed, i, genesis.hash) for i in range(2)]
    assert reason_of(lambda: chain.add(mine(fed, chain, genesis, [*honest, over]))) is Reason.OVER_QUOTA
    # at exactly max_quota the same update is valid
    fed.certs[3] = issue_certificate(
        fed.coordinator, fed.task, fed.devices[3].public, quota=packing.max_quota, expires_ms=now_ms() + 3_600_000
    )
    assert Update.parse(encrypted_update(fed, 3, genesis.hash, samples=100), fed.task).cert.quota == packing.max_quota


def test_every_node_refuses_a_manifest_whose_max_updates_exceeds_the_paillier_headroom():
    """chain.max_updates above packing.max_updates: a full block's slot sums could carry. Every node
    reads the task from genesis, so genesis validation refuses it (and the miner set-up with it)."""
    fed = paillier_federation()
    packing = fed.task.privacy.packing
    fits = dataclasses.replace(fed.task.chain, max_updates=packing.max_updates)
    too_many = dataclasses.replace(fed.task.chain, max_updates=packing.max_updates + 1)
    assert validate_genesis(make_genesis(fed.coordinator, dataclasses.replace(fed.task, chain=fits)))[1].chain == fits
    genesis = make_genesis(fed.coordinator, dataclasses.replace(fed.task, chain=too_many))
    with pytest.raises(ProtocolError, match="Paillier headroom") as info:
        validate_genesis(genesis)
    assert info.value.reason is Reason.BAD_BODY
    with pytest.raises(ProtocolError, match="Paillier headroom"):
        MemoryChain(genesis)
