"""The coordinator's revocation list: what parses (and into what), and each way a hostile list is
refused, always as a ProtocolError with its reason code."""

import pytest
from conftest import make_federation

from edge_sdk.protocol import envelope
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.revocations import MAX_REVOCATIONS_BYTES, make_revocations, parse_revocations

FED = make_federation(devices=2)
KEYS = [d.public.sign_pk for d in FED.devices]


def refused(raw: bytes, reason: Reason = Reason.BAD_BODY) -> ProtocolError:
    with pytest.raises(ProtocolError) as err:
        parse_revocations(raw, FED.task)
    assert err.value.reason is reason and err.value.detail  # the reason code, and a line for the log
    return err.value


def signed(body, *, signer=None, msg_type="revocations") -> bytes:
    return envelope.sign(signer or FED.coordinator, msg_type, body)


def body(**over):
    value = {"task": FED.task.id, "devices": KEYS, "ts": 5}
    value.update(over)
    return value


def test_a_list_parses_into_its_devices_time_and_bytes():
    raw = make_revocations(FED.coordinator, FED.task, KEYS, 1234)
    parsed = parse_revocations(raw, FED.task)
    assert parsed.devices == frozenset(KEYS)
    assert parsed.ts == 1234
    assert parsed.raw == raw
    assert envelope.open_envelope(raw).body == {"task": FED.task.id, "devices": KEYS, "ts": 1234}


def test_an_empty_list_at_time_0_is_valid():
    parsed = parse_revocations(make_revocations(FED.coordinator, FED.task, [], 0), FED.task)
    assert (parsed.devices, parsed.ts) == (frozenset(), 0)


def test_only_the_tasks_coordinator_may_revoke():
    refused(make_revocations(FED.miner, FED.task, KEYS, 1))


def test_another_message_type_with_the_same_body_is_refused():
    refused(signed(body(), msg_type="alert"), Reason.WRONG_TYPE)


def test_a_list_over_1_mib_is_refused_for_its_size():
    many = [i.to_bytes(32, "big") for i in range(MAX_REVOCATIONS_BYTES // 34 + 1)]
    raw = make_revocations(FED.coordinator, FED.task, many, 1)
    assert len(raw) > MAX_REVOCATIONS_BYTES
    refused(raw, Reason.TOO_LARGE)


@pytest.mark.parametrize(
    "value",
    [
        [1, 2, 3],
        {"task": FED.task.id, "devices": KEYS},
        body(extra=1),
        body(task=bytes(32)),
    ],
)
def test_a_body_that_is_not_exactly_task_devices_ts_is_refused(value):
    refused(signed(value))


@pytest.mark.parametrize("devices", [5, {}, [bytes(31)], [b"x" * 33], ["k" * 32], [KEYS[0], None]])
def test_devices_must_be_a_list_of_32_byte_keys(devices):
    refused(signed(body(devices=devices)))


@pytest.mark.parametrize("ts", [-1, True, 1.5, "5", None])
def test_ts_must_be_a_non_negative_integer(ts):
    refused(signed(body(ts=ts)))
