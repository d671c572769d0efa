"""Sync (catching up on blocks) and rejection notices.

A node that is missing blocks sends a `sync_request` to one miner, with MQTT 5 response topic
and correlation data; the miner answers with a `sync_response` holding the blocks of its best
chain after the newest hash of the request's locator it knows. A miner that refuses an update
tells its device why with a `rejection`, so a device with a stale base knows to catch up.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from edge_sdk.protocol import envelope
from edge_sdk.protocol.block import HEADER_SIZE
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.fixedpoint import Model, decode_model, encode_model
from edge_sdk.protocol.identity import Identity
from edge_sdk.protocol.task import Task

MAX_LOCATOR = 64
MAX_SYNC_BLOCKS = 64
MAX_REQUEST_BYTES = 8192
MAX_REJECTION_BYTES = 4096
_REASONS = frozenset(r.value for r in Reason)


def locator(best_chain_hashes: list[bytes]) -> list[bytes]:
    """Hashes from the tip back: the last 8, then every 2^k-th, then genesis (at most 64)."""
    hashes = best_chain_hashes[::-1]
    picked, step, i = [], 1, 0
    while i < len(hashes) and len(picked) < MAX_LOCATOR - 1:
        picked.append(hashes[i])
        if len(picked) >= 8:
            step *= 2
        i += step
    if hashes and picked[-1] != hashes[-1]:
        picked.append(hashes[-1])
    return picked


def make_request(
    identity: Identity,
    task: Task,
    best_chain_hashes: list[bytes],
    max_blocks: int = MAX_SYNC_BLOCKS,
    snapshot: bool = False,
) -> bytes:
    """`snapshot`: a node with nothing beyond genesis asks for headers and the tip's model instead of every block."""
    body = {"task": task.id, "locator": locator(best_chain_hashes), "max": max_blocks, "snapshot": snapshot}
    return envelope.sign(identity, "sync_request", body)


@dataclass(frozen=True)
class Request:
    requester: bytes
    locator: list[bytes]
    max_blocks: int
    snapshot: bool


def parse_request(raw: bytes, task: Task) -> Request:
    env = envelope.open_envelope(raw, expect="sync_request", max_bytes=MAX_REQUEST_BYTES)
    body = env.body
    if (
        not isinstance(body, dict)
        or set(body) != {"task", "locator", "max", "snapshot"}
        or not isinstance(body["snapshot"], bool)
    ):
        raise ProtocolError(Reason.BAD_BODY, "sync_request must have exactly task, locator, max, snapshot (bool)")
    if body["task"] != task.id:
        raise ProtocolError(Reason.WRONG_TASK, "sync request for another task")
    loc, most = body["locator"], body["max"]
    if (
        not isinstance(loc, list)
        or len(loc) > MAX_LOCATOR
        or not all(isinstance(h, bytes) and len(h) == 32 for h in loc)
    ):
        raise ProtocolError(Reason.BAD_BODY, f"locator must be at most {MAX_LOCATOR} 32-byte hashes")
    if not isinstance(most, int) or isinstance(most, bool) or not 1 <= most <= MAX_SYNC_BLOCKS:
        raise ProtocolError(Reason.BAD_BODY, f"max must be in [1, {MAX_SYNC_BLOCKS}]")
    return Request(env.signer, loc, most, body["snapshot"])


def blocks_after(best_chain_hashes: list[bytes], request: Request) -> list[bytes]:
    """Hashes of the best chain after the newest locator hash on it (from genesis if none is)."""
    position = {h: i for i, h in enumerate(best_chain_hashes)}
    start = next((position[h] for h in request.locator if h in position), 0)
    return best_chain_hashes[start + 1 : start + 1 + request.max_blocks]


def wants_snapshot(request: Request, best_chain_hashes: list[bytes]) -> bool:
    """Answer with a snapshot when asked and the requester has nothing beyond genesis of this chain."""
    known = next((h for h in request.locator if h in set(best_chain_hashes)), None)
    return request.snapshot and len(best_chain_hashes) > 2 and known in (None, best_chain_hashes[0])


@dataclass(frozen=True)
class Snapshot:
    """What a late joiner starts from instead of every block: the headers from height 1 to a tip
    (encoded; decoded on use), the global model after it, its round base (the last block that
    changed the model) and the revocation list in effect there."""

    headers: list[bytes]
    model: Model
    base: bytes
    revocations: bytes | None

    @property
    def tip(self) -> bytes:
        return hashlib.sha256(self.headers[-1]).digest()

    @property
    def agreement_key(self) -> tuple:
        """What independent miners must agree on before a joiner trusts a snapshot."""
        return (self.tip, self.base, self.revocations)


def make_response(identity: Identity, task: Task, blocks: list[bytes], snapshot: Snapshot | None = None) -> bytes:
    body = {"task": task.id, "blocks": blocks}
    if snapshot is not None:
        body["snapshot"] = {
            "headers": snapshot.headers,
            "model": encode_model(snapshot.model, task.chain.frac_bits),
            "base": snapshot.base,
            "revocations": snapshot.revocations,
        }
    return envelope.sign(identity, "sync_response", body)


@dataclass(frozen=True)
class Response:
    blocks: list[bytes]
    snapshot: Snapshot | None = None
    signer: bytes = b""  # the answering miner


def parse_response(raw: bytes, task: Task) -> Response:
    env = envelope.open_envelope(raw, expect="sync_response", max_bytes=max_response_bytes(task))
    return _response(env, task)


def max_response_bytes(task: Task) -> int:
    return MAX_SYNC_BLOCKS * task.chain.max_block_bytes


def _response(env: envelope.Envelope, task: Task) -> Response:
    body = env.body
    keys = ({"task", "blocks"}, {"task", "blocks", "snapshot"})
    if not isinstance(body, dict) or set(body) not in keys or body["task"] != task.id:
        raise ProtocolError(Reason.BAD_BODY, "sync_response must have task (this one), blocks, and optionally snapshot")
    if task.miner(env.signer) is None:
        raise ProtocolError(Reason.BAD_MINER, "sync response from a node outside the miner set")
    if not isinstance(body["blocks"], list) or not all(isinstance(b, bytes) for b in body["blocks"]):
        raise ProtocolError(Reason.BAD_BODY, "blocks must be a list of byte strings")
    if "snapshot" not in body:
        return Response(body["blocks"], signer=env.signer)
    snap = body["snapshot"]
    if not isinstance(snap, dict) or set(snap) != {"headers", "model", "base", "revocations"}:
        raise ProtocolError(Reason.BAD_BODY, "snapshot must have exactly headers, model, base, revocations")
    if not isinstance(snap["headers"], list) or not snap["headers"]:
        raise ProtocolError(Reason.BAD_BODY, "headers must be a non-empty list")
    if not all(isinstance(h, bytes) and len(h) == HEADER_SIZE for h in snap["headers"]):
        raise ProtocolError(Reason.BAD_BODY, f"headers must be {HEADER_SIZE}-byte strings")
    if not isinstance(snap["base"], bytes) or len(snap["base"]) != 32:
        raise ProtocolError(Reason.BAD_BODY, "snapshot base must be a 32-byte block hash")
    if snap["revocations"] is not None and not isinstance(snap["revocations"], bytes):
        raise ProtocolError(Reason.BAD_BODY, "snapshot revocations must be a byte string or null")
    model, frac_bits = decode_model(snap["model"])
    if frac_bits != task.chain.frac_bits:
        raise ProtocolError(Reason.BAD_BODY, "snapshot model has the wrong frac_bits")
    return Response(body["blocks"], Snapshot(snap["headers"], model, snap["base"], snap["revocations"]), env.signer)


@dataclass(frozen=True)
class Rejection:
    miner: bytes
    digest: bytes
    reason: str
    tip: bytes


def make_rejection(identity: Identity, task: Task, digest: bytes, reason: Reason, tip: bytes) -> bytes:
    return envelope.sign(identity, "rejection", {"task": task.id, "digest": digest, "reason": reason.value, "tip": tip})


def parse_rejection(raw: bytes, task: Task) -> Rejection:
    return _rejection(envelope.open_envelope(raw, expect="rejection", max_bytes=MAX_REJECTION_BYTES), task)


def _rejection(env: envelope.Envelope, task: Task) -> Rejection:
    body = env.body
    if not isinstance(body, dict) or set(body) != {"task", "digest", "reason", "tip"} or body["task"] != task.id:
        raise ProtocolError(Reason.BAD_BODY, "rejection must have exactly task (this one), digest, reason, tip")
    if task.miner(env.signer) is None:
        raise ProtocolError(Reason.BAD_MINER, "rejection from a node outside the miner set")
    if not all(isinstance(body[k], bytes) and len(body[k]) == 32 for k in ("digest", "tip")):
        raise ProtocolError(Reason.BAD_BODY, "digest and tip must be 32 bytes")
    reason = (
        body["reason"] if isinstance(body["reason"], str) and body["reason"] in _REASONS else "unknown"
    )  # a code this node does not know
    return Rejection(env.signer, body["digest"], reason, body["tip"])


def parse_reply(raw: bytes, task: Task) -> Response | Rejection:
    """What arrives on a node's reply topic: a sync response or a rejection notice (one signature check)."""
    env = envelope.open_envelope(raw, max_bytes=max_response_bytes(task))
    if env.type == "sync_response":
        return _response(env, task)
    if env.type == "rejection":
        if len(raw) > MAX_REJECTION_BYTES:
            raise ProtocolError(Reason.TOO_LARGE, f"rejection of {len(raw)} bytes")
        return _rejection(env, task)
    raise ProtocolError(Reason.WRONG_TYPE, f"{env.type} on a reply topic")
