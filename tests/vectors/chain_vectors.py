"""Vectors that need chain state: a chain long enough to retarget, sync and snapshot answers on it,
a rejection and a revocation list, and negative vectors for the rules that relate a message to a
chain (stale bases, revocations, duplicates, extras, evidence, a miner's replay rule, a light
device's alerted block).

Used by generate.py; everything is deterministic (Ed25519 signatures are, timestamps are fixed,
nonces are searched from 0).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from coordinator.miner.assembly import build_block, search_nonce
from edge_sdk.chain.memory import MemoryChain
from edge_sdk.chain.rules import expected_target
from edge_sdk.protocol import envelope, sync
from edge_sdk.protocol.block import Header, block_template, make_update, seal_block
from edge_sdk.protocol.cert import issue_certificate
from edge_sdk.protocol.errors import Reason
from edge_sdk.protocol.extras import Evidence, Extras
from edge_sdk.protocol.light import make_alert, make_light
from edge_sdk.protocol.revocations import make_revocations
from edge_sdk.protocol.work import is_retarget_height

# Block intervals (ms) of the retarget chain: three fast, three slow, then slower ones until the
# target reaches pow_limit.
INTERVALS = [100, 100, 100, 3000, 3000, 3000] + [9000] * 10


def retarget_chain(task, miner, genesis: bytes, t0: int) -> tuple[dict, MemoryChain]:
    """Sixteen empty blocks on the vector genesis whose timestamps move the target at every
    retarget height (4, 7, 10, 13 and 16 with retarget_window 2): fast blocks make it harder
    (the factor clamped at 1/4), slow ones easier (clamped at 4, then at pow_limit)."""
    chain = MemoryChain(genesis)
    blocks, now = [], t0
    for interval in INTERVALS:
        now += interval
        raw = build_block(identity=miner, task=task, chain=chain, parent=chain.tip, updates=[], now_ms=now)
        chain.add(raw, now=now)
        blocks.append(raw)
    states = [chain.get(h.hash) for h in chain.branch(chain.tip.hash)[1:]]
    vector = {
        "note": "sixteen empty blocks on the chain vector's genesis; validate each at its own timestamp",
        "blocks": [b.hex() for b in blocks],
        "timestamps_ms": [s.header.timestamp_ms for s in states],
        "targets": [f"{s.header.target:064x}" for s in states],
        "retarget_heights": [
            s.header.height for s in states if is_retarget_height(s.header.height, task.chain.retarget_window)
        ],
    }
    return vector, chain


def sync_vectors(task, miner, device, coordinator, chain: MemoryChain, t0: int) -> dict:
    """A device at height 5 of the retarget chain asks for the rest; a new device asks for a
    snapshot; a miner's rejection notice; the coordinator's revocation list."""
    best = [h.hash for h in chain.branch(chain.tip.hash)]
    request = sync.make_request(device, task, best[:6])
    after = sync.blocks_after(best, sync.parse_request(request, task))
    response = sync.make_response(miner, task, [chain.raw[h] for h in after])
    snap_request = sync.make_request(device, task, best[:1], snapshot=True)
    tip = chain.tip
    snapshot = sync.Snapshot(
        [chain.header(h).encode() for h in best[1:]], tip.model, tip.base, tip.revocations.raw or None
    )
    snap_response = sync.make_response(miner, task, [], snapshot)
    digest = bytes(range(32))
    rejection = sync.make_rejection(miner, task, digest, Reason.STALE_BASE, tip.hash)
    revoked = sorted([device.public.sign_pk, bytes(32)])
    revocations = make_revocations(coordinator, task, revoked, t0 + 500)
    return {
        "request": {
            "note": "a device holding heights 0-5 of the retarget chain (16 blocks)",
            "input": request.hex(),
            "locator": [h.hex() for h in best[:6][::-1]],
            "max": sync.MAX_SYNC_BLOCKS,
            "snapshot": False,
            "blocks_after": [h.hex() for h in after],
        },
        "response": {"note": "the miner's answer: blocks 6-16 in chain order", "input": response.hex()},
        "snapshot_request": {
            "note": "a device holding only genesis asks for a snapshot",
            "input": snap_request.hex(),
            "locator": [best[0].hex()],
        },
        "snapshot_response": {
            "note": "headers 1-16, the tip's model (fixed point), its round base, no revocations",
            "input": snap_response.hex(),
            "tip": tip.hash.hex(),
            "base": tip.base.hex(),
            "model_hash": tip.header.model_hash.hex(),
        },
        "rejection": {
            "input": rejection.hex(),
            "digest": digest.hex(),
            "reason": "stale_base",
            "tip": tip.hash.hex(),
        },
        "revocations": {
            "input": revocations.hex(),
            "devices": [d.hex() for d in revoked],
            "ts": t0 + 500,
        },
    }


class _Forge:
    """Blocks on a parent of the vector chain with chosen updates and extras, mined, so that only
    the rule a vector is about fails."""

    def __init__(self, task, miner, chain: MemoryChain):
        self.task, self.miner, self.chain = task, miner, chain

    def block(self, parent, updates, extras=Extras(), *, now: int, commitment: bytes | None = None) -> bytes:
        header = block_template(
            parent=parent.header, task=self.task, miner=self.miner.public.sign_pk, update_bytes=updates,
            extras=extras, commitment=commitment or parent.header.model_hash, timestamp_ms=now,
            target=expected_target(self.task, parent.header, self.chain),
        )  # fmt: skip
        return seal_block(self.miner, search_nonce(header), updates, extras)


def state_negatives(task, coordinator, miner, devices, certs, chain_blocks, delta, t0: int) -> list[dict]:
    """Negative vectors that need chain state: `after` lists blocks (hex) to add to the chain
    vector's genesis first; every `block` is validated at t0 + 5 s (like the other block vectors)."""
    genesis_chain = MemoryChain(chain_blocks[0])
    g = genesis_chain.tip
    forge = _Forge(task, miner, genesis_chain)
    upd = lambda i, base, n=10, ts=t0 + 1000, cert=None, d=delta: make_update(  # noqa: E731
        devices[i], task, cert or certs[i], base, n, d, ts
    )
    now = t0 + 4000
    out = []

    def add(kind, raw, reason, note, after=(), **extra):
        out.append({"kind": kind, "input": raw.hex(), "reason": reason, "note": note,
                    "after": [b.hex() for b in after], **extra})  # fmt: skip

    block1 = chain_blocks[1]
    after1 = MemoryChain(chain_blocks[0])
    s1 = after1.add(block1, now=t0 + 5000)
    add("block", _Forge(task, miner, after1).block(s1, [upd(2, g.hash)], now=now), "stale_base",
        "on block 1, an update whose base is genesis", after=[block1])  # fmt: skip

    revocations = make_revocations(coordinator, task, [devices[2].public.sign_pk], t0 + 500)
    rv_block = forge.block(g, [], Extras(revocations=revocations), now=t0 + 1500)
    rv_chain = MemoryChain(chain_blocks[0])
    rv_state = rv_chain.add(rv_block, now=t0 + 5000)
    add("block", _Forge(task, miner, rv_chain).block(rv_state, [upd(2, g.hash)], now=now), "revoked",
        "device 2's update after a block whose revocation list names device 2", after=[rv_block])  # fmt: skip

    two = [upd(0, g.hash), upd(0, g.hash, n=11)]
    add("block", forge.block(g, two, now=now), "duplicate_device", "two updates of device 0 (valid apart)")
    nan = {k: np.full(v.shape, np.nan, np.float32) for k, v in delta.items()}
    add(
        "block",
        forge.block(g, [upd(0, g.hash, d=nan)], now=now),
        "bad_update",
        "an update with NaN deltas (bad_update detail: 'update 0: non_finite: ...')",
    )
    add("block", forge.block(g, [b"\x00"] * (task.chain.max_updates + 1), now=now), "too_many_updates",
        f"max_updates + 1 = {task.chain.max_updates + 1} one-byte updates (counted before parsing)")  # fmt: skip
    bad_list = make_revocations(devices[0], task, [devices[1].public.sign_pk], t0 + 500)
    add("block", forge.block(g, [], Extras(revocations=bad_list), now=now), "bad_revocations",
        "a revocation list signed by a device")  # fmt: skip
    add("block", forge.block(g, [], Extras(excluded=(3,)), now=now), "bad_extras",
        "excluded names update 3 of a block with none")  # fmt: skip
    same = upd(0, g.hash)
    add("block", forge.block(g, [], Extras(evidence=(Evidence("double-update", (same, same)),)), now=now),
        "bad_evidence", "double-update evidence holding one update twice")  # fmt: skip
    add("block", forge.block(g, [upd(0, g.hash)], Extras(excluded=(0,)), now=now), "bad_exclusions",
        "excludes the only update, which the task's rule keeps")  # fmt: skip
    short = issue_certificate(coordinator, task, devices[1].public, quota=1000, expires_ms=t0 + 1500, name="short")
    add("block", forge.block(g, [upd(1, g.hash, cert=short)], now=now), "cert_expired",
        "an update of t0 + 1 s, its certificate expired at t0 + 1.5 s, in a block at t0 + 4 s")  # fmt: skip

    genesis_env = envelope.open_envelope(chain_blocks[0], expect="genesis")
    wrong = dict(genesis_env.body)
    header = dataclasses.replace(_decode_header(wrong["header"]), timestamp_ms=task.created_ms + 1)
    add("genesis", envelope.sign(coordinator, "genesis", {**wrong, "header": header.encode()}), "bad_genesis",
        "the chain vector's genesis with timestamp created_ms + 1")  # fmt: skip
    add("sealed_update", bytes(80), "bad_seal", "80 zero bytes: no sealed box opens them",
        box_sk=bytes(miner.box_key).hex())  # fmt: skip
    padded = envelope.sign(devices[0], "sync_request", {"task": task.id, "locator": [], "max": 1, "snapshot": False,
                                                         "pad": bytes(sync.MAX_REQUEST_BYTES)})  # fmt: skip
    add("sync_request", padded, "too_large", "a sync request of more than 8 KiB (checked before decoding)")
    add("miner_update", envelope.open_envelope(block1, expect="block").body["updates"][0], "replay",
        "update 0 of block 1 offered again to a miner whose tip is block 2 (sealed to it at test time)",
        after=chain_blocks[1:], box_sk=bytes(miner.box_key).hex())  # fmt: skip

    bad_hash = forge.block(g, [], now=now, commitment=bytes(32))
    forged_header = _decode_header(envelope.open_envelope(bad_hash, expect="block").body["header"])
    alert = make_alert(miner, task, bad_hash)
    light = make_light(miner, task, forged_header, model=g.model, changed=False, revocations=None)
    add("light_after_alert", light, "known_invalid",
        "the light block of a block (model hash zero) that the alert before it carries", alert=alert.hex())  # fmt: skip
    return out


def _decode_header(raw: bytes) -> Header:
    return Header.decode(raw)
