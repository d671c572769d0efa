"""Issue 10's attacks on the decoder: each input is what a hostile peer can send before any
signature is checked. The decoder must refuse it with a reason, at a cost linear in its size."""

import tracemalloc

import cbor2
import pytest
from conftest import make_federation

from edge_sdk.protocol import codec, envelope, sync
from edge_sdk.protocol.block import Update
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.task import Task

SIGNER, SIGNATURE = bytes(32), bytes(64)


def refused(data: bytes, expect: str | None = None) -> ProtocolError:
    with pytest.raises(ProtocolError) as err:
        envelope.open_envelope(data, expect=expect)
    return err.value


def test_a_huge_integer_is_refused_and_never_printed():
    """Finding 1: a 5000-digit version used to crash the error message (ValueError from repr)."""
    data = cbor2.dumps([10**5000, "sync_request", SIGNER, {}, SIGNATURE])
    err = refused(data)
    assert err.reason is Reason.BAD_ENCODING and "tag" in err.detail
    assert len(str(err)) < 200
    assert codec.show(10**5000) == "<int>"  # the bounded rendering used in messages
    with pytest.raises(TypeError):
        codec.encode([2**64])  # what the decoder refuses, the encoder does not make


@pytest.mark.parametrize(
    "tagged",
    [
        cbor2.CBORTag(28, [1, 2]),  # value sharing
        cbor2.CBORTag(256, ["a", cbor2.CBORTag(25, 0)]),  # string references
        cbor2.CBORTag(2, b"\x01" * 600),  # bignum
        cbor2.CBORTag(1, 0),  # a plain date: every tag
    ],
)
def test_every_tag_is_refused_before_it_is_expanded(tagged):
    """Finding 2: value-sharing and string-reference tags expanded (CPU, memory) before the signature check."""
    data = cbor2.dumps([1, "sync_request", SIGNER, {"x": tagged}, SIGNATURE])
    assert refused(data).detail == "tags are not allowed"


def test_nested_shared_references_cost_nothing():
    """A 329-byte request of nested value-sharing used to take 8.8 s of CPU: now the first tag ends it."""
    tree: list = []
    for _ in range(20):  # 2^20 leaves once expanded; a few hundred bytes with shared references
        tree = [tree, tree]
    data = cbor2.dumps([1, "sync_request", SIGNER, {"x": tree}, SIGNATURE], value_sharing=True)
    assert len(data) < 400
    assert refused(data).reason is Reason.BAD_ENCODING


def test_many_tiny_items_are_refused_without_building_them():
    """Finding 3: 3.8 MiB of empty arrays cost 298 MB before the signature was checked."""
    count = 4_000_000
    data = b"\x9a" + count.to_bytes(4, "big") + b"\x80" * count
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError) as err:
            codec.decode(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.reason is Reason.BAD_ENCODING and "items" in err.value.detail
    assert peak < 3 * len(data)  # a copy of the input, no objects per item


@pytest.mark.parametrize(
    "data, why",
    [
        (b"\x9f\x01\xff", "indefinite"),
        (b"\x5a\xff\xff\xff\xff", "truncated"),
        (b"\x82\x01", "truncated"),
        (b"\x01\x02", "bytes after the value"),
        (b"\xf7", "only false, true"),  # undefined
        (b"\xf8\x20", "only false, true"),  # another simple value
        (b"\x81" * 20 + b"\x01", "nested too deeply"),
    ],
)
def test_the_scan_refuses_what_the_subset_does_not_allow(data, why):
    with pytest.raises(ProtocolError) as err:
        codec.decode(data)
    assert err.value.reason is Reason.BAD_ENCODING and why in err.value.detail


def test_a_malformed_rejection_from_a_miner_is_a_protocol_error():
    """Finding 4: a signed rejection with a bad body used to escape the device's handler."""
    fed = make_federation()
    for body in ({"task": fed.task.id, "digest": 5, "reason": ["x"] * 100, "tip": b""}, {"task": fed.task.id}):
        raw = envelope.sign(fed.miner, "rejection", body)
        with pytest.raises(ProtocolError) as err:
            sync.parse_reply(raw, fed.task)
        assert err.value.reason is Reason.BAD_BODY
    odd = envelope.sign(
        fed.miner, "rejection", {"task": fed.task.id, "digest": bytes(32), "reason": "x" * 999, "tip": bytes(32)}
    )
    assert sync.parse_reply(odd, fed.task).reason == "unknown"  # not echoed, not a new counter per string


def test_truncated_array_data_is_bad_shape():
    """Finding 9: truncated data was reported as bad_body, not the spec's bad_shape."""
    fed = make_federation()
    chain = fed.chain()
    good = Update.parse(fed.update(0, chain.tip.hash), fed.task)
    body = dict(good.envelope.body)
    delta = {n: dict(a) for n, a in body["delta"].items()}
    delta["W"]["data"] = delta["W"]["data"][:-4]
    body["delta"] = delta
    with pytest.raises(ProtocolError) as err:
        Update.parse(envelope.sign(fed.devices[0], "update", body), fed.task)
    assert err.value.reason is Reason.BAD_SHAPE


@pytest.mark.parametrize("name", ["../../etc/passwd", "a/b", "", ".."])
def test_manifest_file_names_must_be_plain(name):
    """Finding 9: a device opens every model_files name inside its package directory."""
    wire = make_federation().task.to_wire()
    wire["model_files"] = {name: bytes(32)}
    with pytest.raises(ProtocolError) as err:
        Task.from_wire(wire)
    assert err.value.reason is Reason.BAD_BODY


def test_paillier_clip_exp_must_fit_the_fixed_point_budget():
    from edge_sdk.protocol.decryption import DecryptionRules, ThresholdKey
    from edge_sdk.protocol.packing import Packing
    from edge_sdk.protocol.task import Privacy

    fed = make_federation(max_updates=16)
    n = (1 << 2047) + 1
    rules = DecryptionRules(ThresholdKey(n, 1, 4, (16,)), 2)
    for clip_exp, ok in (
        (0, True),
        (fed.task.chain.delta_bits, True),
        (fed.task.chain.delta_bits + 1, False),
        (-25, False),
    ):
        packing = Packing(n, 16, clip_exp, 100, 16)
        wire = fed.task.to_wire()
        wire["privacy"] = Privacy("paillier", packing=packing, threshold=rules).to_wire()
        wire["aggregation"]["weight_cap"] = 0
        if ok:
            assert Task.from_wire(wire).privacy.packing.clip_exp == clip_exp
        else:
            with pytest.raises(ProtocolError):
                Task.from_wire(wire)


def test_a_rejection_reason_of_any_type_is_handled():
    """Fuzzer finding: an unhashable reason (a list) raised TypeError out of parse_rejection."""
    fed = make_federation()
    for reason in ([], {}, 5, None):
        body = {"task": fed.task.id, "digest": bytes(32), "reason": reason, "tip": bytes(32)}
        assert sync.parse_reply(envelope.sign(fed.miner, "rejection", body), fed.task).reason == "unknown"


def test_many_empty_containers_stay_within_a_small_multiple_of_the_input():
    """Fuzzer finding: 65,535 one-byte empty maps cost 74x their input in Python objects."""
    data = b"\x99\xff\xff" + b"\xa0" * 65535
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError) as err:
            codec.decode(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "items" in err.value.detail and peak < 3 * len(data)
    small = 256  # a value of small items still decodes: 257 items in 259 bytes, within 256 + 259 / 16
    assert codec.decode(b"\x99" + small.to_bytes(2, "big") + b"\xa0" * small) == [{}] * small


def test_local_json_files_nested_too_deeply_are_a_clear_error(tmp_path):
    """Fuzzer finding: json.loads raised RecursionError from broker.json and manifest.json readers."""
    from edge_sdk.training.package import ModelPackage
    from edge_sdk.transport.mqtt import BrokerConfig

    deep = "[" * 5000 + "]" * 5000
    (tmp_path / "broker.json").write_text(deep)
    (tmp_path / "manifest.json").write_text(deep)
    with pytest.raises(ValueError, match="not JSON"):
        BrokerConfig.load(tmp_path / "broker.json")
    with pytest.raises(ValueError, match="not JSON"):
        ModelPackage.load(tmp_path)


def test_map_keys_that_are_not_text_are_refused_before_the_map_is_built():
    """Review finding: tuple keys with colliding hashes made cbor2 build a dict in quadratic time."""
    pairs = b"".join(b"\x82\x01" + cbor2.dumps(i) + b"\x00" for i in range(2000))  # {[1, i]: 0, ...}
    data = b"\xb9" + (2000).to_bytes(2, "big") + pairs
    with pytest.raises(ProtocolError) as err:
        codec.decode(data)
    assert err.value.detail == "map keys must be text"
    assert codec.decode(codec.encode({"a": {"b": 1}, "c": [{"d": None}]})) == {"a": {"b": 1}, "c": [{"d": None}]}


def test_a_long_list_of_headers_decodes():
    """Review finding: a cap of 65,536 items refused snapshots beyond ~65,500 blocks; the cap is now 2^19,
    above the ~300,000 headers that fit the broker's 64 MiB packet limit."""
    headers = [bytes(220)] * 70_000
    assert len(codec.decode(codec.encode({"headers": headers}))["headers"]) == 70_000


def test_the_encoder_refuses_what_a_receiver_would_refuse():
    """Review finding: values past the depth or item bounds encoded (and hashed) but did not decode."""
    deep: list = []
    for _ in range(17):
        deep = [deep]
    with pytest.raises(TypeError):
        codec.encode(deep)
    with pytest.raises(TypeError):
        codec.encode([{}] * 1000)  # 1001 items in about 1 KB: past 256 + size/16
