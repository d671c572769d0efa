import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_sdk.protocol import codec, envelope
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.identity import Identity

ALICE = Identity.from_seed(b"alice")
BOB = Identity.from_seed(b"bob")
cbor_ints = st.integers(-(2**64), 2**64 - 1)  # CBOR major types 0 and 1; larger ones would need a tag
bodies = st.dictionaries(st.text(max_size=6), cbor_ints | st.binary(max_size=40) | st.text(max_size=10), max_size=5)


@given(st.sampled_from(sorted(envelope.MESSAGE_TYPES)), bodies)
def test_sign_open_round_trip(msg_type, body):
    wire = envelope.sign(ALICE, msg_type, body)
    env = envelope.open_envelope(wire, expect=msg_type)
    assert (env.type, env.body, env.signer, env.raw) == (msg_type, body, ALICE.public.sign_pk, wire)


@given(bodies, st.data())
@settings(max_examples=300)
def test_any_changed_byte_is_rejected(body, data):
    wire = envelope.sign(ALICE, "update", body)
    index = data.draw(st.integers(0, len(wire) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = wire[:index] + bytes([wire[index] ^ flip]) + wire[index + 1 :]
    with pytest.raises(ProtocolError):
        envelope.open_envelope(tampered)


@given(st.binary(max_size=512))
@settings(max_examples=1000)
def test_garbage_never_crashes(data):
    with pytest.raises(ProtocolError):
        envelope.open_envelope(data)


def _raw(version=envelope.VERSION, msg_type="update", signer=None, body=None, signature=None, signer_id=ALICE):
    signer = signer_id.public.sign_pk if signer is None else signer
    body = {"x": 1} if body is None else body
    if signature is None:
        signature = signer_id.sign(envelope.signing_bytes(version, msg_type, signer, body))
    return codec.encode([version, msg_type, signer, body, signature])


@pytest.mark.parametrize(
    "raw, reason",
    [
        (_raw(version=2), Reason.BAD_VERSION),
        (_raw(msg_type="launch"), Reason.UNKNOWN_TYPE),
        (_raw(signer=BOB.public.sign_pk), Reason.BAD_SIGNATURE),
        (_raw(signer=b"short"), Reason.BAD_ENCODING),
        (_raw(signature=bytes(64)), Reason.BAD_SIGNATURE),
        (codec.encode([1, "update", ALICE.public.sign_pk, {}]), Reason.BAD_ENCODING),
        (codec.encode({"v": 1}), Reason.BAD_ENCODING),
    ],
)
def test_rejections_carry_their_reason(raw, reason):
    with pytest.raises(ProtocolError) as info:
        envelope.open_envelope(raw)
    assert info.value.reason is reason


def test_wrong_type_and_size_limit():
    wire = envelope.sign(ALICE, "block", {"x": b"y" * 100})
    with pytest.raises(ProtocolError) as info:
        envelope.open_envelope(wire, expect="update")
    assert info.value.reason is Reason.WRONG_TYPE
    with pytest.raises(ProtocolError) as info:
        envelope.open_envelope(wire, max_bytes=50)
    assert info.value.reason is Reason.TOO_LARGE


def test_signature_is_domain_separated_by_type():
    """A signature over an update body is not valid for the same body as another type."""
    wire = envelope.sign(ALICE, "update", {"x": 1})
    version, _, signer, body, signature = codec.decode(wire)
    relabelled = codec.encode([version, "block", signer, body, signature])
    with pytest.raises(ProtocolError) as info:
        envelope.open_envelope(relabelled)
    assert info.value.reason is Reason.BAD_SIGNATURE


@given(st.binary(max_size=2000))
@settings(max_examples=50)
def test_seal_round_trip_only_for_the_recipient(message):
    sealed = envelope.seal(BOB.public.box_pk, message)
    assert len(sealed) == len(message) + envelope.SEAL_OVERHEAD
    assert envelope.unseal(BOB.box_key, sealed) == message
    with pytest.raises(ProtocolError) as info:
        envelope.unseal(ALICE.box_key, sealed)
    assert info.value.reason is Reason.BAD_SEAL


@given(st.binary(min_size=1, max_size=200), st.data())
@settings(max_examples=100)
def test_tampered_or_garbage_seal_is_rejected(message, data):
    sealed = envelope.seal(BOB.public.box_pk, message)
    index = data.draw(st.integers(0, len(sealed) - 1))
    tampered = sealed[:index] + bytes([sealed[index] ^ 1]) + sealed[index + 1 :]
    with pytest.raises(ProtocolError):
        envelope.unseal(BOB.box_key, tampered)
    with pytest.raises(ProtocolError):
        envelope.unseal(BOB.box_key, data.draw(st.binary(max_size=100)))


@given(st.binary(max_size=64), st.sampled_from(sorted(envelope.MESSAGE_TYPES)))
def test_the_signed_bytes_are_the_envelope_less_its_signature(body, msg_type):
    """open_envelope verifies over the input's own bytes; they must equal what `sign` signed."""
    identity = Identity.from_seed(b"signed-bytes")
    raw = envelope.sign(identity, msg_type, {"x": body})
    expected = envelope.signing_bytes(envelope.VERSION, msg_type, identity.public.sign_pk, {"x": body})
    assert envelope.DOMAIN + envelope.ARRAY_OF_4 + raw[1 : len(raw) - envelope.SIGNATURE_ITEM_BYTES] == expected
    assert envelope.open_envelope(raw).body == {"x": body}


def test_a_version_that_only_equals_1_is_refused_as_bad_version():
    """Found writing PROTOCOL.md: 1.0 (a CBOR float) passed the version check; another
    implementation would refuse it, and the same message would have two encodings."""
    identity = Identity.from_seed(b"version-float")
    for version in (1.0, True, "1"):
        signed = envelope.signing_bytes(version, "block", identity.public.sign_pk, {})
        raw = codec.encode([version, "block", identity.public.sign_pk, {}, identity.sign(signed)])
        with pytest.raises(ProtocolError) as caught:
            envelope.open_envelope(raw)
        assert caught.value.reason is Reason.BAD_VERSION
