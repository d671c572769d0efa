"""Paillier openings at their edges: the aggregate's stored bytes, exactly t partials by increasing
share, the participant minimum, and a parent whose own parent's model a node does not have."""

import numpy as np
import pytest
from privacy.test_threshold import encrypted_update, mine, opening, paillier_federation
from test_block_rule_edges import Forgetful

from edge_sdk.chain.opening import Aggregate, check_items
from edge_sdk.chain.rules import validate_block
from edge_sdk.clock import now_ms
from edge_sdk.protocol import codec
from edge_sdk.protocol.errors import ProtocolError, Reason


def refusal(call, reason: Reason) -> str:
    with pytest.raises(ProtocolError) as info:
        call()
    assert info.value.reason is reason, str(info.value)
    return info.value.detail


@pytest.fixture(scope="module")
def opened_round():
    """A Paillier chain whose block b1 aggregates two updates, and its t good partials."""
    fed = paillier_federation()
    chain = fed.chain()
    genesis = chain.tip
    b1 = chain.add(mine(fed, chain, genesis, [encrypted_update(fed, i, genesis.hash) for i in range(2)]))
    return fed, chain, b1, opening(fed, b1)


def test_an_aggregate_is_stored_as_fixed_width_big_endian_ciphertexts_and_its_weight():
    aggregate = Aggregate((0x0102, 0xA0B0C0), 77)
    raw = aggregate.encode(4)
    assert raw == codec.encode({"ciphertexts": [b"\x00\x00\x01\x02", b"\x00\xa0\xb0\xc0"], "weight": 77})
    assert Aggregate.decode(raw) == aggregate


def test_good_partials_give_each_shares_partial_decryptions(opened_round):
    fed, _, b1, good = opened_round
    partials = check_items(good, b1.aggregate, fed.task)
    assert sorted(partials) == [1, 2]
    assert partials[1] == [int.from_bytes(p, "big") for p in good[0]["partials"]]


@pytest.mark.parametrize("count", [0, 1, 3])
def test_a_block_opening_its_parent_carries_exactly_t_partials(opened_round, count):
    fed, _, b1, good = opened_round
    items = (good * 2)[:count]
    detail = refusal(lambda: check_items(items, b1.aggregate, fed.task), Reason.BAD_DECRYPTION)
    assert detail == "a block opening its parent carries 2 partials"


@pytest.mark.parametrize("value", [None, {"share": 1}, b"partials"], ids=["none", "map", "bytes"])
def test_partials_that_are_not_a_list_are_bad_decryption(opened_round, value):
    fed, _, b1, _ = opened_round
    detail = refusal(lambda: check_items(value, b1.aggregate, fed.task), Reason.BAD_DECRYPTION)
    assert detail == "a block opening its parent carries 2 partials"


@pytest.mark.parametrize("order", [(1, 0), (0, 0)], ids=["decreasing", "repeated"])
def test_partials_must_be_of_distinct_shares_by_increasing_share(opened_round, order):
    fed, _, b1, good = opened_round
    items = [good[i] for i in order]
    detail = refusal(lambda: check_items(items, b1.aggregate, fed.task), Reason.BAD_DECRYPTION)
    assert detail == "partial decryptions must be of distinct shares, increasing"


def test_a_partial_that_does_not_verify_names_its_share(opened_round):
    fed, _, b1, good = opened_round
    swapped = dict(good[1], partials=list(reversed(good[1]["partials"])))
    detail = refusal(lambda: check_items([good[0], swapped], b1.aggregate, fed.task), Reason.BAD_DECRYPTION)
    assert detail == "the partial decryption of share 2 does not verify"


def test_an_opening_reports_no_overflow_as_false(opened_round):
    fed, chain, b1, good = opened_round
    _, _, state = validate_block(mine(fed, chain, b1, decryption=good), task=fed.task, chain=chain, now_ms=now_ms())
    assert state.opened.overflow is False
    assert all(state.opened.model[k].dtype == np.int64 for k in state.opened.model)


def test_a_block_aggregates_no_update_or_at_least_min_participants():
    fed = paillier_federation(least=3)
    chain = fed.chain()
    genesis = chain.tip
    two = [encrypted_update(fed, i, genesis.hash) for i in range(2)]
    detail = refusal(lambda: chain.add(mine(fed, chain, genesis, two)), Reason.TOO_FEW_UPDATES)
    assert detail == "2 updates; a block aggregates none or >= 3"
    three = chain.add(mine(fed, chain, genesis, [*two, encrypted_update(fed, 2, genesis.hash)]))
    assert three.aggregate.weight == 300 and three.model is None


def test_a_decryption_with_nothing_to_open_is_refused(opened_round):
    fed, chain, b1, good = opened_round
    genesis = chain.get(b1.header.prev_hash)
    detail = refusal(lambda: chain.add(mine(fed, chain, genesis, decryption=good)), Reason.BAD_DECRYPTION)
    assert detail == "the parent has no aggregate to decrypt"


def test_opening_a_parent_needs_the_model_of_its_own_parent(opened_round):
    fed, chain, b1, good = opened_round
    raw = mine(fed, chain, b1, decryption=good)
    view = Forgetful(chain, b1.header.prev_hash)  # a node restored from a snapshot above genesis
    detail = refusal(lambda: validate_block(raw, task=fed.task, chain=view, now_ms=now_ms()), Reason.UNKNOWN_PARENT)
    assert detail == "the grandparent's model is not known"
