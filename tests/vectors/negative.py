"""Negative vectors: messages that break one rule each, with the reason code a receiver MUST give.

Used by generate.py; every input is deterministic (Ed25519 signatures are). This first set covers
an update as a miner parses it (PROTOCOL.md §3 and §5: envelope, shape and certificate rules);
block and chain rules come with the chain vectors.
"""

from __future__ import annotations

import numpy as np

from edge_sdk.protocol import codec, envelope
from edge_sdk.protocol.block import make_update
from edge_sdk.protocol.identity import Identity


def _body(task, cert: bytes, base: bytes, samples: int, delta: dict, ts: int) -> dict:
    encoded = {name: codec.encode_array(np.asarray(v, dtype="<f4")) for name, v in delta.items()}
    return {"cert": cert, "task": task.id, "base": base, "samples": samples, "ts": ts, "delta": encoded}


def update_negatives(task, device: Identity, cert: bytes, other_cert: bytes, base: bytes, delta: dict, ts: int):
    """[{kind, input, reason, note}] for an update of `device` (certificate `cert`, quota 1000)."""
    good = make_update(device, task, cert, base, 10, delta, ts)
    signed = lambda body, kind="update": envelope.sign(device, kind, body)  # noqa: E731
    huge = {name: np.full(v.shape, 2.0 ** (task.chain.delta_bits + 1), np.float32) for name, v in delta.items()}
    nan = {name: np.full(v.shape, np.nan, np.float32) for name, v in delta.items()}
    wrong_shape = {name: np.zeros((*v.shape, 2), np.float32) for name, v in delta.items()}
    unknown_type = codec.encode([1, "nope", device.public.sign_pk, {}, device.sign(b"x")])
    version_two = envelope.signing_bytes(2, "update", device.public.sign_pk, {})
    cases = [
        (b"\xff", "bad_encoding", "not CBOR"),
        (codec.encode([2, "update", device.public.sign_pk, {}, device.sign(version_two)]), "bad_version", "version 2"),
        (unknown_type, "unknown_type", "type 'nope'"),
        (cert, "wrong_type", "a certificate where an update is expected"),
        (good[:-1] + bytes([good[-1] ^ 1]), "bad_signature", "the last signature byte flipped"),
        (signed({"task": task.id}), "bad_body", "a body with only 'task'"),
        (signed({**_body(task, cert, base, 10, delta, ts), "task": bytes(32)}), "wrong_task", "another task id"),
        (signed(_body(task, cert, base, 0, delta, ts)), "bad_sample_count", "samples 0"),
        (signed(_body(task, other_cert, base, 10, delta, ts)), "bad_cert", "another device's certificate"),
        (signed(_body(task, cert, base, 1001, delta, ts)), "over_quota", "1001 samples, quota 1000"),
        (signed(_body(task, cert, base, 10, wrong_shape, ts)), "bad_shape", "each parameter with an extra axis"),
        (signed(_body(task, cert, base, 10, nan, ts)), "non_finite", "NaN deltas"),
        (signed(_body(task, cert, base, 10, huge, ts)), "out_of_range", "|delta| = 2^(delta_bits + 1)"),
    ]
    return [{"kind": "update", "input": raw.hex(), "reason": reason, "note": note} for raw, reason, note in cases]


def message_negatives(task, miner: Identity, device: Identity, genesis_header, genesis_model, tip: bytes):
    """Sync requests, rejections, light blocks and alerts that break one rule each (§13)."""
    from edge_sdk.protocol import sync
    from edge_sdk.protocol.errors import Reason
    from edge_sdk.protocol.light import make_alert, make_light

    request = {"task": task.id, "locator": [tip], "max": 64, "snapshot": False}
    light = dict(model=genesis_model, changed=False, revocations=None)
    cases = [
        ("sync_request", envelope.sign(device, "sync_request", {**request, "max": 0}), "bad_body", "max 0"),
        ("sync_request", envelope.sign(device, "sync_request", {**request, "locator": [tip] * 65}), "bad_body",
         "65 locator hashes"),
        ("rejection", sync.make_rejection(device, task, bytes(32), Reason.STALE_BASE, tip), "bad_miner",
         "a rejection signed by a device"),
        ("light", make_light(device, task, genesis_header, **light), "bad_miner", "a light block signed by a device"),
        ("light", make_light(miner, task, genesis_header, **{**light, "changed": 1}), "bad_body", "changed = 1"),
        ("alert", make_alert(device, task, b"\x80", None), "bad_cert", "a device's alert without its certificate"),
    ]  # fmt: skip
    return [{"kind": kind, "input": raw.hex(), "reason": reason, "note": note} for kind, raw, reason, note in cases]


def block_negatives(task, miner: Identity, device: Identity, chain, now: int):
    """Blocks on the `chain` vector's genesis that break one header or body rule each (§7.4); each
    is mined (except the one with too little work) so that only its own rule fails."""
    import dataclasses

    from coordinator.miner.assembly import search_nonce
    from edge_sdk.chain.rules import expected_target
    from edge_sdk.protocol.block import block_template, seal_block
    from edge_sdk.protocol.extras import Extras
    from edge_sdk.protocol.work import meets_target

    parent = chain.tip
    header = block_template(
        parent=parent.header, task=task, miner=miner.public.sign_pk, update_bytes=[], extras=Extras(),
        commitment=parent.header.model_hash, timestamp_ms=now - 1000,
        target=expected_target(task, parent.header, chain),
    )  # fmt: skip

    def mined(**fields) -> bytes:
        return seal_block(miner, search_nonce(dataclasses.replace(header, **fields)), [], Extras())

    unmined = next(h for n in range(1000) if not meets_target((h := header.with_nonce(n)).hash, h.target))
    cases = [
        (mined(prev_hash=bytes(32)), "unknown_parent", "a parent nobody has"),
        (mined(task_id=bytes(32)), "wrong_task", "another task id"),
        (mined(height=2), "bad_height", "height 2 on genesis"),
        (mined(target=header.target >> 1), "bad_target", "half the target the rule gives"),
        (seal_block(miner, unmined, [], Extras()), "insufficient_work", "a nonce whose hash misses the target"),
        (mined(miner=device.public.sign_pk), "bad_miner", "a header miner outside the miner set"),
        (mined(timestamp_ms=parent.header.timestamp_ms - 1), "bad_timestamp", "older than its parent"),
        (seal_block(device, search_nonce(header), [], Extras()), "bad_miner", "signed by another key than the miner's"),
        (mined(merkle_root=bytes(32)), "bad_merkle_root", "a root that is not the body's"),
        (mined(model_hash=bytes(32)), "bad_model_hash", "a model hash that is not the parent's model (no updates)"),
    ]
    return [{"kind": "block", "input": raw.hex(), "reason": reason, "note": note} for raw, reason, note in cases]
