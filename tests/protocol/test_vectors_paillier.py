"""The `paillier` and `enrolment` vectors of tests/vectors/protocol.json, replayed through the project's
own code and, where the arithmetic is short, re-derived with plain Python integers and cbor2."""

import hashlib
import json
import pathlib
import types
from fractions import Fraction

import cbor2
import gmpy2
import numpy as np
import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from coordinator.task.dealer import key_from
from edge_sdk.chain.memory import MemoryChain
from edge_sdk.chain.opening import Aggregate, check_items
from edge_sdk.chain.rules import validate_genesis
from edge_sdk.node.bundle import write_bundle
from edge_sdk.privacy import paillier, threshold
from edge_sdk.privacy.sealed_share import open_share
from edge_sdk.protocol import codec, envelope
from edge_sdk.protocol.block import Block, Update
from edge_sdk.protocol.cert import Certificate
from edge_sdk.protocol.decryption import PartialDecryption
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.fixedpoint import model_hash
from edge_sdk.protocol.identity import Identity, node_id
from edge_sdk.protocol.packing import checked_sums, flatten, mean_fixed, pack, quantize
from edge_sdk.transport.mqtt import BrokerConfig

VECTORS = json.loads((pathlib.Path(__file__).resolve().parents[1] / "vectors" / "protocol.json").read_text())
P, E = VECTORS["paillier"], VECTORS["enrolment"]
H = bytes.fromhex


def num(hex_text: str) -> int:
    return int.from_bytes(H(hex_text), "big")


TASK = validate_genesis(H(P["chain"]["genesis"]))[1]
KEY = TASK.privacy.threshold.key
PACKING = TASK.privacy.packing
N, N2 = KEY.n, KEY.n * KEY.n
AGGREGATE = [num(c) for c in P["aggregate"]["ciphertexts"]]


def delta_of(update: dict) -> dict:
    return {name: np.array(p["values"], np.float32).reshape(p["shape"]) for name, p in update["delta"].items()}


def test_the_key_is_the_dealers_from_its_safe_primes():
    k = P["key"]
    p, q = num(k["p"]), num(k["q"])
    assert all(gmpy2.is_prime(x, 50) and gmpy2.is_prime((x - 1) // 2, 50) for x in (p, q))
    assert p * q == N == num(k["n"]) and N.bit_length() == 512 and k["delta"] == 6 == KEY.delta
    # plain Python: d = 0 mod m', 1 mod n; share i = d + a_1 i mod n m' (t = 2); vk_i = v^(Delta s_i)
    m = (p - 1) // 2 * ((q - 1) // 2)
    d = pow(m, -1, N) * m % (N * m)
    (a1,) = [num(a) for a in k["coefficients"]]
    shares = [(d + a1 * i) % (N * m) for i in (1, 2, 3)]
    assert [num(s["value"]) for s in k["shares"]] == shares and [s["index"] for s in k["shares"]] == [1, 2, 3]
    v = pow(num(k["v_root"]), 2, N2)
    assert num(k["v"]) == v == KEY.v
    assert [num(x) for x in k["vks"]] == [pow(v, 6 * s, N2) for s in shares] == list(KEY.verification_keys)
    key, dealt = key_from(p, q, [a1], num(k["v_root"]), 3)
    assert key == KEY and [s.value for s in dealt] == shares and key.threshold == k["threshold"] == 2


def test_packing_parameters_derive_as_the_manifest_says():
    pk = P["packing"]
    assert (PACKING.precision, PACKING.clip_exp, PACKING.max_quota, PACKING.max_updates) == (
        pk["precision"], pk["clip_exp"], pk["max_quota"], pk["max_updates"])  # fmt: skip
    headroom = (pk["max_updates"] * pk["max_quota"]).bit_length()  # ceil(log2(x + 1))
    assert pk["headroom"] == headroom == PACKING.headroom
    assert pk["slot_bits"] == pk["precision"] + headroom and pk["slots"] == (N.bit_length() - 2) // pk["slot_bits"]
    assert pk["ciphertext_bytes"] == (2 * N.bit_length() + 7) // 8 == PACKING.ciphertext_bytes


@pytest.mark.parametrize("k", range(3))
def test_quantize_and_pack(k):
    update, pk = P["updates"][k], P["packing"]
    values = [x for name in sorted(update["delta"]) for x in update["delta"][name]["values"]]
    assert quantize(flatten(delta_of(update), TASK.shapes), PACKING) == update["quantized"]
    # plain Python in binary64: x = (clip(d) + c) * ((2^p - 1) / (2c)), rounded half to even
    c, top = 2.0 ** pk["clip_exp"], (1 << pk["precision"]) - 1
    assert [round((min(max(d, -c), c) + c) * (top / (2 * c))) for d in values] == update["quantized"]
    weighted = [update["weight"] * v for v in update["quantized"]]
    assert update["weight"] == update["samples"]  # mode paillier
    s, slots = pk["slot_bits"], pk["slots"]
    plain = [sum(v << (s * j) for j, v in enumerate(weighted[i : i + slots])) for i in range(0, len(weighted), slots)]
    assert [num(m) for m in update["plaintexts"]] == plain == pack(weighted, PACKING)


def test_the_binary64_rule_decides_near_ties():
    """Device 0's first values: 0 is the exact tie 2047.5 (half to even: 2048); -2^-60 + c rounds to c
    in binary64, so it quantizes to 2048 too, where exact rational arithmetic gives 2047."""
    update = P["updates"][0]
    d = update["delta"]["W"]["values"][1]
    assert d == -(2.0**-60) and update["quantized"][:2] == [2048, 2048]
    assert round((Fraction(d) + 1) * 4095 / 2) == 2047


@pytest.mark.parametrize("k", range(3))
def test_encryption_with_fixed_masks(k):
    update = P["updates"][k]
    rs, cts = [num(r) for r in update["r"]], [num(c) for c in update["ciphertexts"]]
    assert all(len(H(c)) == PACKING.ciphertext_bytes for c in update["ciphertexts"])
    assert cts == [(1 + N * num(m)) * pow(r, N, N2) % N2 for m, r in zip(update["plaintexts"], rs, strict=True)]
    masks = types.SimpleNamespace(take=iter([pow(r, N, N2) for r in rs]).__next__)
    fresh = paillier.encrypt_update(delta_of(update), update["weight"], TASK.shapes, PACKING, masks)
    assert [c.hex() for c in fresh] == update["ciphertexts"]
    parsed = Update.parse(H(update["update"]), TASK)
    assert parsed.ciphertexts == cts and parsed.samples == update["samples"]


def test_aggregate_and_its_hash():
    updates = [[num(c) for c in u["ciphertexts"]] for u in P["updates"]]
    product = [a * b % N2 * c % N2 for a, b, c in zip(*updates, strict=True)]
    assert product == AGGREGATE == paillier.aggregate(updates, PACKING)
    samples = P["aggregate"]["samples"]
    assert samples == sum(u["weight"] for u in P["updates"])
    body = cbor2.dumps(
        {"ciphertexts": [H(c) for c in P["aggregate"]["ciphertexts"]], "samples": samples}, canonical=True
    )
    expected = hashlib.sha256(b"BLOCKFL-EDGE/aggregate\x00" + body).hexdigest()
    assert expected == P["aggregate"]["hash"] == paillier.aggregate_hash(AGGREGATE, samples, PACKING).hex()


@pytest.mark.parametrize("vector", P["partials"], ids=lambda v: f"share {v['share']}")
def test_partial_decryption_and_its_proof(vector):
    i = vector["share"]
    share = threshold.KeyShare(i, num(P["key"]["shares"][i - 1]["value"]))
    partials = [num(x) for x in vector["partials"]]
    assert (
        partials
        == [pow(a, 2 * 6 * share.value, N2) for a in AGGREGATE]
        == threshold.partial_decrypt(share, KEY, AGGREGATE)
    )
    big_c, big_p = threshold.batch(KEY, i, AGGREGATE, partials)
    assert (big_c, big_p) == (num(vector["C"]), num(vector["P"]))
    r = num(vector["r"])
    assert r.bit_length() <= 2 * 512 + KEY.delta.bit_length() + 384
    assert (pow(big_c, 4 * r, N2), pow(KEY.v, r, N2)) == (num(vector["a"]), num(vector["b"]))
    proof = threshold.prove(share, KEY, AGGREGATE, partials, r=r)
    assert (proof.challenge, proof.response) == (num(vector["challenge"]), num(vector["response"]))
    assert proof.response == r + proof.challenge * 6 * share.value
    item = PartialDecryption.from_wire(codec.decode(H(vector["wire"])), KEY, len(AGGREGATE))
    assert item == PartialDecryption(i, tuple(partials), proof)
    assert codec.encode(item.to_wire(KEY)).hex() == vector["wire"]
    assert threshold.verify(KEY, i, AGGREGATE, partials, proof)


@pytest.mark.parametrize("vector", P["bad_partials"], ids=lambda v: v["note"])
def test_a_partial_with_one_byte_changed_fails_its_proof(vector):
    good = P["partials"][vector["share"] - 1]
    changed = [x != y for x, y in zip(H(good["wire"]), H(vector["wire"]), strict=True)]
    assert sum(changed) == 1 and vector["valid"] is False
    item = PartialDecryption.from_wire(codec.decode(H(vector["wire"])), KEY, len(AGGREGATE))
    assert not threshold.verify(KEY, item.share, AGGREGATE, list(item.partials), item.proof)
    # and a block carrying it with a good second partial is refused
    second = codec.decode(H(P["partials"][1]["wire"]))
    aggregate = Aggregate(tuple(AGGREGATE), P["aggregate"]["samples"])
    with pytest.raises(ProtocolError) as caught:
        check_items([codec.decode(H(vector["wire"])), second], aggregate, TASK)
    assert caught.value.reason is Reason.BAD_DECRYPTION
    check_items([codec.decode(H(good["wire"])), second], aggregate, TASK)  # the unchanged pair passes


@pytest.mark.parametrize("vector", P["combine"], ids=lambda v: str(v["shares"]))
def test_any_two_shares_combine_to_the_sum_of_the_plaintexts(vector):
    chosen = vector["shares"]
    lambdas = [threshold.lagrange(chosen, i, 6) for i in chosen]
    j, k = chosen
    assert lambdas == vector["lambda"] == [6 * k // (k - j), 6 * j // (j - k)]
    partials = {i: [num(x) for x in P["partials"][i - 1]["partials"]] for i in chosen}
    plain = []
    for col in range(len(AGGREGATE)):
        c = 1
        for i, lam in zip(chosen, lambdas, strict=True):
            c = c * pow(partials[i][col], 2 * lam, N2) % N2
        plain.append((c - 1) // N * pow(4 * 36, -1, N) % N)
    assert [num(m) for m in vector["plaintexts"]] == plain == threshold.combine(KEY, partials)
    sums = [sum(num(u["plaintexts"][col]) for u in P["updates"]) for col in range(len(AGGREGATE))]
    assert plain == sums  # the aggregate's plaintext is the sum of the updates' plaintexts


def test_the_opened_mean_and_model():
    pk, frac = P["packing"], P["frac_bits"]
    plaintexts = [num(m) for m in P["combine"][0]["plaintexts"]]
    s, slots, count = pk["slot_bits"], pk["slots"], len(P["sums"])
    sums = [(plaintexts[j // slots] >> (s * (j % slots))) % (1 << s) for j in range(count)]
    weight = P["aggregate"]["samples"]
    assert sums == P["sums"] == checked_sums(plaintexts, count, weight, PACKING)
    expected_sums = [sum(u["weight"] * u["quantized"][j] for u in P["updates"]) for j in range(count)]
    assert sums == expected_sums
    shift, top = pk["clip_exp"] + frac, (1 << pk["precision"]) - 1
    nt = weight * top
    mean = [(2 * (x * 2 ** (shift + 1) - nt * 2**shift) + nt) // (2 * nt) for x in sums]
    assert mean == P["mean"] == mean_fixed(sums, weight, PACKING, frac)
    base = [x for name in sorted(P["base"]) for x in P["base"][name]["values"]]
    model = [x for name in sorted(P["model"]) for x in P["model"][name]["values"]]
    assert model == [b + m for b, m in zip(base, mean, strict=True)]
    params = {
        name: {"dtype": "i8", "shape": p["shape"], "data": np.array(p["values"], "<i8").tobytes()}
        for name, p in P["model"].items()
    }
    canonical = cbor2.dumps({"frac_bits": frac, "params": params}, canonical=True)
    assert hashlib.sha256(b"BLOCKFL-EDGE/model\x00" + canonical).hexdigest() == P["model_hash"]


def test_the_paillier_chain_replays_and_opens_the_same_model():
    chain = MemoryChain(H(P["chain"]["genesis"]))
    b1 = chain.add(H(P["chain"]["blocks"][0]))
    assert b1.header.model_hash.hex() == P["aggregate"]["hash"] and b1.model is None
    b2 = chain.add(H(P["chain"]["blocks"][1]))
    assert b2.hash.hex() == P["chain"]["opened_by"]
    model = chain.get(b1.hash).model
    assert {name: v.ravel().tolist() for name, v in model.items()} == {k: v["values"] for k, v in P["model"].items()}
    assert model_hash(model, P["frac_bits"]).hex() == P["model_hash"]
    block1 = Block.parse(H(P["chain"]["blocks"][0]), TASK.chain.max_block_bytes)
    assert [u.hex() for u in block1.update_bytes] == [u["update"] for u in P["updates"]]
    block2 = Block.parse(H(P["chain"]["blocks"][1]), TASK.chain.max_block_bytes)
    assert [codec.encode(x).hex() for x in block2.extras.decryption] == [v["wire"] for v in P["partials"][:2]]


def _write(directory: pathlib.Path, files: dict) -> pathlib.Path:
    directory.mkdir(parents=True)
    for name, content in files.items():
        (directory / name).write_bytes(content.encode() if name.endswith((".key", ".json")) else H(content))
        (directory / name).chmod(0o600)
    return directory


@pytest.mark.parametrize("role", ["miner", "device"])
def test_identity_files(role, tmp_path):
    files = E[role]["identity"]
    assert set(files) == {"sign.key", "box.key", "identity.json"}
    public = json.loads(files["identity.json"])
    identity = Identity.load(_write(tmp_path / role, files))
    assert (identity.public.sign_pk.hex(), identity.public.box_pk.hex()) == (public["sign_pk"], public["box_pk"])
    assert (
        public["device_id"] == node_id(identity.public.sign_pk) == hashlib.sha256(H(public["sign_pk"])).hexdigest()[:32]
    )
    sign_seed, box_secret = H(files["sign.key"].strip()), H(files["box.key"].strip())
    assert files["sign.key"] == sign_seed.hex() + "\n" and files["box.key"] == box_secret.hex() + "\n"
    assert bytes(SigningKey(sign_seed).verify_key).hex() == public["sign_pk"]
    assert bytes(PrivateKey(box_secret).public_key).hex() == public["box_pk"]
    # box.key is the raw X25519 secret: taken as a libsodium seed it gives another key (PROTOCOL.md §2)
    assert bytes(PrivateKey.from_seed(box_secret).public_key).hex() != public["box_pk"]


@pytest.mark.parametrize("role", ["miner", "device"])
def test_bundle_files(role, tmp_path):
    bundle = _write(tmp_path / "bundle", E[role]["bundle"])
    public = json.loads(E[role]["identity"]["identity.json"])
    genesis = (bundle / "genesis.block").read_bytes()
    assert genesis.hex() == P["chain"]["genesis"] and validate_genesis(genesis)[1].id == TASK.id
    broker = BrokerConfig.load(bundle / "broker.json")
    assert broker.username == public["device_id"] and broker.url.startswith("mqtts://")
    if role == "device":
        assert set(E[role]["bundle"]) == {"genesis.block", "cert.bin", "broker.json"}  # no key of any kind
        cert = Certificate.parse((bundle / "cert.bin").read_bytes(), TASK)
        assert cert.device.hex() == public["sign_pk"] and cert.box_pk.hex() == public["box_pk"]
        return
    assert set(E[role]["bundle"]) == {"genesis.block", "broker.json", "paillier.share.sealed"}
    identity = Identity.load(_write(tmp_path / "identity", E[role]["identity"]))
    sealed = (bundle / "paillier.share.sealed").read_bytes()
    plaintext = envelope.unseal(identity.box_key, sealed)
    assert plaintext.hex() == E[role]["share_plaintext"]
    index, value = E[role]["share_index"], num(P["key"]["shares"][0]["value"])
    assert cbor2.loads(plaintext) == {"index": index, "share": H(P["key"]["shares"][0]["value"])}
    assert cbor2.dumps(cbor2.loads(plaintext), canonical=True) == plaintext
    assert open_share(sealed, identity.box_key, TASK, identity.public.sign_pk).value == value


def test_bundle_secrets_are_written_0600(tmp_path):
    out = write_bundle(
        tmp_path / "b", genesis=H(P["chain"]["genesis"]), broker=BrokerConfig("mqtt://127.0.0.1:1"), sealed_share=b"x"
    )
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir() if p.name != "genesis.block"} == {
        "broker.json": 0o600,
        "paillier.share.sealed": 0o600,
    }
