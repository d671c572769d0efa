"""Admission's verdicts beyond the reason code: the size checked before anything is opened, the
parsed update a refusal still carries once its signature verified, and a detail for the log."""

import hashlib

import pytest

from coordinator.miner.admission import admit
from edge_sdk.clock import now_ms
from edge_sdk.protocol import envelope
from edge_sdk.protocol.errors import Reason


def verdict(fed, sealed, *, revoked=(), seen=(), in_round=()):
    return admit(
        sealed, box_key=fed.miner.box_key, task=fed.task, tip=fed.chain().tip, now_ms=now_ms(),
        revoked=set(revoked), seen=set(seen).__contains__, devices_in_round=set(in_round),
    )  # fmt: skip


def test_a_sealed_update_over_the_tasks_size_limit_is_refused_before_it_is_opened(fed):
    limit = fed.task.chain.max_update_bytes
    v = verdict(fed, envelope.seal(fed.miner.public.box_pk, bytes(limit + 1)))
    assert v.error.reason is Reason.TOO_LARGE and v.digest is None and v.update is None


@pytest.mark.parametrize("case", ["revoked", "second in the round"])
def test_a_refused_update_whose_signature_verified_is_carried_as_evidence(fed, case):
    raw = fed.update(0, fed.chain().tip.hash)
    device = fed.devices[0].public.sign_pk
    kw = {"revoked": [device]} if case == "revoked" else {"in_round": [device]}
    v = verdict(fed, envelope.seal(fed.miner.public.box_pk, raw), **kw)
    assert not v.admitted and v.error.detail
    assert v.update is not None and v.update.device == device and v.digest == hashlib.sha256(raw).digest()


def test_a_replay_carries_no_parsed_update_and_says_why(fed):
    raw = fed.update(0, fed.chain().tip.hash)
    v = verdict(fed, envelope.seal(fed.miner.public.box_pk, raw), seen=[hashlib.sha256(raw).digest()])
    assert v.error.reason is Reason.REPLAY and v.error.detail and v.update is None
