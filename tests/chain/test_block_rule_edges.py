"""Block and update rules at their edges: the round's time window, certificate expiry at the block's
time, revocation lists, size and count limits, and the state a valid block leaves."""

import dataclasses

import pytest
from conftest import make_federation

from edge_sdk.chain.rules import check_revocations, check_update, validate_block
from edge_sdk.clock import now_ms
from edge_sdk.protocol.block import Update
from edge_sdk.protocol.cert import issue_certificate
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.extras import Extras
from edge_sdk.protocol.revocations import make_revocations, parse_revocations
from edge_sdk.protocol.work import work


def refusal(call, reason: Reason) -> str:
    with pytest.raises(ProtocolError) as info:
        call()
    assert info.value.reason is reason, str(info.value)
    return info.value.detail


def test_an_update_may_run_the_skew_either_side_of_the_round_and_no_further(fed):
    genesis = fed.chain().tip
    skew, block_ms = fed.task.chain.max_skew_ms, genesis.base_ms + 1_000
    for ts in (genesis.base_ms - skew, block_ms + skew):
        check_update(Update.parse(fed.update(0, genesis.hash, ts=ts), fed.task), genesis, block_ms, fed.task)
    for ts in (genesis.base_ms - skew - 1, block_ms + skew + 1):
        update = Update.parse(fed.update(0, genesis.hash, ts=ts), fed.task)
        detail = refusal(lambda u=update: check_update(u, genesis, block_ms, fed.task), Reason.BAD_TIMESTAMP)
        assert detail == "update time is outside [base - skew, block + skew]"


def test_a_certificate_is_valid_up_to_the_blocks_time_included(fed):
    genesis = fed.chain().tip
    expires = genesis.base_ms + 5_000
    cert = issue_certificate(fed.coordinator, fed.task, fed.devices[0].public, quota=100, expires_ms=expires)
    fed.certs[0] = cert
    update = Update.parse(fed.update(0, genesis.hash, ts=genesis.base_ms), fed.task)
    check_update(update, genesis, expires, fed.task)
    detail = refusal(lambda: check_update(update, genesis, expires + 1, fed.task), Reason.CERT_EXPIRED)
    assert detail == "the certificate expired before this round"


def test_a_stale_update_names_the_first_16_hex_digits_of_its_base(fed):
    genesis = fed.chain().tip
    base = bytes(range(100, 132))
    update = Update.parse(fed.update(0, base), fed.task)
    detail = refusal(lambda: check_update(update, genesis, now_ms(), fed.task), Reason.STALE_BASE)
    assert detail == f"update base {base.hex()[:16]} is not the round's base"


def test_an_update_of_a_device_revoked_on_the_chain_is_refused_others_pass(fed):
    genesis = fed.chain().tip
    listed = parse_revocations(
        make_revocations(fed.coordinator, fed.task, [fed.devices[1].public.sign_pk], 5), fed.task
    )
    parent = dataclasses.replace(genesis, revocations=listed)
    ok = Update.parse(fed.update(0, genesis.hash), fed.task)
    check_update(ok, parent, now_ms(), fed.task)
    revoked = Update.parse(fed.update(1, genesis.hash), fed.task)
    detail = refusal(lambda: check_update(revoked, parent, now_ms(), fed.task), Reason.REVOKED)
    assert detail == "the device is revoked on this chain"


def test_a_block_keeps_its_parents_list_or_carries_a_strictly_newer_one(fed):
    genesis = fed.chain().tip
    older = parse_revocations(make_revocations(fed.coordinator, fed.task, [], 100), fed.task)
    parent = dataclasses.replace(genesis, revocations=older)
    assert check_revocations(None, parent, fed.task) is older
    same = make_revocations(fed.coordinator, fed.task, [b"\x01" * 32], 100)
    detail = refusal(lambda: check_revocations(same, parent, fed.task), Reason.BAD_REVOCATIONS)
    assert detail == "the block's revocation list is not newer than its chain's"
    newer = check_revocations(make_revocations(fed.coordinator, fed.task, [b"\x01" * 32], 101), parent, fed.task)
    assert (newer.ts, newer.devices) == (101, {b"\x01" * 32})


def test_a_revocation_list_that_does_not_parse_keeps_its_detail(fed):
    genesis = fed.chain().tip
    with pytest.raises(ProtocolError) as parsed:
        parse_revocations(b"\x00", fed.task)
    detail = refusal(lambda: check_revocations(b"\x00", genesis, fed.task), Reason.BAD_REVOCATIONS)
    assert detail == parsed.value.detail and detail  # the parser's own words, under the block rule's reason
    forged = make_revocations(fed.devices[0], fed.task, [], 7)
    detail = refusal(lambda: check_revocations(forged, genesis, fed.task), Reason.BAD_REVOCATIONS)
    assert detail == "revocations not signed by this task's coordinator"


def sized_block(max_block_bytes: int, samples: int = 100) -> tuple:
    fed = make_federation(max_block_bytes=max_block_bytes, max_update_bytes=max_block_bytes)
    chain = fed.chain()
    raw = fed.block(chain, updates=[fed.update(0, chain.tip.hash, samples=samples, ts=chain.tip.base_ms)])
    return fed, chain, raw


def test_a_block_of_exactly_max_block_bytes_is_accepted_one_byte_more_is_too_large():
    size = len(sized_block(1 << 20)[2])
    fed, chain, raw = sized_block(size)
    assert len(raw) == size and chain.add(raw).header.height == 1
    fed, chain, bigger = sized_block(size, samples=1000)  # a 3-byte integer where there was a 2-byte one
    assert len(bigger) == size + 1
    detail = refusal(lambda: chain.add(bigger), Reason.TOO_LARGE)
    assert detail == f"block of {size + 1} bytes > {size}"


def test_a_block_of_exactly_max_updates_is_accepted_one_more_is_refused():
    fed = make_federation(max_updates=2)
    chain = fed.chain()
    base = chain.tip.hash
    assert chain.add(fed.block(chain, updates=[fed.update(i, base) for i in range(2)])).header.height == 1
    three = fed.forged(chain, parent=chain.get(base), updates=[fed.update(i, base) for i in range(3)])
    assert refusal(lambda: chain.add(three), Reason.TOO_MANY_UPDATES) == "3 > 2"


def test_updates_a_miner_already_verified_are_taken_as_parsed(fed):
    chain = fed.chain()
    raws = [fed.update(i, chain.tip.hash) for i in range(2)]
    known = {Update.parse(r, fed.task).digest: Update.parse(r, fed.task) for r in raws}
    raw = fed.block(chain, updates=raws)
    _, updates, _ = validate_block(raw, task=fed.task, chain=chain, now_ms=now_ms(), known_updates=known)
    assert [u is known[u.digest] for u in updates] == [True, True]
    _, fresh, _ = validate_block(raw, task=fed.task, chain=chain, now_ms=now_ms())
    assert [u.digest for u in fresh] == [u.digest for u in updates] and fresh[0] is not updates[0]


def test_a_bad_or_repeated_update_is_named_by_its_index(fed):
    chain = fed.chain()
    base = chain.tip.hash
    good, twin = fed.update(0, base), fed.update(0, base, seed=7)
    signed = fed.update(1, base)
    tampered = signed[:-1] + bytes([signed[-1] ^ 1])  # a changed signature byte, whatever it was
    bad = fed.forged(chain, updates=[good, tampered])
    assert refusal(lambda: chain.add(bad), Reason.BAD_UPDATE) == "update 1: bad_signature: signature does not verify"
    twice = fed.forged(chain, updates=[good, fed.update(2, base), twin])
    assert refusal(lambda: chain.add(twice), Reason.DUPLICATE_DEVICE) == "update 2 repeats a device"


def test_a_block_refused_for_its_body_says_which_commitment_failed(fed):
    chain = fed.chain()
    updates = [fed.update(0, chain.tip.hash)]
    cases = [
        (fed.forged(chain, updates=updates, merkle_root=bytes(32)), Reason.BAD_MERKLE_ROOT,
         "merkle root does not match the updates and extras"),
        (fed.forged(chain, updates=updates, model_hash=bytes(32)), Reason.BAD_MODEL_HASH,
         "header's model hash is not that of the aggregated model (or encrypted aggregate)"),
        (fed.forged(chain, updates=updates, extras=Extras(excluded=(0,))), Reason.BAD_EXCLUSIONS,
         "the block's excluded updates are not those its rule excludes"),
        (fed.forged(chain, signer=fed.devices[0]), Reason.BAD_MINER, "block is not signed by its header's miner"),
    ]  # fmt: skip
    for raw, reason, detail in cases:
        assert refusal(lambda raw=raw: chain.add(raw), reason) == detail


def test_an_unknown_parent_is_named_by_its_first_16_hex_digits(fed):
    chain = fed.chain()
    other = make_federation()  # the same task: a chain this node has not seen
    elsewhere = other.chain()
    parent = elsewhere.add(other.block(elsewhere))
    raw = other.block(elsewhere, parent=parent)
    detail = refusal(lambda: chain.add(raw), Reason.UNKNOWN_PARENT)
    assert detail == f"parent {parent.hash.hex()[:16]} is not known"


class Forgetful:
    """A chain view that knows one block but not its model (a node below its snapshot's checkpoint)."""

    def __init__(self, chain, forgotten: bytes):
        self.chain, self.forgotten = chain, forgotten

    def get(self, block_hash):
        state = self.chain.get(block_hash)
        return dataclasses.replace(state, model=None) if block_hash == self.forgotten else state

    def ancestor(self, block_hash, height):
        return self.chain.ancestor(block_hash, height)


def test_a_parent_known_without_its_model_is_an_unknown_parent(fed):
    chain = fed.chain()
    raw = fed.block(chain)
    view = Forgetful(chain, chain.tip.hash)
    detail = refusal(lambda: validate_block(raw, task=fed.task, chain=view, now_ms=now_ms()), Reason.UNKNOWN_PARENT)
    assert detail == f"parent {chain.tip.hash.hex()[:16]} is not known"


def test_the_state_of_a_block_names_its_round(fed):
    chain = fed.chain()
    genesis = chain.tip
    first = chain.add(fed.block(chain, updates=[fed.update(0, genesis.hash)]))
    assert (first.base, first.base_ms) == (first.hash, first.header.timestamp_ms)
    assert first.cumwork == genesis.cumwork + work(first.header.target) and first.aggregate is None
    empty = chain.add(fed.forged(chain, parent=first, timestamp_ms=first.header.timestamp_ms + 5))
    assert (empty.base, empty.base_ms) == (first.hash, first.header.timestamp_ms)
    assert empty.cumwork == first.cumwork + work(empty.header.target)
    assert empty.revocations is first.revocations and empty.opened is None
