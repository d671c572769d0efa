"""Update.parse at its edges: every field's boundary accepted on one side and refused on the other,
each refusal with its reason code and a detail that says which rule (and never the peer's value
unbounded)."""

import hashlib
import json
import pathlib

import numpy as np
import pytest
from conftest import make_federation

from edge_sdk.chain.rules import validate_genesis
from edge_sdk.clock import now_ms
from edge_sdk.protocol import envelope
from edge_sdk.protocol.block import Update, make_update
from edge_sdk.protocol.cert import issue_certificate
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.task import MAX_SAMPLES

DROP = object()


def resigned(fed, raw: bytes, device: int = 0, **fields) -> bytes:
    """The update's body with `fields` changed (DROP removes one), signed again by its device."""
    body = dict(envelope.open_envelope(raw).body)
    for key, value in fields.items():
        body.pop(key) if value is DROP else body.__setitem__(key, value)
    return envelope.sign(fed.devices[device], "update", body)


def refusal(raw: bytes, task) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        Update.parse(raw, task)
    return info.value


def with_cert(fed, *, quota: int = 10_000, expires_ms: int | None = None) -> None:
    expires = now_ms() + 3_600_000 if expires_ms is None else expires_ms
    fed.certs[0] = issue_certificate(fed.coordinator, fed.task, fed.devices[0].public, quota=quota, expires_ms=expires)


def test_an_update_parses_to_exactly_what_its_device_signed(fed):
    base = bytes(range(32))
    delta = fed.delta(3)
    raw = make_update(fed.devices[0], fed.task, fed.certs[0], base, 77, delta, 123_456)
    update = Update.parse(raw, fed.task)
    assert (update.task_id, update.base, update.samples, update.timestamp_ms) == (fed.task.id, base, 77, 123_456)
    assert update.device == fed.devices[0].public.sign_pk == update.cert.device
    assert update.digest == hashlib.sha256(raw).digest() and update.ciphertexts is None
    assert set(update.delta) == set(delta) and all(np.array_equal(update.delta[k], delta[k]) for k in delta)
    assert all(update.delta[k].dtype == np.float32 for k in delta)


def test_make_update_sends_float32_whatever_the_caller_passes(fed):
    wide = {k: v.astype(np.float64) + 1e-9 for k, v in fed.delta(1).items()}
    update = Update.parse(fed.update(0, bytes(32), delta=wide), fed.task)
    assert all(np.array_equal(update.delta[k], wide[k].astype(np.float32)) for k in wide)
    assert envelope.open_envelope(update.envelope.raw).body["delta"]["W"]["dtype"] == "f4"


@pytest.mark.parametrize("change", [{"ts": DROP}, {"extra": 1}, {"delta": DROP, "enc": []}])
def test_an_update_body_must_have_exactly_its_fields(fed, change):
    err = refusal(resigned(fed, fed.update(0, bytes(32)), **change), fed.task)
    assert err.reason is Reason.BAD_BODY
    assert err.detail == "update body must have exactly ['base', 'cert', 'delta', 'samples', 'task', 'ts']"


def test_an_update_body_that_is_not_a_map_is_bad_body(fed):
    err = refusal(envelope.sign(fed.devices[0], "update", [1, 2]), fed.task)
    assert err.reason is Reason.BAD_BODY and err.detail.startswith("update body must have exactly")


def test_an_update_for_another_task_is_wrong_task(fed):
    err = refusal(resigned(fed, fed.update(0, bytes(32)), task=bytes(32)), fed.task)
    assert (err.reason, err.detail) == (Reason.WRONG_TASK, "update is for another task")


@pytest.mark.parametrize("base", [bytes(31), bytes(33), "ab" * 16, None], ids=["31", "33", "text", "none"])
def test_the_base_must_be_a_32_byte_hash(fed, base):
    err = refusal(resigned(fed, fed.update(0, bytes(32)), base=base), fed.task)
    assert (err.reason, err.detail) == (Reason.BAD_BODY, "base must be a 32-byte block hash")


@pytest.mark.parametrize("samples", [1, MAX_SAMPLES])
def test_samples_at_both_ends_of_the_range_are_accepted(samples):
    fed = make_federation(quota=MAX_SAMPLES)
    assert Update.parse(fed.update(0, bytes(32), samples=samples), fed.task).samples == samples


@pytest.mark.parametrize("samples", [0, -1, MAX_SAMPLES + 1, True, "5", 2.0])
def test_samples_outside_the_range_or_not_an_integer_are_refused(samples):
    fed = make_federation(quota=MAX_SAMPLES)
    err = refusal(resigned(fed, fed.update(0, bytes(32)), samples=samples), fed.task)
    assert (err.reason, err.detail) == (Reason.BAD_SAMPLE_COUNT, f"samples must be in [1, {MAX_SAMPLES}]")


def test_time_zero_is_a_valid_update_time(fed):
    assert Update.parse(fed.update(0, bytes(32), ts=0), fed.task).timestamp_ms == 0


@pytest.mark.parametrize("ts", [-1, True, 1.5, None])
def test_a_negative_or_non_integer_time_is_bad_body(fed, ts):
    err = refusal(resigned(fed, fed.update(0, bytes(32)), ts=ts), fed.task)
    assert (err.reason, err.detail) == (Reason.BAD_BODY, "ts must be a non-negative integer")


@pytest.mark.parametrize("cert", ["certificate", None, 5])
def test_a_certificate_that_is_not_bytes_is_bad_cert(fed, cert):
    err = refusal(resigned(fed, fed.update(0, bytes(32)), cert=cert), fed.task)
    assert (err.reason, err.detail) == (Reason.BAD_CERT, "the update's certificate is not its signer's")


def test_another_devices_certificate_is_bad_cert(fed):
    err = refusal(resigned(fed, fed.update(0, bytes(32)), cert=fed.certs[1]), fed.task)
    assert (err.reason, err.detail) == (Reason.BAD_CERT, "the update's certificate is not its signer's")


def test_samples_equal_to_the_quota_pass_one_more_is_over_quota(fed):
    with_cert(fed, quota=100)
    assert Update.parse(fed.update(0, bytes(32), samples=100), fed.task).cert.quota == 100
    err = refusal(fed.update(0, bytes(32), samples=101), fed.task)
    assert (err.reason, err.detail) == (Reason.OVER_QUOTA, "101 samples > quota 100")


def test_an_update_made_at_the_certificates_expiry_passes_one_ms_later_is_expired(fed):
    expires = now_ms() + 10_000
    with_cert(fed, expires_ms=expires)
    assert Update.parse(fed.update(0, bytes(32), ts=expires), fed.task).timestamp_ms == expires
    err = refusal(fed.update(0, bytes(32), ts=expires + 1), fed.task)
    assert (err.reason, err.detail) == (Reason.CERT_EXPIRED, "the certificate expired before the update was made")


def test_an_update_larger_than_the_tasks_limit_is_too_large():
    fed = make_federation(max_update_bytes=512, max_block_bytes=1024)
    raw = fed.update(0, bytes(32))
    assert len(raw) > 512
    err = refusal(raw, fed.task)
    assert (err.reason, err.detail) == (Reason.TOO_LARGE, f"{len(raw)} > 512 bytes")


def test_a_paillier_update_parses_to_its_ciphertexts_and_fields():
    vectors = pathlib.Path(__file__).resolve().parents[1] / "vectors" / "protocol.json"
    paillier = json.loads(vectors.read_text())["paillier"]
    task = validate_genesis(bytes.fromhex(paillier["chain"]["genesis"]))[1]
    raw = bytes.fromhex(paillier["updates"][1]["update"])
    body = envelope.open_envelope(raw).body
    update = Update.parse(raw, task)
    assert (update.task_id, update.base, update.timestamp_ms) == (task.id, body["base"], body["ts"])
    assert update.samples == paillier["updates"][1]["samples"] and update.delta is None
    assert update.cert.device == update.device == envelope.open_envelope(raw).signer
    assert update.ciphertexts == [int.from_bytes(c, "big") for c in body["enc"]]
