"""Regenerate tests/vectors/protocol.json from fixed seeds: `python tests/vectors/generate.py`.

Everything here is deterministic (Ed25519 signatures are, timestamps are fixed, nonces are
searched from 0), so the test suite regenerates the file and checks it is unchanged (all but the sealed box,
whose ephemeral key is random by design).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from coordinator.miner.assembly import build_block  # noqa: E402
from edge_sdk.chain.aggregation import fedavg  # noqa: E402
from edge_sdk.chain.memory import MemoryChain  # noqa: E402
from edge_sdk.chain.robust import aggregate  # noqa: E402
from edge_sdk.protocol import codec, envelope  # noqa: E402
from edge_sdk.protocol.aggregation_rule import AggregationRule  # noqa: E402
from edge_sdk.protocol.block import Block, make_genesis, make_update  # noqa: E402
from edge_sdk.protocol.cert import issue_certificate  # noqa: E402
from edge_sdk.protocol.fixedpoint import model_hash, to_fixed  # noqa: E402
from edge_sdk.protocol.identity import Identity  # noqa: E402
from edge_sdk.protocol.merkle import merkle_root  # noqa: E402
from edge_sdk.protocol.task import ChainParams, MinerInfo, Task  # noqa: E402
from edge_sdk.protocol.work import meets_target, target_for_hashes  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from chain_vectors import retarget_chain, state_negatives, sync_vectors  # noqa: E402
from enrolment_vectors import enrolment_vectors  # noqa: E402
from negative import block_negatives, message_negatives, update_negatives  # noqa: E402
from paillier_vectors import paillier_negatives, paillier_vectors  # noqa: E402

OUT = pathlib.Path(__file__).with_name("protocol.json")
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms


def _params(model: dict, as_int: bool) -> dict:
    return {
        name: {"shape": list(v.shape), "values": [int(x) if as_int else float(x) for x in np.asarray(v).ravel()]}
        for name, v in model.items()
    }


def _vector_task() -> tuple[Identity, Task]:
    coordinator = Identity.from_seed(b"vector-coordinator")
    miner = Identity.from_seed(b"vector-miner")
    chain = ChainParams(
        pow_limit=target_for_hashes(4), initial_target=target_for_hashes(64), target_interval_ms=1000, retarget_window=2
    )
    initial = {"W": np.array([[0.25, -0.5, 0.0], [1.0, 0.125, -0.75]], np.float32), "b": np.zeros(3, np.float32)}
    return coordinator, Task(
        "vectors",
        coordinator.public.sign_pk,
        chain,
        to_fixed(initial, chain.frac_bits),
        T0,
        miners=(MinerInfo(miner.public.sign_pk, miner.public.box_pk),),
    )


def _signed(raw: bytes) -> dict:
    env = envelope.open_envelope(raw)
    return {
        "type": env.type,
        "sign_pk": env.signer.hex(),
        "message": envelope.signing_bytes(env.version, env.type, env.signer, env.body).hex(),
        "signature": env.signature.hex(),
        "envelope": raw.hex(),
        "digest": env.digest.hex(),
    }


def _header(header, note: str) -> dict:
    raw = header.encode()
    return {
        "note": note,
        "header_bytes": raw.hex(),
        "hash": hashlib.sha256(raw).hexdigest(),
        "target": f"{header.target:064x}",
        "meets_target": meets_target(header.hash, header.target),
        "fields": {
            "version": header.version,
            "height": header.height,
            "prev_hash": header.prev_hash.hex(),
            "task_id": header.task_id.hex(),
            "merkle_root": header.merkle_root.hex(),
            "model_hash": header.model_hash.hex(),
            "miner": header.miner.hex(),
            "timestamp_ms": header.timestamp_ms,
            "nonce": header.nonce,
        },
    }


def _aggregation_rules() -> list[dict]:
    """Each rule on one round of 6 updates over the test model's shape: update 3 is scaled by 50,
    update 4 claims 5000 samples among claims near 100."""
    frac = 24
    rng = np.random.default_rng(20260101)
    base = to_fixed({"W": rng.standard_normal((6, 3)) * 0.5, "b": np.full(3, 0.5)}, frac)
    samples = [100, 80, 120, 100, 5000, 90]
    updates = []
    for k, n in enumerate(samples):
        scale = 0.5 if k == 3 else 0.01
        updates.append(
            (
                n,
                {
                    "W": (rng.standard_normal((6, 3)) * scale).astype(np.float32),
                    "b": (rng.standard_normal(3) * scale).astype(np.float32),
                },
            )
        )
    rules = [
        AggregationRule("fedavg", weight_cap=2, norm_factor=3.0),
        AggregationRule("median"),
        AggregationRule("trimmed-mean", trim=0.2),
        AggregationRule("multi-krum", f=1),
        AggregationRule("multi-krum", f=2, weight_cap=0),
    ]
    out = []
    for rule in rules:
        model, excluded = aggregate(base, updates, frac, rule)
        out.append(
            {
                "rule": rule.to_wire(),
                "frac_bits": frac,
                "base": _params(base, True),
                "updates": [{"n": n, "delta": _params(d, False)} for n, d in updates],
                "result": _params(model, True),
                "excluded": list(excluded),
                "model_hash": model_hash(model, frac).hex(),
            }
        )
    return out


def generate() -> dict:
    coordinator, task = _vector_task()
    miner = Identity.from_seed(b"vector-miner")
    devices = [Identity.from_seed(b"vector-device-%d" % i) for i in range(3)]
    genesis = make_genesis(coordinator, task)
    chain = MemoryChain(genesis)
    g = chain.tip
    deltas = [
        {
            "W": np.array([[0.5, -0.25, 1e-3], [0.0, 2.0, -1.5]], np.float32),
            "b": np.array([0.1, -0.1, 0.0], np.float32),
        },
        {
            "W": np.array([[-0.5, 0.75, 3e-3], [0.25, -1.0, 1.5]], np.float32),
            "b": np.array([0.2, 0.3, -0.4], np.float32),
        },
    ]
    certs = [
        issue_certificate(coordinator, task, d.public, quota=1000, expires_ms=T0 + 10**10, name=f"device-{i}")
        for i, d in enumerate(devices)
    ]
    updates = [
        make_update(devices[i], task, certs[i], g.hash, n, deltas[i], T0 + 1000 + i) for i, n in enumerate((30, 10))
    ]
    block1 = build_block(identity=miner, task=task, chain=chain, parent=g, updates=updates, now_ms=T0 + 2000)
    s1 = chain.add(block1, now=T0 + 2000)
    block2 = build_block(identity=miner, task=task, chain=chain, parent=s1, updates=[], now_ms=T0 + 3000)
    s2 = chain.add(block2, now=T0 + 3000)
    hard = Block.parse(block2, 1 << 30).header
    hard = dataclasses.replace(hard, target=1 << 240, nonce=0)

    sealer = Identity.from_seed(b"vector-seal-recipient")
    plaintext = updates[0]
    sealed = envelope.seal(sealer.public.box_pk, plaintext)

    frac = task.chain.frac_bits
    aggregation = []
    base = task.initial_model
    cases = [
        [(30, deltas[0]), (10, deltas[1])],
        [
            (
                1,
                {
                    "W": np.full((2, 3), 2.0**-25, np.float32),
                    "b": np.array([2.0**-24, -(2.0**-24), 3 * 2.0**-25], np.float32),
                },
            ),
            (1, {"W": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)}),
        ],
        [(7, deltas[1])],
    ]
    for case in cases:
        result = fedavg(base, case, frac)
        aggregation.append(
            {
                "frac_bits": frac,
                "base": _params(base, True),
                "updates": [{"n": n, "delta": _params(d, False)} for n, d in case],
                "result": _params(result, True),
                "model_hash": model_hash(result, frac).hex(),
            }
        )
        base = result

    leaves = [hashlib.sha256(bytes([i])).digest() for i in range(8)]
    retarget, long_chain = retarget_chain(task, miner, genesis, T0)
    return {
        "description": "BlockFL Edge protocol v1 test vectors; see PROTOCOL.md. All byte strings are hex.",
        "signature": [_signed(genesis), _signed(certs[0]), _signed(updates[0]), _signed(block1)],
        "block_header": [
            _header(s1.header, "block 1, mined"),
            _header(s2.header, "block 2, mined, no updates"),
            _header(hard, "block 2 with target 2^240 and nonce 0: not mined"),
        ],
        "merkle": [
            {"leaves": [x.hex() for x in leaves[:n]], "root": merkle_root(leaves[:n]).hex()} for n in (0, 1, 2, 3, 5, 8)
        ],
        "aggregation": aggregation,
        "aggregation_rules": _aggregation_rules(),
        "seal": [
            {
                "box_sk": bytes(sealer.box_key).hex(),
                "box_pk": sealer.public.box_pk.hex(),
                "sealed": sealed.hex(),
                "plaintext": plaintext.hex(),
            }
        ],
        "canonical_cbor": [
            {"value": v, "cbor": codec.encode(v).hex()}
            for v in [0, 23, 24, -1, 2**32, "update", {"b": 1, "a": [1, 2]}, {"ts": 1, "base": 2}, 1.5, 0.1]
        ],
        "chain": {"genesis": genesis.hex(), "blocks": [block1.hex(), block2.hex()], "task_id": task.id.hex()},
        "negative": update_negatives(task, devices[0], certs[0], certs[1], g.hash, deltas[0], T0 + 1000)
        + message_negatives(task, miner, devices[0], g.header, g.model, s2.hash)
        + block_negatives(task, miner, devices[0], MemoryChain(genesis), T0 + 5000)
        + state_negatives(task, coordinator, miner, devices, certs, [genesis, block1, block2], deltas[0], T0)
        + paillier_negatives(T0),
        "retarget": retarget,
        "sync": sync_vectors(task, miner, devices[0], coordinator, long_chain, T0),
        "paillier": paillier_vectors(T0),
        "enrolment": enrolment_vectors(T0),
    }


def render() -> str:
    return json.dumps(generate(), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
