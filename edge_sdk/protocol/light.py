"""Light blocks and alerts: how a device follows the chain without downloading every update.

A light block is a miner's signed digest of one of its blocks: the header, and what the header's
model hash commits to — the new global model (plain, dp) or the encrypted aggregate (Paillier) —
plus the two facts a light device cannot recompute without the updates: whether the block
changed the model (it becomes the round's base) and the revocation list it carries. Its size
does not grow with the number of updates.

An alert is a full node's signed claim that a block whose header is valid (proof-of-work and
all) breaks a block rule; it carries the whole block, so a light device checks the claim itself
instead of trusting the accuser. The shapes are checked here; the rules in chain/light_rules.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_sdk.protocol import envelope
from edge_sdk.protocol.block import HEADER_SIZE, Header
from edge_sdk.protocol.cert import Certificate
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.fixedpoint import Model, decode_model, encode_model
from edge_sdk.protocol.identity import Identity
from edge_sdk.protocol.packing import parse_ciphertexts
from edge_sdk.protocol.task import Task

LIGHT_KEYS = frozenset({"task", "header", "model", "aggregate", "changed", "revocations"})
ALERT_KEYS = frozenset({"task", "block", "cert"})
MAX_REVOCATIONS_BYTES = 1024 * 1024
ALERT_OVERHEAD = 16 * 1024  # envelope, certificate, CBOR heads


@dataclass(frozen=True)
class LightBlock:
    header: Header
    model: Model | None  # plain and dp modes
    ciphertexts: list[int] | None  # Paillier modes, a block with updates: the encrypted aggregate
    weight: int  # its total weight (0 without an aggregate)
    changed: bool
    revocations: bytes | None
    signer: bytes


def make_light(
    identity: Identity,
    task: Task,
    header: Header,
    *,
    model: Model | None,
    aggregate=None,
    changed: bool,
    revocations: bytes | None,
) -> bytes:
    """`aggregate` (chain.opening.Aggregate) in Paillier modes for a block with updates, else `model`."""
    width = task.privacy.packing.ciphertext_bytes if task.privacy.encrypted else 0
    body = {
        "task": task.id,
        "header": header.encode(),
        "model": None if model is None or task.privacy.encrypted else encode_model(model, task.chain.frac_bits),
        "aggregate": None
        if aggregate is None
        else {"ciphertexts": [c.to_bytes(width, "big") for c in aggregate.ciphertexts], "weight": aggregate.weight},
        "changed": changed,
        "revocations": revocations,
    }
    return envelope.sign(identity, "light", body)


def max_light_bytes(task: Task) -> int:
    """A light block holds one model or one aggregate: bounded by the task, not by the updates."""
    values = sum(v.size for v in task.initial_model.values())
    payload = values * 9 + 64 * len(task.initial_model)  # int64 arrays with their CBOR heads
    if task.privacy.encrypted:
        packing = task.privacy.packing
        payload = max(payload, packing.ciphertext_count(values) * (packing.ciphertext_bytes + 9))
    return payload + HEADER_SIZE + MAX_REVOCATIONS_BYTES + 4096


def parse_light(raw: bytes, task: Task) -> LightBlock:
    """Signature and shape: signed by a miner of the task, for this task, a model of the task's
    shapes (plain, dp) or an aggregate of the task's ciphertext count (Paillier)."""
    env = envelope.open_envelope(raw, expect="light", max_bytes=max_light_bytes(task))
    body = env.body
    if not isinstance(body, dict) or set(body) != LIGHT_KEYS or body["task"] != task.id:
        raise ProtocolError(Reason.BAD_BODY, f"light block must have exactly {sorted(LIGHT_KEYS)}, for this task")
    if task.miner(env.signer) is None:
        raise ProtocolError(Reason.BAD_MINER, "light block from a node outside the miner set")
    if not isinstance(body["header"], bytes) or len(body["header"]) != HEADER_SIZE:
        raise ProtocolError(Reason.BAD_BODY, f"header must be {HEADER_SIZE} bytes")
    header = Header.decode(body["header"])
    if not isinstance(body["changed"], bool):
        raise ProtocolError(Reason.BAD_BODY, "changed must be a boolean")
    revocations = body["revocations"]
    if revocations is not None and not (isinstance(revocations, bytes) and len(revocations) <= MAX_REVOCATIONS_BYTES):
        raise ProtocolError(Reason.BAD_BODY, "revocations must be a byte string or null")
    model, ciphertexts, weight = None, None, 0
    if task.privacy.encrypted:
        if body["model"] is not None:
            raise ProtocolError(Reason.BAD_BODY, "a Paillier light block carries no model")
        if body["aggregate"] is not None:
            ciphertexts, weight = _aggregate(body["aggregate"], task)
    else:
        if body["aggregate"] is not None or body["model"] is None:
            raise ProtocolError(Reason.BAD_BODY, "a light block carries the model (and no aggregate)")
        model = _model(body["model"], task)
    return LightBlock(header, model, ciphertexts, weight, body["changed"], revocations, env.signer)


def _model(value, task: Task) -> Model:
    model, frac_bits = decode_model(value)
    if frac_bits != task.chain.frac_bits:
        raise ProtocolError(Reason.BAD_BODY, "the model has the wrong frac_bits")
    shapes = {name: tuple(v.shape) for name, v in model.items()}
    if shapes != {name: tuple(s) for name, s in task.shapes.items()}:
        raise ProtocolError(Reason.BAD_SHAPE, "the model's parameters are not the task's")
    return model


def _aggregate(value, task: Task) -> tuple[list[int], int]:
    if not isinstance(value, dict) or set(value) != {"ciphertexts", "weight"}:
        raise ProtocolError(Reason.BAD_BODY, "aggregate must have exactly ciphertexts, weight")
    weight = value["weight"]
    if not isinstance(weight, int) or isinstance(weight, bool) or weight < 1:
        raise ProtocolError(Reason.BAD_BODY, "aggregate weight must be a positive integer")
    values = sum(v.size for v in task.initial_model.values())
    return parse_ciphertexts(value["ciphertexts"], values, task.privacy.packing), weight


@dataclass(frozen=True)
class Alert:
    block: bytes
    signer: bytes


def make_alert(identity: Identity, task: Task, block: bytes, cert: bytes | None = None) -> bytes:
    """A miner alerts with cert None; a device that verifies in full attaches its certificate."""
    return envelope.sign(identity, "alert", {"task": task.id, "block": block, "cert": cert})


def max_alert_bytes(task: Task) -> int:
    return task.chain.max_block_bytes + ALERT_OVERHEAD


def parse_alert(raw: bytes, task: Task) -> Alert:
    """Signed by a miner of the task, or by a device with its certificate from the coordinator."""
    env = envelope.open_envelope(raw, expect="alert", max_bytes=max_alert_bytes(task))
    body = env.body
    if not isinstance(body, dict) or set(body) != ALERT_KEYS or body["task"] != task.id:
        raise ProtocolError(Reason.BAD_BODY, f"alert must have exactly {sorted(ALERT_KEYS)}, for this task")
    if not isinstance(body["block"], bytes):
        raise ProtocolError(Reason.BAD_BODY, "alert block must be a byte string")
    if task.miner(env.signer) is None:
        cert = body["cert"]
        if not isinstance(cert, bytes) or Certificate.parse(cert, task).device != env.signer:
            raise ProtocolError(Reason.BAD_CERT, "an alert comes from a miner or a device with its certificate")
    return Alert(body["block"], env.signer)
