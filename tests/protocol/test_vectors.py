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
def test_every_negative_vector_is_refused_with_its_reason_code(vector, tmp_path):
    from edge_sdk.chain.rules import validate_genesis
    from edge_sdk.protocol import sync
    from edge_sdk.protocol.block import Update
    from edge_sdk.protocol.errors import ProtocolError
    from edge_sdk.protocol.light import parse_alert, parse_light

    parse = {
        "block": lambda raw, task: _validate_after(raw, task, vector.get("after", [])),
        "update": Update.parse,
        "sync_request": sync.parse_request,
        "rejection": sync.parse_rejection,
        "light": parse_light,
        "alert": parse_alert,
        "genesis": lambda raw, task: validate_genesis(raw),
        "sealed_update": lambda raw, task: _unseal(raw, vector["box_sk"], task),
        "miner_update": lambda raw, task: _admit(raw, task, vector["after"], vector["box_sk"]),
        "light_after_alert": lambda raw, task: _light_after_alert(raw, task, H(vector["alert"]), tmp_path),
        "paillier_block": lambda raw, task: _validate_paillier(raw, vector["after"]),
    }[vector["kind"]]
    with pytest.raises(ProtocolError) as caught:
        parse(H(vector["input"]), _vector_task())
    assert caught.value.reason.value == vector["reason"], vector["note"]


def test_negative_vectors_cover_every_reason_code():
    from edge_sdk.protocol.errors import Reason

    update_reasons = [v["reason"] for v in VECTORS["negative"] if v["kind"] == "update"]
    assert len(update_reasons) == len(set(update_reasons)) >= 13
    assert {r.value for r in Reason} == {v["reason"] for v in VECTORS["negative"]}


def _chain_after(blocks, task):
    """The chain vector's genesis with `blocks` (hex) added, at created_ms + 5 s."""
    from edge_sdk.chain.memory import MemoryChain

    chain = MemoryChain(H(VECTORS["chain"]["genesis"]))
    for raw in blocks:
        chain.add(H(raw), now=task.created_ms + 5000)
    return chain


def _validate_after(raw: bytes, task, after) -> None:
    """A `block` negative vector is validated after its `after` blocks, at created_ms + 5 s."""
    _chain_after(after, task).add(raw, now=task.created_ms + 5000)


def _validate_paillier(raw: bytes, after) -> None:
    from edge_sdk.chain.memory import MemoryChain

    chain = MemoryChain(H(VECTORS["paillier"]["chain"]["genesis"]))
    now = chain.task.created_ms + 5000
    for block in after:
        chain.add(H(block), now=now)
    chain.add(raw, now=now)


def _unseal(raw: bytes, box_sk: str, task):
    from edge_sdk.protocol import envelope

    return envelope.unseal(PrivateKey(H(box_sk)), raw, max_bytes=task.chain.max_update_bytes)


def _admit(raw: bytes, task, after, box_sk: str):
    """A miner's admission on the chain after `after`: sealed to the vector miner at test time."""
    from coordinator.miner.admission import admit
    from edge_sdk.protocol import envelope
    from edge_sdk.protocol.block import Block

    chain = _chain_after(after, task)
    in_blocks = {
        hashlib.sha256(u).digest() for b in after for u in Block.parse(H(b), task.chain.max_block_bytes).update_bytes
    }
    key = PrivateKey(H(box_sk))
    verdict = admit(
        envelope.seal(bytes(key.public_key), raw), box_key=key, task=task, tip=chain.tip,
        now_ms=task.created_ms + 5000, revoked=(), seen=in_blocks.__contains__, devices_in_round=(),
    )  # fmt: skip
    if verdict.error:
        raise verdict.error


def _light_after_alert(raw: bytes, task, alert_raw: bytes, tmp_path):
    """A light device's store after the alert's block failed full verification on genesis."""
    from edge_sdk.chain.rules import validate_block
    from edge_sdk.chain.store import ChainStore
    from edge_sdk.protocol.block import Block
    from edge_sdk.protocol.errors import ProtocolError
    from edge_sdk.protocol.light import parse_alert, parse_light

    store = ChainStore(tmp_path / "light.db", H(VECTORS["chain"]["genesis"]))
    block = parse_alert(alert_raw, task).block
    with pytest.raises(ProtocolError):
        validate_block(block, task=task, chain=store, now_ms=task.created_ms + 5000)
    store.invalidate(Block.parse(block, task.chain.max_block_bytes).header.hash)
    store.add_light(parse_light(raw, task), now=task.created_ms + 5000)


def test_retarget_chain_validates_and_its_targets_follow_the_rule():
    """Each block at its own timestamp; the targets change only at retarget heights, by the
    clamped factor, and the last one is pow_limit."""
    from edge_sdk.chain.memory import MemoryChain

    vector, task = VECTORS["retarget"], _vector_task()
    chain = MemoryChain(H(VECTORS["chain"]["genesis"]))
    targets = []
    for raw, ts in zip(vector["blocks"], vector["timestamps_ms"], strict=True):
        targets.append(f"{chain.add(H(raw), now=ts).header.target:064x}")
    assert targets == vector["targets"]
    changed = [h for h in range(2, len(targets) + 1) if targets[h - 1] != targets[h - 2]]
    assert set(changed) <= set(vector["retarget_heights"]) and len(changed) >= 4
    assert int(targets[-1], 16) == task.chain.pow_limit and int(targets[3], 16) < int(targets[0], 16) // 3


def test_sync_vectors_parse_to_what_they_say():
    from edge_sdk.chain.memory import MemoryChain
    from edge_sdk.protocol import sync
    from edge_sdk.protocol.fixedpoint import model_hash
    from edge_sdk.protocol.revocations import parse_revocations

    task, v = _vector_task(), VECTORS["sync"]
    chain = MemoryChain(H(VECTORS["chain"]["genesis"]))
    for raw, ts in zip(VECTORS["retarget"]["blocks"], VECTORS["retarget"]["timestamps_ms"], strict=True):
        chain.add(H(raw), now=ts)
    best = [h.hash for h in chain.branch(chain.tip.hash)]
    request = sync.parse_request(H(v["request"]["input"]), task)
    assert [h.hex() for h in request.locator] == v["request"]["locator"] and not request.snapshot
    assert sync.locator(best[:6]) == request.locator
    after = sync.blocks_after(best, request)
    assert [h.hex() for h in after] == v["request"]["blocks_after"] == [h.hex() for h in best[6:]]
    response = sync.parse_response(H(v["response"]["input"]), task)
    assert [hashlib.sha256(_header_bytes(b)).hexdigest() for b in response.blocks] == v["request"]["blocks_after"]
    snap_request = sync.parse_request(H(v["snapshot_request"]["input"]), task)
    assert snap_request.snapshot and sync.wants_snapshot(snap_request, best)
    snap = sync.parse_response(H(v["snapshot_response"]["input"]), task).snapshot
    assert snap.tip.hex() == v["snapshot_response"]["tip"] == best[-1].hex()
    assert snap.base.hex() == v["snapshot_response"]["base"] and snap.revocations is None
    assert model_hash(snap.model, task.chain.frac_bits).hex() == v["snapshot_response"]["model_hash"]
    rejection = sync.parse_rejection(H(v["rejection"]["input"]), task)
    assert (rejection.digest.hex(), rejection.reason, rejection.tip.hex()) == (
        v["rejection"]["digest"], v["rejection"]["reason"], v["rejection"]["tip"],
    )  # fmt: skip
    listed = parse_revocations(H(v["revocations"]["input"]), task)
    assert sorted(d.hex() for d in listed.devices) == v["revocations"]["devices"]
    assert listed.ts == v["revocations"]["ts"]


def _header_bytes(raw: bytes) -> bytes:
    from edge_sdk.protocol.block import Block

    return Block.parse(raw, 1 << 30).header.encode()
