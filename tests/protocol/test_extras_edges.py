"""A block's extras and the evidence they carry: the wire form round-trips field for field, the
bounds hold on both sides, and every malformed shape is refused with its reason code."""

import hashlib

import pytest
from conftest import make_federation

from edge_sdk.protocol import codec, envelope
from edge_sdk.protocol.block import Block
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.extras import EXTRAS_DOMAIN, MAX_EVIDENCE, MAX_SHARES, Evidence, Extras

DOUBLE = Evidence("double-update", (b"first", b"second"))
INVALID = Evidence("invalid-block", (b"block",))


def refused(reason: Reason, parse, *args) -> ProtocolError:
    with pytest.raises(ProtocolError) as err:
        parse(*args)
    assert err.value.reason is reason and err.value.detail  # the reason code, and a line for the log
    return err.value


def wire(**over):
    value = {"excluded": [], "evidence": [], "revocations": None, "decryption": []}
    value.update(over)
    return value


def test_evidence_round_trips_through_its_wire_form():
    for evidence in (DOUBLE, INVALID):
        value = evidence.to_wire()
        assert value == {"kind": evidence.kind, "signed": list(evidence.signed)}
        assert Evidence.from_wire(codec.decode(codec.encode(value))) == evidence


def test_evidence_digest_is_sha256_of_its_canonical_wire_form():
    assert DOUBLE.digest == hashlib.sha256(codec.encode(DOUBLE.to_wire())).digest()
    assert DOUBLE.digest != INVALID.digest


@pytest.mark.parametrize(
    "value",
    [
        [],
        "double-update",
        {"kind": "double-update"},
        {"kind": "forgery", "signed": [b"a"]},
        {"kind": "invalid-block", "signed": [b"a"], "note": "x"},
        {"kind": ["invalid-block"], "signed": [b"a"]},
    ],
)
def test_evidence_must_be_exactly_a_known_kind_and_its_messages(value):
    refused(Reason.BAD_EVIDENCE, Evidence.from_wire, value)


@pytest.mark.parametrize(
    "kind, signed",
    [
        ("double-update", [b"a"]),
        ("double-update", [b"a", b"b", b"c"]),
        ("invalid-block", []),
        ("invalid-block", [b"a", b"b"]),
        ("double-update", [b"a", "b"]),
        ("invalid-block", [None]),
        ("invalid-block", b"a"),
        ("double-update", {"a": b"1", "b": b"2"}),
    ],
)
def test_evidence_holds_exactly_its_kinds_number_of_byte_strings(kind, signed):
    refused(Reason.BAD_EVIDENCE, Evidence.from_wire, {"kind": kind, "signed": signed})


def test_extras_round_trip_field_for_field():
    extras = Extras((0, 2), (DOUBLE, INVALID), b"revocations", ({"share": 1},))
    value = extras.to_wire()
    assert value == {
        "excluded": [0, 2],
        "evidence": [DOUBLE.to_wire(), INVALID.to_wire()],
        "revocations": b"revocations",
        "decryption": [{"share": 1}],
    }
    assert Extras.from_wire(codec.decode(codec.encode(value)), 3) == extras


def test_the_leaf_commits_to_every_field():
    base = Extras()
    assert base.leaf == hashlib.sha256(EXTRAS_DOMAIN + codec.encode(base.to_wire())).digest()
    others = [Extras((0,)), Extras(evidence=(INVALID,)), Extras(revocations=b""), Extras(decryption=(1,))]
    assert len({base.leaf, *(e.leaf for e in others)}) == 5


def test_empty_extras_are_the_default():
    assert Extras.from_wire(wire(), 0) == Extras()


@pytest.mark.parametrize("value", [[], wire(extra=1), {k: v for k, v in wire().items() if k != "decryption"}])
def test_extras_must_have_exactly_the_four_fields(value):
    err = refused(Reason.BAD_EXTRAS, Extras.from_wire, value, 4)
    assert err.detail == "extras must have exactly excluded, evidence, revocations, decryption"


def test_excluded_indices_span_the_blocks_updates_from_0_to_n_minus_1():
    assert Extras.from_wire(wire(excluded=[0, 3]), 4).excluded == (0, 3)
    for excluded in ([4], [-1], [True], [1.0], ["1"], 1, {"0": 1}):
        refused(Reason.BAD_EXTRAS, Extras.from_wire, wire(excluded=excluded), 4)


@pytest.mark.parametrize("excluded", [[1, 1], [2, 1], [0, 3, 2]])
def test_excluded_indices_strictly_increase(excluded):
    refused(Reason.BAD_EXTRAS, Extras.from_wire, wire(excluded=excluded), 4)


def test_at_most_16_evidence_items():
    assert len(Extras.from_wire(wire(evidence=[INVALID.to_wire()] * MAX_EVIDENCE), 0).evidence) == MAX_EVIDENCE
    refused(Reason.BAD_EXTRAS, Extras.from_wire, wire(evidence=[INVALID.to_wire()] * (MAX_EVIDENCE + 1)), 0)
    for evidence in (5, {}, INVALID.to_wire()):
        refused(Reason.BAD_EXTRAS, Extras.from_wire, wire(evidence=evidence), 0)


def test_bad_evidence_inside_extras_is_bad_evidence():
    refused(Reason.BAD_EVIDENCE, Extras.from_wire, wire(evidence=[{"kind": "x", "signed": []}]), 0)


def test_at_most_64_decryption_shares():
    assert len(Extras.from_wire(wire(decryption=[1] * MAX_SHARES), 0).decryption) == MAX_SHARES
    refused(Reason.BAD_EXTRAS, Extras.from_wire, wire(decryption=[1] * (MAX_SHARES + 1)), 0)
    for decryption in (5, {}, None, b"shares"):
        refused(Reason.BAD_EXTRAS, Extras.from_wire, wire(decryption=decryption), 0)


def test_revocations_are_a_byte_string_or_null():
    assert Extras.from_wire(wire(revocations=b"list"), 0).revocations == b"list"
    assert Extras.from_wire(wire(revocations=None), 0).revocations is None
    for revocations in ("list", 0, [b"list"]):
        refused(Reason.BAD_EXTRAS, Extras.from_wire, wire(revocations=revocations), 0)


def test_a_block_whose_evidence_kind_is_not_text_is_refused_as_bad_evidence():
    """Found here: an unhashable kind (a list or a map) raised TypeError out of Block.parse."""
    fed = make_federation()
    body = dict(envelope.open_envelope(fed.block(fed.chain())).body)
    for kind in ([], {}, ["invalid-block"]):
        body["extras"] = wire(evidence=[{"kind": kind, "signed": [b"block"]}])
        raw = envelope.sign(fed.miner, "block", body)
        refused(Reason.BAD_EVIDENCE, Block.parse, raw, 1 << 20)
