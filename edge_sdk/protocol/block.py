"""Headers, updates and blocks: their wire forms and how to make them.

These types only parse and build; the rules that relate a block to its parent live in
validation.py.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass, replace

import numpy as np

from edge_sdk.protocol import codec, envelope
from edge_sdk.protocol.cert import Certificate
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.extras import Extras
from edge_sdk.protocol.fixedpoint import model_hash
from edge_sdk.protocol.identity import Identity
from edge_sdk.protocol.merkle import merkle_root
from edge_sdk.protocol.packing import parse_ciphertexts
from edge_sdk.protocol.task import MAX_SAMPLES, Task

HEADER_VERSION = 1
# version, height, prev_hash, task_id, merkle_root, model_hash, miner, timestamp_ms, target, nonce
_HEADER = struct.Struct(">IQ32s32s32s32s32sQ32sQ")
HEADER_SIZE = _HEADER.size  # 220
NONCE_OFFSET = HEADER_SIZE - 8
ZERO_HASH = bytes(32)


@dataclass(frozen=True)
class Header:
    height: int
    prev_hash: bytes
    task_id: bytes
    merkle_root: bytes
    model_hash: bytes
    miner: bytes
    timestamp_ms: int
    target: int
    nonce: int = 0
    version: int = HEADER_VERSION

    def encode(self) -> bytes:
        return _HEADER.pack(
            self.version,
            self.height,
            self.prev_hash,
            self.task_id,
            self.merkle_root,
            self.model_hash,
            self.miner,
            self.timestamp_ms,
            self.target.to_bytes(32, "big"),
            self.nonce,
        )

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()

    def with_nonce(self, nonce: int) -> Header:
        return replace(self, nonce=nonce)

    @classmethod
    def decode(cls, data: bytes) -> Header:
        if not isinstance(data, bytes) or len(data) != HEADER_SIZE:
            raise ProtocolError(Reason.BAD_BODY, f"header must be {HEADER_SIZE} bytes")
        version, height, prev, task, root, mhash, miner, ts, target, nonce = _HEADER.unpack(data)
        if version != HEADER_VERSION:
            raise ProtocolError(Reason.BAD_VERSION, f"header version {version}")
        return cls(height, prev, task, root, mhash, miner, ts, int.from_bytes(target, "big"), nonce, version)


@dataclass(frozen=True)
class Update:
    """A device's signed model delta. `delta` holds float32 arrays keyed by parameter name."""

    envelope: envelope.Envelope
    task_id: bytes
    base: bytes
    samples: int
    timestamp_ms: int
    delta: dict[str, np.ndarray] | None  # plain and dp modes
    cert: Certificate
    ciphertexts: list[int] | None = None  # paillier modes

    @property
    def device(self) -> bytes:
        return self.envelope.signer

    @property
    def digest(self) -> bytes:
        return self.envelope.digest

    @classmethod
    def parse(cls, raw: bytes, task: Task) -> Update:
        """Verify signature and shape rules that need no chain state; raise ProtocolError."""
        env = envelope.open_envelope(raw, expect="update", max_bytes=task.chain.max_update_bytes)
        body = env.body
        keys = {"task", "base", "samples", "ts", "enc" if task.privacy.encrypted else "delta", "cert"}
        if not isinstance(body, dict) or set(body) != keys:
            raise ProtocolError(Reason.BAD_BODY, f"update body must have exactly {sorted(keys)}")
        if body["task"] != task.id:
            raise ProtocolError(Reason.WRONG_TASK, "update is for another task")
        if not isinstance(body["base"], bytes) or len(body["base"]) != 32:
            raise ProtocolError(Reason.BAD_BODY, "base must be a 32-byte block hash")
        samples, ts = body["samples"], body["ts"]
        if not isinstance(samples, int) or isinstance(samples, bool) or not 1 <= samples <= MAX_SAMPLES:
            raise ProtocolError(Reason.BAD_SAMPLE_COUNT, f"samples must be in [1, {MAX_SAMPLES}]")
        if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
            raise ProtocolError(Reason.BAD_BODY, "ts must be a non-negative integer")
        cert = Certificate.parse(body["cert"], task) if isinstance(body["cert"], bytes) else None
        if cert is None or cert.device != env.signer:
            raise ProtocolError(Reason.BAD_CERT, "the update's certificate is not its signer's")
        if samples > cert.quota:
            raise ProtocolError(Reason.OVER_QUOTA, f"{samples} samples > quota {cert.quota}")
        if ts > cert.expires_ms:
            raise ProtocolError(Reason.CERT_EXPIRED, "the certificate expired before the update was made")
        if task.privacy.encrypted:
            packing = task.privacy.packing
            if cert.quota > packing.max_quota:
                raise ProtocolError(Reason.OVER_QUOTA, "certificate quota above the Paillier headroom's max_quota")
            values = sum(math.prod(s) for s in task.shapes.values())
            return cls(
                env,
                body["task"],
                body["base"],
                samples,
                ts,
                None,
                cert,
                parse_ciphertexts(body["enc"], values, packing),
            )
        delta = _parse_delta(body["delta"], task)
        return cls(env, body["task"], body["base"], samples, ts, delta, cert)


def _parse_delta(value, task: Task) -> dict[str, np.ndarray]:
    shapes = task.shapes
    if not isinstance(value, dict) or set(value) != set(shapes):
        raise ProtocolError(Reason.BAD_SHAPE, "delta must name exactly the model's parameters")
    limit = float(1 << task.chain.delta_bits)
    delta = {}
    for name, item in value.items():
        if not isinstance(item, dict) or item.get("shape") != list(shapes[name]) or item.get("dtype") != "f4":
            raise ProtocolError(Reason.BAD_SHAPE, f"{name}: expected f4{list(shapes[name])}")
        try:  # its shape is the task's, which decode_array's default bound already held at genesis
            arr = codec.decode_array(item)
        except ProtocolError as exc:  # e.g. truncated data: the parameter does not have its shape
            raise ProtocolError(Reason.BAD_SHAPE, f"{name}: {exc.detail}") from None
        if not np.all(np.isfinite(arr)):
            raise ProtocolError(Reason.NON_FINITE, f"{name} has NaN or infinity")
        if arr.size and float(np.max(np.abs(arr))) >= limit:
            raise ProtocolError(Reason.OUT_OF_RANGE, f"{name}: |delta| must be < 2^{task.chain.delta_bits}")
        delta[name] = arr
    return delta


def make_update(
    identity: Identity,
    task: Task,
    cert: bytes,
    base: bytes,
    samples: int,
    delta: dict[str, np.ndarray] | None,
    timestamp_ms: int,
    ciphertexts: list[bytes] | None = None,
) -> bytes:
    """A signed update: float32 `delta` (plain, dp) or Paillier `ciphertexts` (paillier modes)."""
    body = {"cert": cert, "task": task.id, "base": base, "samples": int(samples), "ts": int(timestamp_ms)}
    if ciphertexts is not None:
        body["enc"] = list(ciphertexts)
    else:
        body["delta"] = {name: codec.encode_array(np.asarray(v, dtype="<f4")) for name, v in delta.items()}
    return envelope.sign(identity, "update", body)


@dataclass(frozen=True)
class Block:
    """A parsed block: its header, the raw update envelopes it records (in order) and its extras."""

    envelope: envelope.Envelope
    header: Header
    update_bytes: tuple[bytes, ...]
    extras: Extras = Extras()

    @property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def raw(self) -> bytes:
        return self.envelope.raw

    @classmethod
    def parse(cls, raw: bytes, max_bytes: int) -> Block:
        env = envelope.open_envelope(raw, expect="block", max_bytes=max_bytes)
        body = env.body
        if not isinstance(body, dict) or set(body) != {"header", "updates", "extras"}:
            raise ProtocolError(Reason.BAD_BODY, "block body must have exactly header, updates, extras")
        updates = body["updates"]
        if not isinstance(updates, list) or not all(isinstance(u, bytes) for u in updates):
            raise ProtocolError(Reason.BAD_BODY, "updates must be a list of byte strings")
        header = Header.decode(body["header"])
        return cls(env, header, tuple(updates), Extras.from_wire(body["extras"], len(updates)))


def body_root(update_bytes, extras: Extras) -> bytes:
    """The header's merkle_root: leaves are each update's SHA-256, then the extras' leaf."""
    return merkle_root([*(hashlib.sha256(u).digest() for u in update_bytes), extras.leaf])


def block_template(
    *,
    parent: Header,
    task: Task,
    miner: bytes,
    update_bytes,
    extras: Extras,
    commitment: bytes,
    timestamp_ms: int,
    target: int,
) -> Header:
    """Header of a block on `parent` (nonce 0, not yet mined); `commitment` from aggregation.apply_updates."""
    return Header(
        height=parent.height + 1,
        prev_hash=parent.hash,
        task_id=task.id,
        merkle_root=body_root(update_bytes, extras),
        model_hash=commitment,
        miner=miner,
        timestamp_ms=timestamp_ms,
        target=target,
    )


def seal_block(identity: Identity, header: Header, update_bytes, extras: Extras) -> bytes:
    """Wire bytes of a mined block, signed by its miner."""
    body = {"header": header.encode(), "updates": list(update_bytes), "extras": extras.to_wire()}
    return envelope.sign(identity, "block", body)


def make_genesis(identity: Identity, task: Task) -> bytes:
    """The genesis block: height 0, signed by the coordinator named in the task, carrying the task."""
    header = Header(
        height=0,
        prev_hash=ZERO_HASH,
        task_id=task.id,
        merkle_root=merkle_root([]),
        model_hash=model_hash(task.initial_model, task.chain.frac_bits),
        miner=task.coordinator,
        timestamp_ms=task.created_ms,
        target=task.chain.initial_target,
    )
    return envelope.sign(identity, "genesis", {"header": header.encode(), "task": task.to_wire()})
