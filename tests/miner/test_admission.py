"""Every rule a miner applies before pooling an update: `admit`, without a broker or a database."""

import hashlib

import pytest
from conftest import make_federation

from coordinator.miner.admission import admit
from edge_sdk.clock import now_ms
from edge_sdk.protocol import envelope
from edge_sdk.protocol.errors import Reason
from edge_sdk.protocol.identity import Identity


def verdict(fed, sealed, *, tip=None, revoked=(), seen=(), in_round=(), now=None):
    tip = tip or fed.chain().tip
    return admit(
        sealed,
        box_key=fed.miner.box_key,
        task=fed.task,
        tip=tip,
        now_ms=now_ms() if now is None else now,
        revoked=set(revoked),
        seen=set(seen).__contains__,
        devices_in_round=set(in_round),
    )


def sealed_update(fed, device=0, **kw):
    raw = fed.update(device, fed.chain().tip.hash, **kw)
    return raw, envelope.seal(fed.miner.public.box_pk, raw)


def test_a_valid_update_is_admitted_with_its_digest(fed):
    raw, sealed = sealed_update(fed)
    v = verdict(fed, sealed)
    assert v.admitted and v.error is None
    assert v.digest == hashlib.sha256(raw).digest() == v.update.digest
    assert v.update.device == fed.devices[0].public.sign_pk and v.update.samples == 100
    assert verdict(fed, sealed).digest == v.digest  # pure: the same input, the same verdict


@pytest.mark.parametrize(
    "case, reason",
    [
        ("sealed to another miner", Reason.BAD_SEAL),
        ("seen before", Reason.REPLAY),
        ("revoked device", Reason.REVOKED),
        ("stale base", Reason.STALE_BASE),
        ("from the future", Reason.BAD_TIMESTAMP),
        ("second in the round", Reason.DUPLICATE_DEVICE),
        ("bad signature", Reason.BAD_SIGNATURE),
        ("another task", Reason.WRONG_TASK),
        ("over quota", Reason.OVER_QUOTA),
    ],
)
def test_each_rule_refuses_with_its_reason(fed, case, reason):
    raw, sealed = sealed_update(fed)
    device = fed.devices[0].public.sign_pk
    kw = {}
    if case == "sealed to another miner":
        sealed = envelope.seal(Identity.from_seed(b"other").public.box_pk, raw)
    elif case == "seen before":
        kw["seen"] = [hashlib.sha256(raw).digest()]
    elif case == "revoked device":
        kw["revoked"] = [device]
    elif case == "stale base":
        sealed = envelope.seal(fed.miner.public.box_pk, fed.update(0, bytes(32)))
    elif case == "from the future":
        ts = now_ms() + fed.task.chain.max_skew_ms + 60_000
        sealed = envelope.seal(fed.miner.public.box_pk, fed.update(0, fed.chain().tip.hash, ts=ts))
    elif case == "second in the round":
        kw["in_round"] = [device]
    elif case == "bad signature":
        forged = raw[:-1] + bytes([raw[-1] ^ 1])  # the last byte of the signature
        sealed = envelope.seal(fed.miner.public.box_pk, forged)
    elif case == "another task":
        other = make_federation(seed=7)
        sealed = envelope.seal(fed.miner.public.box_pk, other.update(0, fed.chain().tip.hash))
    elif case == "over quota":
        small = make_federation(quota=50)
        raw = small.update(0, small.chain().tip.hash, samples=51)
        fed = small
        sealed = envelope.seal(fed.miner.public.box_pk, raw)
    v = verdict(fed, sealed, **kw)
    assert not v.admitted and v.error is not None
    assert v.error.reason is reason, v.error
    assert (v.digest is None) == (case == "sealed to another miner")


def test_replay_is_refused_before_any_signature_work(fed):
    """A replayed update costs a hash and a lookup: even broken bytes are refused as replays."""
    garbage = b"\x85not an envelope"
    sealed = envelope.seal(fed.miner.public.box_pk, garbage)
    v = verdict(fed, sealed, seen=[hashlib.sha256(garbage).digest()])
    assert v.error.reason is Reason.REPLAY


def test_an_expired_certificate_is_refused_even_with_a_back_dated_update(fed):
    """Finding 8: the expiry check used only the update's own timestamp, which its sender chooses."""
    from edge_sdk.protocol.block import make_update
    from edge_sdk.protocol.cert import issue_certificate

    now = now_ms()
    cert = issue_certificate(fed.coordinator, fed.task, fed.devices[0].public, quota=1000, expires_ms=now - 1000)
    tip = fed.chain().tip
    back_dated = make_update(fed.devices[0], fed.task, cert, tip.hash, 10, fed.delta(0), now - 2000)
    v = verdict(fed, envelope.seal(fed.miner.public.box_pk, back_dated), now=now)
    assert v.error.reason is Reason.CERT_EXPIRED
