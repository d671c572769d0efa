"""Device certificates: what a parsed certificate holds, and each way a forged or malformed one is
refused (always reason bad_cert, whatever failed underneath)."""

import pytest
from conftest import make_federation

from edge_sdk.protocol import envelope
from edge_sdk.protocol.cert import MAX_CERT_BYTES, Certificate, issue_certificate
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.identity import node_id

FED = make_federation(devices=1)
DEVICE = FED.devices[0].public


def refused(raw: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as err:
        Certificate.parse(raw, FED.task)
    assert err.value.reason is Reason.BAD_CERT and err.value.detail  # the reason code, and a line for the log
    return err.value


def body(**over):
    value = {
        "task": FED.task.id,
        "device": DEVICE.sign_pk,
        "box_pk": DEVICE.box_pk,
        "quota": 100,
        "expires_ms": 5000,
        "name": "pi-7",
    }
    value.update(over)
    return value


def signed(value, msg_type="cert") -> bytes:
    return envelope.sign(FED.coordinator, msg_type, value)


def test_a_certificate_parses_into_every_field():
    raw = issue_certificate(FED.coordinator, FED.task, DEVICE, quota=100, expires_ms=5000, name="pi-7")
    cert = Certificate.parse(raw, FED.task)
    assert (cert.task_id, cert.device, cert.box_pk) == (FED.task.id, DEVICE.sign_pk, DEVICE.box_pk)
    assert (cert.quota, cert.expires_ms, cert.name) == (100, 5000, "pi-7")
    assert cert.envelope.raw == raw and cert.envelope.type == "cert"
    assert cert.device_id == node_id(DEVICE.sign_pk)
    assert envelope.open_envelope(raw).body == body()


def test_a_certificate_without_a_name_has_an_empty_name():
    raw = issue_certificate(FED.coordinator, FED.task, DEVICE, quota=1, expires_ms=2)
    assert Certificate.parse(raw, FED.task).name == ""


def test_zero_quota_and_expiry_and_a_64_character_name_are_valid():
    cert = Certificate.parse(signed(body(quota=0, expires_ms=0, name="n" * 64)), FED.task)
    assert (cert.quota, cert.expires_ms, cert.name) == (0, 0, "n" * 64)


def test_a_certificate_signed_by_anyone_else_is_refused():
    refused(issue_certificate(FED.miner, FED.task, DEVICE, quota=1, expires_ms=2))


def test_another_message_type_with_a_certificate_body_is_refused():
    assert "wrong_type" in refused(signed(body(), msg_type="alert")).detail


def test_a_certificate_over_4096_bytes_is_refused_before_it_is_decoded():
    assert "too_large" in refused(b"\x00" * (MAX_CERT_BYTES + 1)).detail


def test_a_certificate_for_another_task_is_refused():
    refused(signed(body(task=bytes(32))))


@pytest.mark.parametrize(
    "value",
    [["task"], {k: v for k, v in body().items() if k != "name"}, body(extra=1)],
)
def test_a_body_without_exactly_the_six_fields_is_refused(value):
    refused(signed(value))


@pytest.mark.parametrize("field", ["device", "box_pk"])
@pytest.mark.parametrize("key", [bytes(31), bytes(33), "k" * 32, None])
def test_keys_must_be_32_bytes(field, key):
    refused(signed(body(**{field: key})))


@pytest.mark.parametrize("field", ["quota", "expires_ms"])
@pytest.mark.parametrize("number", [-1, True, 1.5, "1", None])
def test_quota_and_expiry_must_be_non_negative_integers(field, number):
    refused(signed(body(**{field: number})))


@pytest.mark.parametrize("name", ["n" * 65, 5, b"name", None])
def test_the_name_must_be_text_of_at_most_64_characters(name):
    refused(signed(body(name=name)))
