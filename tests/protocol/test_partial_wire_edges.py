"""Edges of a partial decryption on the wire (protocol/decryption.py): its exact encoding, each
shape check of `PartialDecryption.from_wire` at its boundary, and `parse_partial`'s checks in
order (task, size, type, signer, body, block, share), each with its reason code."""

import dataclasses

import pytest
from conftest import make_federation
from paillier_vector_key import KEY, N2, PACKING, PARTIALS, PRIME_P, P

from edge_sdk.protocol import codec, envelope
from edge_sdk.protocol.decryption import (
    DecryptionRules,
    PartialDecryption,
    PartialMessage,
    Proof,
    ThresholdKey,
    make_partial,
    max_partial_bytes,
    parse_partial,
)
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.identity import Identity
from edge_sdk.protocol.task import Privacy

WIRE = [codec.decode(bytes.fromhex(v["wire"])) for v in P["partials"]]  # shares 1, 2, 3
ITEMS = [PartialDecryption.from_wire(w, KEY, 2) for w in WIRE]
MAX_RESPONSE = (KEY.response_bits + 7) // 8  # 177 bytes for a 512-bit n and three holders


def refusal(call) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        call()
    return info.value


def test_a_partial_is_share_fixed_width_partials_a_32_byte_challenge_and_a_minimal_response():
    item = PartialDecryption(3, (1, N2 - 1), Proof(1, 1 << 15))
    assert item.to_wire(KEY) == {
        "share": 3,
        "partials": [bytes(127) + b"\x01", (N2 - 1).to_bytes(128, "big")],
        "proof": [bytes(31) + b"\x01", b"\x80\x00"],
    }
    assert PartialDecryption.from_wire(item.to_wire(KEY), KEY, 2) == item


def test_the_vector_partials_read_back_share_by_share():
    assert [i.share for i in ITEMS] == [1, 2, 3]
    assert [list(i.partials) for i in ITEMS] == [PARTIALS[1], PARTIALS[2], PARTIALS[3]]
    assert [i.to_wire(KEY) for i in ITEMS] == WIRE


def bad_partial(**change):
    return refusal(lambda: PartialDecryption.from_wire({**WIRE[0], **change}, KEY, 2))


@pytest.mark.parametrize("share", [0, 4, True, "1", None])
def test_a_share_outside_1_to_m_is_a_bad_decryption(share):
    error = bad_partial(share=share)
    assert error.reason is Reason.BAD_DECRYPTION and error.detail == "partial decryption: share must be in [1, 3]"


@pytest.mark.parametrize("partials", [WIRE[0]["partials"][:1], WIRE[0]["partials"] * 2, tuple(WIRE[0]["partials"])])
def test_other_than_one_partial_per_ciphertext_is_a_bad_decryption(partials):
    error = bad_partial(partials=partials)
    assert error.reason is Reason.BAD_DECRYPTION and error.detail == "partial decryption: expected 2 partials"


@pytest.mark.parametrize(
    "partial, detail",
    [
        (bytes(126) + b"\x01", "elements are 128 bytes"),
        (7, "elements are 128 bytes"),
        (bytes(128), "element outside Z*_(n^2)"),
        (N2.to_bytes(128, "big"), "element outside Z*_(n^2)"),
        ((N2 + 1).to_bytes(128, "big"), "element outside Z*_(n^2)"),
        ((PRIME_P * 2).to_bytes(128, "big"), "element outside Z*_(n^2)"),
    ],
    ids=["127 bytes", "int", "0", "n^2", "n^2 + 1", "multiple of p"],
)
def test_a_partial_outside_z_star_n_squared_is_a_bad_decryption(partial, detail):
    error = bad_partial(partials=[WIRE[0]["partials"][0], partial])
    assert error.reason is Reason.BAD_DECRYPTION and error.detail == f"partial decryption: {detail}"


def test_one_is_a_partial_like_any_other_element_of_z_star():
    item = PartialDecryption.from_wire({**WIRE[0], "partials": [bytes(127) + b"\x01"] * 2}, KEY, 2)
    assert item.partials == (1, 1)


CHALLENGE, RESPONSE = WIRE[0]["proof"]


@pytest.mark.parametrize(
    "proof",
    [
        {CHALLENGE: 0, RESPONSE: 0},
        [CHALLENGE],
        [CHALLENGE, RESPONSE, RESPONSE],
        [CHALLENGE, 5],
        [int.from_bytes(CHALLENGE, "big"), RESPONSE],
        [CHALLENGE[1:], RESPONSE],
        [CHALLENGE + b"\x00", RESPONSE],
        [CHALLENGE, b"\x01" * (MAX_RESPONSE + 1)],
    ],
    ids=["a map", "1 item", "3 items", "int response", "int challenge", "31-byte challenge", "33 bytes", "long"],
)
def test_a_proof_other_than_a_32_byte_challenge_and_a_bounded_response_is_a_bad_decryption(proof):
    error = bad_partial(proof=proof)
    assert error.reason is Reason.BAD_DECRYPTION
    assert error.detail == "partial decryption: proof must be [32-byte challenge, response]"


def test_a_response_of_the_largest_length_is_read():
    item = PartialDecryption.from_wire({**WIRE[0], "proof": [CHALLENGE, b"\xff" * MAX_RESPONSE]}, KEY, 2)
    assert item.proof == Proof(int.from_bytes(CHALLENGE, "big"), (1 << (8 * MAX_RESPONSE)) - 1)


def test_the_response_bound_is_whole_bytes_when_response_bits_is_a_multiple_of_8():
    """A 514-bit n with three holders: R + 1 = 1416 bits, exactly 177 bytes; 178 are refused."""
    key = ThresholdKey((1 << 513) + 1, 2, 4, (4, 4, 4))
    assert key.response_bits == 1416
    value = {"share": 1, "partials": [bytes(128) + b"\x01"], "proof": [CHALLENGE, b"\xff" * 177]}
    assert PartialDecryption.from_wire(value, key, 1).proof.response == (1 << 1416) - 1
    longer = {**value, "proof": [CHALLENGE, b"\x01" * 178]}
    assert refusal(lambda: PartialDecryption.from_wire(longer, key, 1)).reason is Reason.BAD_DECRYPTION


@pytest.mark.parametrize("value", [[WIRE[0]], {**WIRE[0], "extra": 0}, {"share": 1, "partials": []}])
def test_a_partial_that_is_not_exactly_share_partials_proof_is_a_bad_decryption(value):
    error = refusal(lambda: PartialDecryption.from_wire(value, KEY, 2))
    assert error.reason is Reason.BAD_DECRYPTION
    assert error.detail == "partial decryption must have exactly share, partials, proof"


# --- parse_partial: a signed partial of a task whose three miners hold the vector key's shares ---

FED = make_federation(peers=2, max_updates=8)
TASK = dataclasses.replace(FED.task, privacy=Privacy("paillier", packing=PACKING, threshold=DecryptionRules(KEY, 2)))
MINERS = [FED.miner, Identity.from_seed(b"peer-0-0"), Identity.from_seed(b"peer-0-1")]
BLOCK = b"\x0b" * 32


def count_of(block: bytes):
    return 2 if block == BLOCK else None


def test_each_miner_publishes_its_own_share_and_everyone_reads_it():
    for miner, item in zip(MINERS, ITEMS, strict=True):
        assert parse_partial(make_partial(miner, KEY, BLOCK, item), TASK, count_of) == PartialMessage(
            BLOCK, item, miner.public.sign_pk
        )


def test_a_miner_publishing_another_share_is_a_bad_decryption():
    error = refusal(lambda: parse_partial(make_partial(MINERS[0], KEY, BLOCK, ITEMS[1]), TASK, count_of))
    assert error.reason is Reason.BAD_DECRYPTION and error.detail == "a miner may only publish its own share's partials"


def test_a_partial_signed_by_anyone_else_is_a_bad_miner():
    raw = make_partial(Identity.from_seed(b"stranger"), KEY, BLOCK, ITEMS[0])
    error = refusal(lambda: parse_partial(raw, TASK, count_of))
    assert error.reason is Reason.BAD_MINER and error.detail == "partial decryption not signed by a miner of the task"


def test_a_partial_for_a_task_without_threshold_decryption_is_a_bad_body():
    raw = make_partial(MINERS[0], KEY, BLOCK, ITEMS[0])
    error = refusal(lambda: parse_partial(raw, FED.task, count_of))
    assert error.reason is Reason.BAD_BODY and error.detail == "this task has no threshold decryption"


def test_a_partial_of_an_unknown_block_is_an_unknown_parent():
    raw = make_partial(MINERS[0], KEY, b"\x0c" * 32, ITEMS[0])
    error = refusal(lambda: parse_partial(raw, TASK, count_of))
    assert error.reason is Reason.UNKNOWN_PARENT
    assert error.detail == "partial decryption of a block this node does not have"


@pytest.mark.parametrize(
    "body",
    [
        {"block": BLOCK, "decryption": WIRE[0], "extra": 0},
        {"block": BLOCK.hex(), "decryption": WIRE[0]},
        {"block": BLOCK},
        [BLOCK, WIRE[0]],
    ],
    ids=["extra key", "block as text", "no decryption", "a list"],
)
def test_a_partial_body_other_than_block_and_decryption_is_a_bad_body(body):
    raw = envelope.sign(MINERS[0], "partial", body)
    error = refusal(lambda: parse_partial(raw, TASK, count_of))
    assert error.reason is Reason.BAD_BODY and error.detail == "partial must have exactly block, decryption"


def test_another_message_type_is_not_read_as_a_partial():
    raw = envelope.sign(MINERS[0], "alert", {"block": BLOCK, "decryption": WIRE[0]})
    assert refusal(lambda: parse_partial(raw, TASK, count_of)).reason is Reason.WRONG_TYPE


def sized(length: int) -> bytes:
    """A signed partial envelope of exactly `length` bytes (one partial too many, padded)."""
    for pad in range(length):
        decryption = {**WIRE[0], "partials": [*WIRE[0]["partials"], b"\x01" * pad]}
        raw = envelope.sign(MINERS[0], "partial", {"block": BLOCK, "decryption": decryption})
        if len(raw) == length:
            return raw
    raise AssertionError(f"no padding gives {length} bytes")


def test_a_partial_envelope_is_read_up_to_its_size_bound_and_refused_unread_one_byte_above():
    """Two ciphertexts here: an element (plus 3 bytes) per ciphertext, two more for the proof, 1 KiB."""
    bound = max_partial_bytes(TASK)
    assert bound == 1542
    at_bound = refusal(lambda: parse_partial(sized(bound), TASK, count_of))
    assert at_bound.reason is Reason.BAD_DECRYPTION and at_bound.detail == "partial decryption: expected 2 partials"
    assert refusal(lambda: parse_partial(sized(bound + 1), TASK, count_of)).reason is Reason.TOO_LARGE
