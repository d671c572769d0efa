"""Evidence, rule by rule: what convicts a node, and why each refusal is refused (all refusals share
the reason bad_evidence, so the detail is what tells a node operator which rule the item broke)."""

from hashlib import sha256

import pytest
from conftest import make_federation

from edge_sdk.chain.evidence import offender, offenders
from edge_sdk.chain.rules import validate_block
from edge_sdk.protocol import envelope
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.extras import Evidence, Extras
from edge_sdk.protocol.identity import Identity

ROGUE = Identity.from_seed(b"peer-0-0")  # the second miner of make_federation(peers=1)


@pytest.fixture
def fed2():
    return make_federation(peers=1)


def judge(fed, chain, *items, parent=None):
    parent = chain.tip.hash if parent is None else parent
    return offenders(list(items), task=fed.task, chain=chain, parent=parent, validate=validate_block)


def refusal(call) -> str:
    """The detail of a bad_evidence refusal."""
    with pytest.raises(ProtocolError) as info:
        call()
    assert info.value.reason is Reason.BAD_EVIDENCE, str(info.value)
    return info.value.detail


def in_digest_order(*raws) -> tuple:
    return tuple(sorted(raws, key=lambda r: sha256(r).digest()))


def double(fed, base, device=0):
    return in_digest_order(fed.update(device, base, seed=1), fed.update(device, base, seed=2))


def rogue_block(fed, chain, **fields):
    return fed.forged(chain, signer=ROGUE, miner=ROGUE.public.sign_pk, **fields)


def test_two_offenders_are_returned_in_the_order_of_the_evidence(fed2):
    chain = fed2.chain()
    base = chain.tip.hash
    device = Evidence("double-update", double(fed2, base, device=2))
    block = Evidence("invalid-block", (rogue_block(fed2, chain, model_hash=bytes(32)),))
    found = judge(fed2, chain, device, block)
    assert found == [fed2.devices[2].public.sign_pk, ROGUE.public.sign_pk]
    assert judge(fed2, chain) == []


def test_a_node_accused_twice_in_one_block_names_the_second_item(fed):
    chain = fed.chain()
    a, b = double(fed, chain.tip.hash)
    c = fed.update(0, chain.tip.hash, seed=3)
    other = Evidence("double-update", in_digest_order(a, c))
    detail = refusal(lambda: judge(fed, chain, Evidence("double-update", (a, b)), other))
    assert detail == "evidence 1 accuses a node twice in one block"


def test_double_update_evidence_whose_update_does_not_parse_says_why(fed):
    chain = fed.chain()
    a, b = double(fed, chain.tip.hash)
    tampered = a[:-1] + bytes([a[-1] ^ 1])
    detail = refusal(lambda: judge(fed, chain, Evidence("double-update", (tampered, b))))
    assert detail == "double-update: bad_signature: signature does not verify"


def test_double_update_needs_one_device_on_one_base(fed):
    chain = fed.chain()
    base = chain.tip.hash
    two_devices = in_digest_order(fed.update(0, base), fed.update(1, base))
    two_bases = in_digest_order(fed.update(0, base), fed.update(0, bytes(32)))
    for pair in (two_devices, two_bases):
        detail = refusal(lambda pair=pair: judge(fed, chain, Evidence("double-update", pair)))
        assert detail == "double-update: not one device on one base"


def test_double_update_needs_two_different_updates_in_digest_order(fed):
    chain = fed.chain()
    a, b = double(fed, chain.tip.hash)
    for pair in ((b, a), (a, a)):
        detail = refusal(lambda pair=pair: judge(fed, chain, Evidence("double-update", pair)))
        assert detail == "double-update: two different updates, in digest order"
    assert judge(fed, chain, Evidence("double-update", (a, b))) == [fed.devices[0].public.sign_pk]


def test_a_miners_signed_message_that_is_not_a_block_proves_nothing(fed2):
    chain = fed2.chain()
    other = envelope.sign(ROGUE, "genesis", {"header": b"", "task": {}})
    detail = refusal(lambda: judge(fed2, chain, Evidence("invalid-block", (other,))))
    assert detail == "invalid-block: not a signed block: wrong_type: genesis, expected block"


def test_a_block_too_large_for_any_block_to_carry_proves_nothing():
    fed = make_federation(peers=1, max_block_bytes=1024, max_update_bytes=1024)
    chain = fed.chain()
    updates = [fed.update(i, chain.tip.hash) for i in range(4)]
    big = rogue_block(fed, chain, updates=updates)
    assert len(big) > 1024
    item = Evidence("invalid-block", (big,))
    detail = refusal(lambda: offender(item, task=fed.task, chain=chain, parent=chain.tip.hash, validate=validate_block))
    assert detail.startswith("invalid-block: not a signed block: too_large")


def test_a_block_signed_by_a_device_convicts_nobody(fed):
    chain = fed.chain()
    forged = fed.forged(chain, signer=fed.devices[0], model_hash=bytes(32))
    detail = refusal(lambda: judge(fed, chain, Evidence("invalid-block", (forged,))))
    assert detail == "invalid-block: not signed by a miner of the task"


def test_a_malformed_block_signed_by_a_miner_convicts_it(fed2):
    chain = fed2.chain()
    malformed = envelope.sign(ROGUE, "block", {"header": b"short", "updates": [], "extras": {}})
    assert judge(fed2, chain, Evidence("invalid-block", (malformed,))) == [ROGUE.public.sign_pk]


def test_an_accused_block_must_extend_the_carriers_parent(fed2):
    chain = fed2.chain()
    bad = Evidence("invalid-block", (rogue_block(fed2, chain, model_hash=bytes(32)),))
    detail = refusal(lambda: judge(fed2, chain, bad, parent=bytes(32)))
    assert detail == "invalid-block: the accused block must extend this block's parent"


def test_an_accused_block_may_not_carry_evidence(fed2):
    chain = fed2.chain()
    a, b = double(fed2, chain.tip.hash)
    carried = Extras(evidence=(Evidence("double-update", (a, b)),))
    nested = rogue_block(fed2, chain, model_hash=bytes(32), extras=carried)
    detail = refusal(lambda: judge(fed2, chain, Evidence("invalid-block", (nested,))))
    assert detail == "invalid-block: an accused block may not carry evidence"


def test_an_accused_block_whose_parent_the_judge_does_not_know_proves_nothing(fed2):
    chain = fed2.chain()
    parent = chain.add(fed2.block(chain))
    bad = Evidence("invalid-block", (rogue_block(fed2, chain, parent=parent, model_hash=bytes(32)),))
    assert judge(fed2, chain, bad, parent=parent.hash) == [ROGUE.public.sign_pk]
    stranger = fed2.chain()  # a node that has not seen the parent
    detail = refusal(lambda: judge(fed2, stranger, bad, parent=parent.hash))
    assert detail == "invalid-block: its parent is not known"


def test_a_valid_block_cannot_be_framed(fed2):
    chain = fed2.chain()
    valid = fed2.block(chain, miner=ROGUE)
    detail = refusal(lambda: judge(fed2, chain, Evidence("invalid-block", (valid,))))
    assert detail == "invalid-block: the accused block is valid"
