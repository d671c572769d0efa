"""Paillier test vectors (PROTOCOL.md §9.1, §9.2): a test-size threshold key, three devices' packed and
encrypted deltas with fixed masks, the aggregate and its hash, every share's partial decryption with
its proof (fixed proof randomness), the combine step, the opened model, and a two-block chain that
carries all of it. Used by generate.py; every draw comes from a seeded generator, so the output is
the same on every run.
"""

from __future__ import annotations

import functools
import random
import types
from dataclasses import dataclass

import gmpy2
import numpy as np

from coordinator.miner.assembly import build_block
from coordinator.task.dealer import draw, key_from
from edge_sdk.chain.memory import MemoryChain
from edge_sdk.privacy import paillier, threshold
from edge_sdk.protocol import codec
from edge_sdk.protocol.aggregation_rule import AggregationRule
from edge_sdk.protocol.block import make_genesis, make_update
from edge_sdk.protocol.cert import issue_certificate
from edge_sdk.protocol.decryption import DecryptionRules, PartialDecryption
from edge_sdk.protocol.fixedpoint import model_hash, to_fixed
from edge_sdk.protocol.identity import Identity
from edge_sdk.protocol.packing import Packing, checked_sums, flatten, mean_fixed, pack, quantize
from edge_sdk.protocol.task import ChainParams, MinerInfo, Privacy, Task
from edge_sdk.protocol.work import target_for_hashes

HALF_BITS = 256  # n = p q has 512 bits: a test size (the reference coordinator deals 2048)
THRESHOLD, HOLDERS = 2, 3
SAMPLES = (30, 10, 20)
# float32 deltas over W (4x5) and b (5), 25 values: 2 ciphertexts of 20 and 5 slots. Device 0 has the
# edge cases: 0 (a tie: x = 2047.5), -2^-60 (d + c rounds to c in binary64), clipped values, +-c.
EDGES = [0.0, -(2.0**-60), 3.0, -5.0, 1.0, -1.0, 0.5, 2.0**-12]


@dataclass(frozen=True)
class Federation:
    """The Paillier task of the vectors and everything drawn for it."""

    coordinator: Identity
    miners: tuple[Identity, ...]
    devices: tuple[Identity, ...]
    p: int
    q: int
    coefficients: tuple[int, ...]
    root: int
    shares: tuple
    task: Task
    genesis: bytes
    certs: tuple[bytes, ...]


def _minimal(x: int) -> str:
    return x.to_bytes((x.bit_length() + 7) // 8, "big").hex()


def _params(model: dict, as_int: bool) -> dict:
    cast = int if as_int else float
    return {
        name: {"shape": list(v.shape), "values": [cast(x) for x in np.asarray(v).ravel()]} for name, v in model.items()
    }


@functools.cache
def federation(t0: int) -> Federation:
    p, q, coefficients, root = draw(2 * HALF_BITS, THRESHOLD, random.Random("blockfl-vector-paillier-key"))
    key, shares = key_from(p, q, coefficients, root, HOLDERS)
    coordinator = Identity.from_seed(b"vector-paillier-coordinator")
    miners = tuple(Identity.from_seed(b"vector-paillier-miner-%d" % i) for i in range(HOLDERS))
    devices = tuple(Identity.from_seed(b"vector-paillier-device-%d" % i) for i in range(len(SAMPLES)))
    packing = Packing(key.n, precision=12, clip_exp=0, max_quota=1000, max_updates=8)
    chain = ChainParams(
        pow_limit=target_for_hashes(4), initial_target=target_for_hashes(16), target_interval_ms=1000, max_updates=8
    )
    initial = {"W": np.linspace(-1, 1, 20, dtype=np.float32).reshape(4, 5), "b": np.full(5, 0.25, np.float32)}
    task = Task(
        "paillier-vectors",
        coordinator.public.sign_pk,
        chain,
        to_fixed(initial, chain.frac_bits),
        t0,
        miners=tuple(MinerInfo(m.public.sign_pk, m.public.box_pk) for m in miners),
        privacy=Privacy("paillier", packing=packing, threshold=DecryptionRules(key, 2)),
        aggregation=AggregationRule(weight_cap=0),
    )
    certs = tuple(
        issue_certificate(coordinator, task, d.public, quota=1000, expires_ms=t0 + 10**10, name=f"device-{i}")
        for i, d in enumerate(devices)
    )
    genesis = make_genesis(coordinator, task)
    return Federation(
        coordinator, miners, devices, p, q, tuple(coefficients), root, tuple(shares), task, genesis, certs
    )


def _deltas() -> list[dict]:
    rng = np.random.default_rng(20260102)
    out = []
    for k in range(len(SAMPLES)):
        flat = (rng.standard_normal(25) * 0.3).astype(np.float32)
        if k == 0:
            flat[: len(EDGES)] = EDGES
        out.append({"W": flat[:20].reshape(4, 5), "b": flat[20:]})
    return out


def _update(fed: Federation, k: int, delta: dict, base: bytes, rng: random.Random, t0: int) -> tuple[bytes, dict]:
    task, packing = fed.task, fed.task.privacy.packing
    n, n2 = packing.n, packing.n * packing.n
    weight = task.privacy.weight(SAMPLES[k])
    quantized = quantize(flatten(delta, task.shapes), packing)
    plaintexts = pack([weight * v for v in quantized], packing)
    rs = []
    while len(rs) < len(plaintexts):
        r = rng.randrange(1, n)
        if gmpy2.gcd(r, n) == 1:
            rs.append(r)
    masks = types.SimpleNamespace(take=iter([pow(r, n, n2) for r in rs]).__next__)  # fixed r instead of a MaskPool
    cts = paillier.encrypt_update(delta, weight, task.shapes, packing, masks)
    raw = make_update(fed.devices[k], task, fed.certs[k], base, SAMPLES[k], None, t0 + 1000 + k, ciphertexts=cts)
    return raw, {
        "samples": SAMPLES[k],
        "weight": weight,
        "delta": _params(delta, False),
        "quantized": quantized,
        "plaintexts": [_minimal(m) for m in plaintexts],
        "r": [_minimal(r) for r in rs],
        "ciphertexts": [c.hex() for c in cts],
        "update": raw.hex(),
    }


def _partial(fed: Federation, cts: list[int], share, rng: random.Random) -> tuple[PartialDecryption, dict]:
    key = fed.task.privacy.threshold.key
    width = key.element_bytes
    partials = threshold.partial_decrypt(share, key, cts)
    r = rng.getrandbits(key.response_bits - 1)
    proof = threshold.prove(share, key, cts, partials, r=r)
    big_c, big_p = threshold.batch(key, share.index, cts, partials)
    item = PartialDecryption(share.index, tuple(partials), proof)
    return item, {
        "share": share.index,
        "partials": [x.to_bytes(width, "big").hex() for x in partials],
        "r": _minimal(r),
        "C": big_c.to_bytes(width, "big").hex(),
        "P": big_p.to_bytes(width, "big").hex(),
        "a": pow(big_c, 4 * r, key.n2).to_bytes(width, "big").hex(),
        "b": pow(key.v, r, key.n2).to_bytes(width, "big").hex(),
        "challenge": proof.challenge.to_bytes(32, "big").hex(),
        "response": _minimal(proof.response),
        "wire": codec.encode(item.to_wire(key)).hex(),
    }


def _bad_partials(fed: Federation, good: dict) -> list[dict]:
    """Share 1's partial decryption with one byte changed: in a partial, in the response."""
    partials = [bytes.fromhex(x) for x in good["partials"]]
    partials[0] = partials[0][:-1] + bytes([partials[0][-1] ^ 1])
    response = bytes.fromhex(good["response"])
    response = response[:-1] + bytes([response[-1] ^ 1])
    cases = [
        ("the last byte of partial 0 xor 1", [x.hex() for x in partials], good["response"]),
        ("the last byte of the response xor 1", good["partials"], response.hex()),
    ]
    out = []
    for note, parts, z in cases:
        wire = {"share": good["share"], "partials": [bytes.fromhex(x) for x in parts]}
        wire["proof"] = [bytes.fromhex(good["challenge"]), bytes.fromhex(z)]
        out.append({"note": note, "share": good["share"], "partials": parts, "challenge": good["challenge"],
                    "response": z, "wire": codec.encode(wire).hex(), "valid": False})  # fmt: skip
    return out


def _round(t0: int):
    """The vector round: three updates in block 1, the first THRESHOLD shares' partials of its aggregate."""
    fed = federation(t0)
    task = fed.task
    chain = MemoryChain(fed.genesis)
    g = chain.tip
    rng = random.Random("blockfl-vector-paillier-masks")
    built = [_update(fed, k, d, g.hash, rng, t0) for k, d in enumerate(_deltas())]
    block1 = build_block(
        identity=fed.miners[0], task=task, chain=chain, parent=g, updates=[raw for raw, _ in built], now_ms=t0 + 2000
    )
    s1 = chain.add(block1, now=t0 + 2000)
    proof_rng = random.Random("blockfl-vector-paillier-proofs")
    items = [_partial(fed, list(s1.aggregate.ciphertexts), share, proof_rng) for share in fed.shares]
    return fed, chain, g, built, block1, s1, items


def paillier_vectors(t0: int) -> dict:
    fed, chain, g, built, block1, s1, items = _round(t0)
    task, key = fed.task, fed.task.privacy.threshold.key
    packing, frac = task.privacy.packing, task.chain.frac_bits
    width = packing.ciphertext_bytes
    cts = list(s1.aggregate.ciphertexts)
    opening = [item.to_wire(key) for item, _ in items[:THRESHOLD]]
    block2 = build_block(
        identity=fed.miners[1], task=task, chain=chain, parent=s1, updates=[], now_ms=t0 + 3000, decryption=opening
    )
    s2 = chain.add(block2, now=t0 + 3000)
    combos = [[1, 2], [1, 3], [2, 3]]
    plaintexts = threshold.combine(key, {i: list(items[i - 1][0].partials) for i in combos[0]})
    values = sum(v.size for v in task.initial_model.values())
    sums = checked_sums(plaintexts, values, s1.aggregate.weight, packing)
    mean = mean_fixed(sums, s1.aggregate.weight, packing, frac)
    model = chain.get(s1.hash).model
    return {
        "note": "Test-size key: n has 512 bits (the reference coordinator deals 2048; the arithmetic is the same). "
        "Integers are minimal big-endian hex; elements of Z_{n^2} (ciphertexts, partials, v, vks, C, P, a, b) "
        "fixed-size big-endian hex of ciphertext_bytes. Task: the genesis in `chain` (mode paillier, 3 miners, t = 2).",
        "key": {
            "p": _minimal(fed.p),
            "q": _minimal(fed.q),
            "n": _minimal(key.n),
            "coefficients": [_minimal(a) for a in fed.coefficients],
            "v_root": _minimal(fed.root),
            "v": key.v.to_bytes(width, "big").hex(),
            "threshold": key.threshold,
            "delta": key.delta,
            "shares": [{"index": s.index, "value": _minimal(s.value)} for s in fed.shares],
            "vks": [vk.to_bytes(width, "big").hex() for vk in key.verification_keys],
        },
        "packing": {
            **{k: getattr(packing, k) for k in ("precision", "clip_exp", "max_quota", "max_updates")},
            **{k: getattr(packing, k) for k in ("headroom", "slot_bits", "slots", "ciphertext_bytes")},
        },
        "frac_bits": frac,
        "base": _params(task.initial_model, True),
        "updates": [vector for _, vector in built],
        "aggregate": {
            "ciphertexts": [c.to_bytes(width, "big").hex() for c in cts],
            "samples": s1.aggregate.weight,
            "hash": paillier.aggregate_hash(cts, s1.aggregate.weight, packing).hex(),
        },
        "partials": [vector for _, vector in items],
        "bad_partials": _bad_partials(fed, items[0][1]),
        "combine": [
            {
                "shares": c,
                "lambda": [threshold.lagrange(c, i, key.delta) for i in c],
                "plaintexts": [
                    _minimal(m) for m in threshold.combine(key, {i: list(items[i - 1][0].partials) for i in c})
                ],
            }
            for c in combos
        ],
        "sums": sums,
        "mean": mean,
        "model": _params(model, True),
        "model_hash": model_hash(model, frac).hex(),
        "chain": {"genesis": fed.genesis.hex(), "blocks": [block1.hex(), block2.hex()], "opened_by": s2.hash.hex()},
    }


def paillier_negatives(t0: int) -> list[dict]:
    """Blocks breaking the two Paillier-only block rules, validated on the `paillier` chain's genesis
    after the blocks in `after` (kind `paillier_block`, "now" at its created_ms + 5 s)."""
    from coordinator.miner.assembly import search_nonce
    from edge_sdk.chain.rules import expected_target
    from edge_sdk.protocol.block import block_template, seal_block
    from edge_sdk.protocol.extras import Extras

    fed, chain, g, built, block1, s1, items = _round(t0)
    key = fed.task.privacy.threshold.key

    def forged(parent, updates, decryption, now):
        extras = Extras(decryption=tuple(decryption))
        header = block_template(
            parent=parent.header, task=fed.task, miner=fed.miners[1].public.sign_pk, update_bytes=updates,
            extras=extras, commitment=parent.header.model_hash, timestamp_ms=now,
            target=expected_target(fed.task, parent.header, chain),
        )  # fmt: skip
        return seal_block(fed.miners[1], search_nonce(header), updates, extras)

    good, bad = items[0][0], items[1][0]
    bad = type(bad)(bad.share, (bad.partials[0] ^ 1, *bad.partials[1:]), bad.proof)
    cases = [
        (forged(g, [built[0][0]], [], t0 + 1500), "too_few_updates", "one update; min_participants is 2", []),
        (forged(s1, [], [good.to_wire(key), bad.to_wire(key)], t0 + 3000), "bad_decryption",
         "block 1's opening with share 2's first partial changed (its proof fails)", [block1]),
    ]  # fmt: skip
    return [
        {
            "kind": "paillier_block",
            "input": raw.hex(),
            "reason": reason,
            "note": note,
            "after": [b.hex() for b in after],
        }
        for raw, reason, note, after in cases
    ]
