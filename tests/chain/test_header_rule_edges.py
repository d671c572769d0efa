"""Header and genesis rules at their edges: each rule broken alone, each boundary accepted on one side
and refused on the other, with the reason and the detail a node logs."""

import dataclasses

import numpy as np
import pytest
from conftest import make_federation

from coordinator.miner.assembly import search_nonce
from edge_sdk.chain.rules import check_header, expected_target, validate_genesis
from edge_sdk.protocol import envelope
from edge_sdk.protocol.block import Header, block_template, make_genesis
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.extras import Extras
from edge_sdk.protocol.identity import Identity
from edge_sdk.protocol.work import work

NOW = 10**13  # far past every timestamp here: only the rule under test can refuse


def refusal(call, reason: Reason) -> str:
    with pytest.raises(ProtocolError) as info:
        call()
    assert info.value.reason is reason, str(info.value)
    return info.value.detail


def header_on(fed, chain, *, mine: bool = True, **fields) -> Header:
    parent = chain.tip.header
    header = block_template(
        parent=parent, task=fed.task, miner=fed.miner.public.sign_pk, update_bytes=[], extras=Extras(),
        commitment=bytes(32), timestamp_ms=parent.timestamp_ms + 1, target=expected_target(fed.task, parent, chain),
    )  # fmt: skip
    header = dataclasses.replace(header, **fields)
    return search_nonce(header) if mine else header


def check(fed, chain, header, now_ms=NOW):
    check_header(header, chain.tip.header, fed.task, chain, now_ms)


def test_a_block_at_its_parents_time_is_accepted_one_ms_earlier_is_not(fed):
    chain = fed.chain()
    parent_ms = chain.tip.header.timestamp_ms
    check(fed, chain, header_on(fed, chain, timestamp_ms=parent_ms))
    detail = refusal(lambda: check(fed, chain, header_on(fed, chain, timestamp_ms=parent_ms - 1)), Reason.BAD_TIMESTAMP)
    assert detail == "block time must be >= parent's and <= now + skew"


def test_a_block_up_to_the_skew_ahead_of_the_clock_is_accepted_one_ms_more_is_not(fed):
    chain = fed.chain()
    now = chain.tip.header.timestamp_ms + 5_000
    ahead = now + fed.task.chain.max_skew_ms
    check(fed, chain, header_on(fed, chain, timestamp_ms=ahead), now_ms=now)
    refusal(lambda: check(fed, chain, header_on(fed, chain, timestamp_ms=ahead + 1), now_ms=now), Reason.BAD_TIMESTAMP)


@pytest.mark.parametrize("height", [0, 2])
def test_a_block_is_one_above_its_parent(fed, height):
    chain = fed.chain()
    detail = refusal(lambda: check(fed, chain, header_on(fed, chain, height=height)), Reason.BAD_HEIGHT)
    assert detail == f"height {height}, parent has 0"


def test_each_header_field_rule_names_itself(fed):
    chain = fed.chain()
    cases = [
        ({"version": 3}, Reason.BAD_VERSION, "header version 3"),
        ({"task_id": bytes(32)}, Reason.WRONG_TASK, "block is for another task"),
        ({"prev_hash": bytes(32)}, Reason.UNKNOWN_PARENT, "header does not follow its parent"),
        ({"miner": bytes(32)}, Reason.BAD_MINER, "the block's miner is not in the task's miner set"),
    ]
    for fields, reason, detail in cases:
        assert refusal(lambda fields=fields: check(fed, chain, header_on(fed, chain, **fields)), reason) == detail


def test_the_target_must_be_the_rules_exactly(fed):
    chain = fed.chain()
    rule = expected_target(fed.task, chain.tip.header, chain)
    detail = refusal(lambda: check(fed, chain, header_on(fed, chain, target=rule - 1)), Reason.BAD_TARGET)
    assert detail == f"target {rule - 1:064x}, rule says {rule:064x}"


def test_a_header_above_its_target_is_insufficient_work():
    fed = make_federation(initial_target=1 << 200, pow_limit=1 << 200)
    chain = fed.chain()
    header = header_on(fed, chain, mine=False)
    detail = refusal(lambda: check(fed, chain, header), Reason.INSUFFICIENT_WORK)
    assert detail == "header hash is above its target"


def genesis_with(fed, signer=None, **fields) -> bytes:
    """The task's genesis with header fields changed, signed by `signer` (the coordinator)."""
    body = envelope.open_envelope(fed.genesis).body
    header = dataclasses.replace(Header.decode(body["header"]), **fields)
    return envelope.sign(signer or fed.coordinator, "genesis", {**body, "header": header.encode()})


def test_the_genesis_state_is_the_tasks_initial_state(fed):
    state, task = validate_genesis(fed.genesis)
    header = Header.decode(envelope.open_envelope(fed.genesis).body["header"])
    assert task.id == fed.task.id and state.header == header
    assert (state.cumwork, state.base, state.base_ms) == (work(header.target), header.hash, fed.task.created_ms)
    assert all(np.array_equal(state.model[k], v) for k, v in fed.task.initial_model.items())
    assert state.aggregate is None and not state.revocations.devices


@pytest.mark.parametrize(
    "fields, rule",
    [
        ({"height": 1}, "height 0 and a zero parent"),
        ({"prev_hash": b"\x01" * 32}, "height 0 and a zero parent"),
        ({"task_id": bytes(32)}, "task_id is the task's hash"),
        ({"merkle_root": bytes(32)}, "no updates"),
        ({"model_hash": bytes(32)}, "model hash of the initial model"),
        ({"miner": bytes(32)}, "signed by the task's coordinator"),
        ({"target": 12345}, "target is the initial target"),
        ({"timestamp_ms": 0}, "timestamp is the task's creation time"),
    ],
)
def test_each_genesis_rule_names_itself(fed, fields, rule):
    detail = refusal(lambda: validate_genesis(genesis_with(fed, **fields)), Reason.BAD_GENESIS)
    assert detail == f"genesis must have {rule}"


def test_a_genesis_naming_the_coordinator_but_signed_by_another_is_refused(fed):
    detail = refusal(lambda: validate_genesis(genesis_with(fed, Identity.from_seed(b"x"))), Reason.BAD_GENESIS)
    assert detail == "genesis must have signed by the task's coordinator"
    other = Identity.from_seed(b"coordinator-0")  # the same key: the unchanged genesis validates
    assert validate_genesis(genesis_with(fed, other))[1].id == fed.task.id


@pytest.mark.parametrize(
    "body", [{"header": b""}, {"header": b"", "task": {}, "x": 1}, [1, 2]], ids=["no-task", "extra", "list"]
)
def test_a_genesis_body_has_exactly_header_and_task(fed, body):
    detail = refusal(lambda: validate_genesis(envelope.sign(fed.coordinator, "genesis", body)), Reason.BAD_BODY)
    assert detail == "genesis body must have exactly header, task"


def test_a_genesis_must_be_a_genesis_message(fed):
    body = envelope.open_envelope(fed.genesis).body
    refusal(lambda: validate_genesis(envelope.sign(fed.coordinator, "block", body)), Reason.WRONG_TYPE)
    assert make_genesis(fed.coordinator, fed.task) == fed.genesis


def test_the_target_retargets_from_the_time_span_of_its_window():
    fed = make_federation(retarget_window=2, target_interval_ms=1000)
    chain = fed.chain()
    t0 = chain.tip.header.timestamp_ms
    for ms in (1000, 2000, 4000):  # heights 1-3; the window of height 4 spans heights 1 to 3: 3000 ms
        chain.add(fed.forged(chain, timestamp_ms=t0 + ms))
    third = chain.tip.header
    assert expected_target(fed.task, chain.ancestor(third.hash, 2), chain) == third.target  # height 3 keeps it
    assert expected_target(fed.task, third, chain) == third.target * 3000 // 2000
    fourth = chain.add(fed.forged(chain, timestamp_ms=t0 + 5000)).header
    assert (fourth.height, fourth.target) == (4, third.target * 3000 // 2000)
