"""The coordinator's signed list of revoked devices (PROTOCOL.md 5.2), published retained."""

from __future__ import annotations

from edge_sdk.protocol import envelope
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.identity import Identity
from edge_sdk.protocol.task import Task

MAX_REVOCATIONS_BYTES = 1 << 20


def make_revocations(coordinator: Identity, task: Task, devices: list[bytes], ts_ms: int) -> bytes:
    return envelope.sign(coordinator, "revocations", {"task": task.id, "devices": list(devices), "ts": int(ts_ms)})


def parse_revocations(raw: bytes, task: Task) -> frozenset[bytes]:
    """The revoked devices' signing keys; only the task's coordinator may revoke."""
    env = envelope.open_envelope(raw, expect="revocations", max_bytes=MAX_REVOCATIONS_BYTES)
    body = env.body
    if env.signer != task.coordinator:
        raise ProtocolError(Reason.BAD_BODY, "revocations not signed by this task's coordinator")
    if not isinstance(body, dict) or set(body) != {"task", "devices", "ts"} or body["task"] != task.id:
        raise ProtocolError(Reason.BAD_BODY, "revocations must have exactly task (this one), devices, ts")
    devices = body["devices"]
    if not isinstance(devices, list) or not all(isinstance(d, bytes) and len(d) == 32 for d in devices):
        raise ProtocolError(Reason.BAD_BODY, "devices must be a list of 32-byte signing keys")
    return frozenset(devices)
