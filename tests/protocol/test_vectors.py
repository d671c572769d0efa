"""tests/vectors/protocol.json agrees with the code and with independent implementations."""

import hashlib
import importlib.util
import json
import math
import pathlib
import struct

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.public import PrivateKey, SealedBox

HERE = pathlib.Path(__file__).resolve().parents[1] / "vectors"
VECTORS = json.loads((HERE / "protocol.json").read_text())
H = bytes.fromhex
DOMAIN = b"BLOCKFL-EDGE/envelope\x00"


def test_file_is_what_the_code_generates():
    spec = importlib.util.spec_from_file_location("generate", HERE / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    fresh = gen.generate()
    assert json.loads(json.dumps(fresh)).keys() == VECTORS.keys()
    for key in VECTORS:
        assert _without_sealed_boxes(key, fresh[key]) == _without_sealed_boxes(key, VECTORS[key]), key


def _without_sealed_boxes(key: str, value):
    """A vector less its sealed boxes, which use a random ephemeral key (their replay opens them)."""
    value = json.loads(json.dumps(value, sort_keys=True))
    if key == "seal":
        for v in value:
            v.pop("sealed")
    if key == "enrolment":
        value["miner"]["bundle"].pop("paillier.share.sealed")
    return value


def test_required_keys():
    assert {"signature", "block_header", "merkle", "aggregation"} <= VECTORS.keys()
    assert sorted(len(m["leaves"]) for m in VECTORS["merkle"]) == [0, 1, 2, 3, 5, 8]


@pytest.mark.parametrize("vector", VECTORS["signature"], ids=lambda v: v["type"])
def test_signatures_verify_with_an_independent_ed25519(vector):
    message = H(vector["message"])
    Ed25519PublicKey.from_public_bytes(H(vector["sign_pk"])).verify(H(vector["signature"]), message)
    # the message is DOMAIN || canonical CBOR [version, type, signer, body] of the envelope
    version, msg_type, signer, body, signature = cbor2.loads(H(vector["envelope"]))
    assert message == DOMAIN + cbor2.dumps([version, msg_type, signer, body], canonical=True)
    assert (msg_type, signer.hex(), signature.hex()) == (vector["type"], vector["sign_pk"], vector["signature"])
    assert hashlib.sha256(H(vector["envelope"])).hexdigest() == vector["digest"]


@pytest.mark.parametrize("vector", VECTORS["block_header"], ids=lambda v: v["note"])
def test_headers_hash_and_work(vector):
    raw = H(vector["header_bytes"])
    assert len(raw) == 220
    assert hashlib.sha256(raw).hexdigest() == vector["hash"]
    assert (int(vector["hash"], 16) <= int(vector["target"], 16)) == vector["meets_target"]
    version, height, prev, task, root, mhash, miner, ts, target, nonce = struct.unpack(">IQ32s32s32s32s32sQ32sQ", raw)
    f = vector["fields"]
    assert (version, height, ts, nonce) == (f["version"], f["height"], f["timestamp_ms"], f["nonce"])
    assert (prev.hex(), task.hex(), root.hex(), mhash.hex(), miner.hex()) == (
        f["prev_hash"],
        f["task_id"],
        f["merkle_root"],
        f["model_hash"],
        f["miner"],
    )
    assert target.hex() == vector["target"]


def mth(leaves):
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 2 ** math.floor(math.log2(len(leaves) - 1))
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


@pytest.mark.parametrize("vector", VECTORS["merkle"], ids=lambda v: f"{len(v['leaves'])} leaves")
def test_merkle_roots(vector):
    assert mth([H(x) for x in vector["leaves"]]).hex() == vector["root"]


@pytest.mark.parametrize("vector", VECTORS["aggregation"], ids=range(len(VECTORS["aggregation"])))
def test_aggregation_in_python_integers(vector):
    """Re-derive the result with Python integers only: round-half-even quantize, half-up mean."""
    frac = vector["frac_bits"]
    total = sum(u["n"] for u in vector["updates"])
    params = {}
    for name, base in vector["base"].items():
        acc = [0] * len(base["values"])
        for u in vector["updates"]:
            for i, d in enumerate(u["delta"][name]["values"]):
                acc[i] += u["n"] * round(d * 2**frac)  # d is a float32 value: d * 2^frac is exact
        values = [b + (2 * a + total) // (2 * total) for b, a in zip(base["values"], acc, strict=True)]
        assert values == vector["result"][name]["values"], name
        data = struct.pack(f"<{len(values)}q", *values)
        params[name] = {"dtype": "i8", "shape": base["shape"], "data": data}
    canonical = cbor2.dumps({"frac_bits": frac, "params": params}, canonical=True)
    assert hashlib.sha256(b"BLOCKFL-EDGE/model\x00" + canonical).hexdigest() == vector["model_hash"]


@pytest.mark.parametrize(
    "vector", VECTORS["aggregation_rules"], ids=lambda v: f"{v['rule']['rule']}-f{v['rule']['f']}-t{v['rule']['trim']}"
)
def test_aggregation_rules(vector):
    """Recompute each robust rule twice: with the plain-Python reference (PROTOCOL.md §9)
    and with edge_sdk.chain.robust from the decoded inputs; hash the result with cbor2 directly."""
    import numpy as np
    from robust_reference import aggregate as reference

    from edge_sdk.chain.robust import aggregate
    from edge_sdk.protocol.aggregation_rule import AggregationRule

    frac, rule = vector["frac_bits"], AggregationRule.from_wire(vector["rule"])
    base = {name: (p["shape"], p["values"]) for name, p in vector["base"].items()}
    updates = [(u["n"], {name: p["values"] for name, p in u["delta"].items()}) for u in vector["updates"]]
    values, excluded = reference(base, updates, frac, vector["rule"])
    assert list(excluded) == vector["excluded"]
    assert values == {name: p["values"] for name, p in vector["result"].items()}
    model, excluded2 = aggregate(
        {name: np.array(v, np.int64).reshape(shape) for name, (shape, v) in base.items()},
        [(n, {name: np.array(v, np.float32).reshape(base[name][0]) for name, v in d.items()}) for n, d in updates],
        frac,
        rule,
    )
    assert list(excluded2) == vector["excluded"]
    assert {name: v.ravel().tolist() for name, v in model.items()} == values
    params = {
        name: {"dtype": "i8", "shape": p["shape"], "data": struct.pack(f"<{len(p['values'])}q", *p["values"])}
        for name, p in vector["result"].items()
    }
    canonical = cbor2.dumps({"frac_bits": frac, "params": params}, canonical=True)
    assert hashlib.sha256(b"BLOCKFL-EDGE/model\x00" + canonical).hexdigest() == vector["model_hash"]


def test_sealed_box_opens():
    for v in VECTORS["seal"]:
        key = PrivateKey(H(v["box_sk"]))
        assert bytes(key.public_key).hex() == v["box_pk"]
        assert SealedBox(key).decrypt(H(v["sealed"])) == H(v["plaintext"])


def test_canonical_cbor_examples():
    for v in VECTORS["canonical_cbor"]:
        assert cbor2.dumps(v["value"], canonical=True).hex() == v["cbor"]


def test_vector_chain_validates():
    from edge_sdk.chain.memory import MemoryChain

    chain = MemoryChain(H(VECTORS["chain"]["genesis"]))
    for raw in VECTORS["chain"]["blocks"]:
        chain.add(H(raw))
    assert chain.tip.header.height == 2 and chain.task_id.hex() == VECTORS["chain"]["task_id"]
    assert chain.tip.hash.hex() == VECTORS["block_header"][1]["hash"]


def _vector_task():
    from edge_sdk.chain.rules import validate_genesis

    return validate_genesis(H(VECTORS["chain"]["genesis"]))[1]


@pytest.mark.parametrize("vector", VECTORS["negative"], ids=lambda v: f"{v['kind']}-{v['reason']}-{v['note'][:20]}")
def test_every_negative_vector_is_refused_with_its_reason_code(vector):
    from edge_sdk.protocol import sync
    from edge_sdk.protocol.block import Update
    from edge_sdk.protocol.errors import ProtocolError
    from edge_sdk.protocol.light import parse_alert, parse_light

    parse = {
        "block": _validate_on_genesis,
        "update": Update.parse,
        "sync_request": sync.parse_request,
        "rejection": sync.parse_rejection,
        "light": parse_light,
        "alert": parse_alert,
    }[vector["kind"]]
    with pytest.raises(ProtocolError) as caught:
        parse(H(vector["input"]), _vector_task())
    assert caught.value.reason.value == vector["reason"], vector["note"]


def test_negative_vectors_cover_every_update_parse_code_once():
    reasons = [v["reason"] for v in VECTORS["negative"] if v["kind"] == "update"]
    assert len(reasons) == len(set(reasons)) >= 13
    assert {v["kind"] for v in VECTORS["negative"]} == {
        "update",
        "sync_request",
        "rejection",
        "light",
        "alert",
        "block",
    }


def _validate_on_genesis(raw: bytes, task) -> None:
    """A `block` negative vector is validated on the chain vector's genesis, at T0 + 5 s."""
    from edge_sdk.chain.memory import MemoryChain

    MemoryChain(H(VECTORS["chain"]["genesis"])).add(raw, now=task.created_ms + 5000)
