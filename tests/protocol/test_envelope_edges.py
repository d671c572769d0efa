"""The envelope at its edges: every field of an opened envelope, the size limits exactly at the
bound, inputs that are not bytes, and malformed signer and signature items."""

import hashlib

import pytest

from edge_sdk.protocol import codec, envelope
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.identity import Identity

ALICE = Identity.from_seed(b"envelope-edges")
WIRE = envelope.sign(ALICE, "alert", {"x": b"payload"})


def refused(reason: Reason, call, *args, **kwargs) -> ProtocolError:
    with pytest.raises(ProtocolError) as err:
        call(*args, **kwargs)
    assert err.value.reason is reason and err.value.detail  # the reason code, and a line for the log
    return err.value


def test_an_opened_envelope_holds_every_field():
    env = envelope.open_envelope(WIRE)
    assert (env.version, env.type, env.signer, env.body) == (1, "alert", ALICE.public.sign_pk, {"x": b"payload"})
    assert env.signature == codec.decode(WIRE)[4]
    assert env.raw == WIRE and type(env.raw) is bytes
    assert env.digest == hashlib.sha256(WIRE).digest()


def test_a_bytearray_opens_like_bytes():
    env = envelope.open_envelope(bytearray(WIRE))
    assert env.raw == WIRE and type(env.raw) is bytes


@pytest.mark.parametrize("data", [WIRE.hex(), None, memoryview(WIRE), [WIRE]])
def test_anything_but_bytes_is_bad_encoding(data):
    refused(Reason.BAD_ENCODING, envelope.open_envelope, data)


def test_the_size_limit_is_inclusive():
    assert envelope.open_envelope(WIRE, max_bytes=len(WIRE)).raw == WIRE
    refused(Reason.TOO_LARGE, envelope.open_envelope, WIRE, max_bytes=len(WIRE) - 1)


def test_the_expected_type_is_accepted():
    assert envelope.open_envelope(WIRE, expect="alert").type == "alert"


def test_an_array_of_6_is_bad_encoding():
    refused(Reason.BAD_ENCODING, envelope.open_envelope, codec.encode([1, "alert", bytes(32), {}, bytes(64), 0]))


def _raw(signer, signature) -> bytes:
    return codec.encode([1, "alert", signer, {}, signature])


@pytest.mark.parametrize("signer", [bytes(31), bytes(33), "k" * 32, 5])
def test_a_signer_that_is_not_32_bytes_is_bad_encoding(signer):
    refused(Reason.BAD_ENCODING, envelope.open_envelope, _raw(signer, bytes(64)))


@pytest.mark.parametrize("signature", [bytes(63), bytes(65), "s" * 64, None])
def test_a_signature_that_is_not_64_bytes_is_bad_encoding(signature):
    refused(Reason.BAD_ENCODING, envelope.open_envelope, _raw(ALICE.public.sign_pk, signature))


def test_signing_an_unknown_type_is_refused():
    with pytest.raises(ValueError, match="unknown message type"):
        envelope.sign(ALICE, "launch", {})


def test_unseal_limit_counts_the_plaintext():
    message = b"m" * 100
    sealed = envelope.seal(ALICE.public.box_pk, message)
    assert envelope.unseal(ALICE.box_key, sealed, max_bytes=100) == message
    assert envelope.unseal(ALICE.box_key, bytearray(sealed), max_bytes=100) == message
    refused(Reason.TOO_LARGE, envelope.unseal, ALICE.box_key, sealed, max_bytes=99)


@pytest.mark.parametrize("data", ["sealed", None, 5])
def test_unseal_of_anything_but_bytes_is_bad_seal(data):
    refused(Reason.BAD_SEAL, envelope.unseal, ALICE.box_key, data)


def test_a_truncated_seal_is_bad_seal():
    err = refused(Reason.BAD_SEAL, envelope.unseal, ALICE.box_key, envelope.seal(ALICE.public.box_pk, b"m")[:-1])
    assert err.detail == "cannot open sealed box"


def test_each_header_refusal_says_what_it_saw():
    """What a peer is told back: the version seen, the type seen, and that the signature failed."""
    assert refused(Reason.BAD_VERSION, envelope.open_envelope, _raw_version(2)).detail == "version 2, expected 1"
    unknown = codec.encode([1, "gossipy", ALICE.public.sign_pk, {}, bytes(64)])
    assert refused(Reason.UNKNOWN_TYPE, envelope.open_envelope, unknown).detail == "'gossipy'"
    forged = codec.encode([1, "alert", ALICE.public.sign_pk, {"x": b"payload"}, bytes(64)])
    assert refused(Reason.BAD_SIGNATURE, envelope.open_envelope, forged).detail == "signature does not verify"


def _raw_version(version) -> bytes:
    return codec.encode([version, "alert", ALICE.public.sign_pk, {}, bytes(64)])
