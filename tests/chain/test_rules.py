"""Every block rule, broken one at a time, is refused with its own reason; valid chains are kept."""

import numpy as np
import pytest
from conftest import make_federation

from edge_sdk.chain.rules import validate_genesis
from edge_sdk.clock import now_ms
from edge_sdk.protocol import envelope
from edge_sdk.protocol.block import Block, Update, make_genesis, make_update
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.fixedpoint import model_hash
from edge_sdk.protocol.identity import Identity
from edge_sdk.protocol.work import work


def refused(chain, raw, reason):
    tip = chain.tip
    with pytest.raises(ProtocolError) as info:
        chain.add(raw)
    assert info.value.reason is reason, str(info.value)
    assert chain.tip is tip
    return info.value


def test_valid_blocks_extend_the_chain_and_move_the_model(fed):
    chain = fed.chain()
    genesis = chain.tip
    updates = [fed.update(i, genesis.hash, samples=10 * (i + 1)) for i in range(3)]
    state = chain.add(fed.block(chain, updates=updates))
    assert chain.tip is state and state.header.height == 1
    assert state.cumwork == genesis.cumwork + work(state.header.target)
    assert model_hash(state.model, fed.task.chain.frac_bits) == state.header.model_hash
    assert not np.array_equal(state.model["W"], genesis.model["W"])
    assert chain.add(chain.raw[state.hash]) is state  # a known block is idempotent


def test_genesis_rules(fed):
    state, task = validate_genesis(fed.genesis)
    assert task.id == fed.task.id and state.header.height == 0
    impostor = Identity.from_seed(b"impostor")
    with pytest.raises(ProtocolError) as info:
        validate_genesis(make_genesis(impostor, fed.task))
    assert info.value.reason is Reason.BAD_GENESIS


@pytest.mark.parametrize(
    "fields, reason",
    [
        ({"height": 2}, Reason.BAD_HEIGHT),
        ({"prev_hash": bytes(32)}, Reason.UNKNOWN_PARENT),
        ({"task_id": bytes(32)}, Reason.WRONG_TASK),
        ({"merkle_root": bytes(32)}, Reason.BAD_MERKLE_ROOT),
        ({"model_hash": bytes(32)}, Reason.BAD_MODEL_HASH),
        ({"timestamp_ms": 0}, Reason.BAD_TIMESTAMP),
        ({"timestamp_ms": 2**62}, Reason.BAD_TIMESTAMP),
        ({"version": 2}, Reason.BAD_VERSION),
    ],
)
def test_header_rules(fed, fields, reason):
    chain = fed.chain()
    updates = [fed.update(0, chain.tip.hash)]
    refused(chain, fed.forged(chain, updates=updates, **fields), reason)


def test_target_must_follow_the_retarget_rule(fed):
    chain = fed.chain()
    tip = chain.tip.header
    refused(chain, fed.forged(chain, target=tip.target // 2), Reason.BAD_TARGET)
    refused(chain, fed.forged(chain, target=tip.target * 2), Reason.BAD_TARGET)


def test_work_must_meet_target():
    fed = make_federation(initial_target=1 << 200, pow_limit=1 << 200)
    chain = fed.chain()
    raw = fed.forged(chain, mine=False, nonce=0)
    header = Block.parse(raw, 1 << 30).header
    assert int.from_bytes(header.hash, "big") > header.target  # (true with overwhelming probability)
    refused(chain, raw, Reason.INSUFFICIENT_WORK)


def test_block_must_be_signed_by_its_miner(fed):
    chain = fed.chain()
    refused(chain, fed.forged(chain, signer=fed.devices[0]), Reason.BAD_MINER)


def test_update_rules(fed):
    chain = fed.chain()
    base = chain.tip.hash
    first = fed.update(0, base)
    refused(chain, fed.forged(chain, updates=[first, fed.update(0, base, seed=9)]), Reason.DUPLICATE_DEVICE)
    refused(chain, fed.forged(chain, updates=[fed.update(1, bytes(32))]), Reason.STALE_BASE)
    refused(chain, fed.forged(chain, updates=[fed.update(1, base, ts=1)]), Reason.BAD_TIMESTAMP)
    bad = make_federation(seed=5)  # another task: its update is for another task id
    refused(chain, fed.forged(chain, updates=[bad.update(0, base)]), Reason.BAD_UPDATE)
    tampered = bytearray(first)
    tampered[-1] ^= 1
    error = refused(chain, fed.forged(chain, updates=[bytes(tampered)]), Reason.BAD_UPDATE)
    assert "bad_signature" in str(error)


def test_update_content_rules(fed):
    """Updates a miner would be sent: each malformed one is refused with its own reason."""
    base = fed.chain().tip.hash
    cases = {
        Reason.NON_FINITE: {**fed.delta(0), "b": np.array([0, np.nan, 0], np.float32)},
        Reason.OUT_OF_RANGE: {**fed.delta(0), "b": np.array([0, 64.0, 0], np.float32)},
        Reason.BAD_SHAPE: {**fed.delta(0), "b": np.zeros(4, np.float32)},
    }
    for reason, delta in cases.items():
        with pytest.raises(ProtocolError) as info:
            Update.parse(fed.update(0, base, delta=delta), fed.task)
        assert info.value.reason is reason
    with pytest.raises(ProtocolError) as info:
        Update.parse(fed.update(0, base, samples=0), fed.task)
    assert info.value.reason is Reason.BAD_SAMPLE_COUNT
    missing = {k: v for k, v in fed.delta(0).items() if k != "b"}
    with pytest.raises(ProtocolError) as info:
        Update.parse(fed.update(0, base, delta=missing), fed.task)
    assert info.value.reason is Reason.BAD_SHAPE


def test_size_and_count_limits():
    fed = make_federation(max_updates=8, max_update_bytes=1024, max_block_bytes=1024)
    chain = fed.chain()
    base = chain.tip.hash
    updates = [fed.update(i, base) for i in range(3)]
    refused(chain, fed.forged(chain, updates=updates), Reason.TOO_LARGE)
    big = make_federation(max_updates=2, max_update_bytes=1 << 16, max_block_bytes=1 << 20)
    chain = big.chain()
    refused(
        chain, big.forged(chain, updates=[big.update(i, chain.tip.hash) for i in range(3)]), Reason.TOO_MANY_UPDATES
    )


def test_body_must_be_a_block(fed):
    chain = fed.chain()
    refused(chain, envelope.sign(fed.miner, "block", {"header": b"x", "updates": []}), Reason.BAD_BODY)
    refused(chain, envelope.sign(fed.miner, "update", {}), Reason.WRONG_TYPE)
    refused(chain, b"\x00garbage", Reason.BAD_ENCODING)


def test_fork_choice_prefers_work_then_lower_hash(fed):
    chain = fed.chain()
    genesis = chain.tip
    a = chain.add(fed.block(chain, parent=genesis, updates=[fed.update(0, genesis.hash)]))
    b = chain.add(fed.block(chain, parent=genesis, updates=[fed.update(1, genesis.hash)]))
    assert a.cumwork == b.cumwork
    assert chain.tip.hash == min(a.hash, b.hash)
    loser = a if chain.tip is b else b
    c = chain.add(fed.block(chain, parent=loser, updates=[fed.update(2, loser.hash)]))
    assert chain.tip is c  # the longer branch wins: a reorg


def test_retarget_applies_on_a_real_chain():
    fed = make_federation(retarget_window=1, target_interval_ms=60_000)
    chain = fed.chain()
    for _ in range(3):
        chain.add(fed.block(chain))
    # blocks came far faster than a minute apart: the third block's target is 4x harder
    headers = [chain.ancestor(chain.tip.hash, h) for h in range(4)]
    assert headers[3].target == headers[2].target // 4
    assert headers[2].target == headers[1].target


def test_certificate_rules(fed):
    from edge_sdk.protocol.cert import issue_certificate

    base = fed.chain().tip.hash
    cases = {
        Reason.BAD_CERT: dict(
            cert=issue_certificate(
                fed.devices[1], fed.task, fed.devices[0].public, quota=10**4, expires_ms=now_ms() + 10**6
            )
        ),
        Reason.OVER_QUOTA: dict(
            cert=issue_certificate(
                fed.coordinator, fed.task, fed.devices[0].public, quota=50, expires_ms=now_ms() + 10**6
            )
        ),
        Reason.CERT_EXPIRED: dict(
            cert=issue_certificate(fed.coordinator, fed.task, fed.devices[0].public, quota=10**4, expires_ms=1000)
        ),
    }
    for reason, kw in cases.items():
        raw = make_update(fed.devices[0], fed.task, kw["cert"], base, 100, fed.delta(0), now_ms())
        with pytest.raises(ProtocolError) as info:
            Update.parse(raw, fed.task)
        assert info.value.reason is reason
    # another device's certificate does not make an update valid
    stolen = make_update(fed.devices[0], fed.task, fed.certs[1], base, 100, fed.delta(0), now_ms())
    with pytest.raises(ProtocolError) as info:
        Update.parse(stolen, fed.task)
    assert info.value.reason is Reason.BAD_CERT


def test_block_from_a_miner_outside_the_set_is_refused(fed):
    chain = fed.chain()
    outsider = Identity.from_seed(b"outsider")
    refused(chain, fed.forged(chain, signer=outsider, miner=outsider.public.sign_pk), Reason.BAD_MINER)
