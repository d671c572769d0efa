"""The coordinator's signed list of revoked devices (PROTOCOL.md 5.2).

Published retained for miners to stop admitting, and carried in blocks (`extras.revocations`),
where it becomes a block rule: from the block after the one that carries it, no block may
include an update of a listed device.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_sdk.protocol import envelope
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.identity import Identity
from edge_sdk.protocol.task import Task

MAX_REVOCATIONS_BYTES = 1 << 20


@dataclass(frozen=True)
class RevocationList:
    """A verified list: the revoked signing keys, the coordinator's time (a newer list has a larger
    `ts` and replaces an older one), and the envelope as signed."""

    devices: frozenset[bytes]
    ts: int
    raw: bytes


NO_REVOCATIONS = RevocationList(frozenset(), -1, b"")


def make_revocations(coordinator: Identity, task: Task, devices: list[bytes], ts_ms: int) -> bytes:
    return envelope.sign(coordinator, "revocations", {"task": task.id, "devices": list(devices), "ts": int(ts_ms)})


def parse_revocations(raw: bytes, task: Task) -> RevocationList:
    """Only the task's coordinator may revoke."""
    env = envelope.open_envelope(raw, expect="revocations", max_bytes=MAX_REVOCATIONS_BYTES)
    body = env.body
    if env.signer != task.coordinator:
        raise ProtocolError(Reason.BAD_BODY, "revocations not signed by this task's coordinator")
    if not isinstance(body, dict) or set(body) != {"task", "devices", "ts"} or body["task"] != task.id:
        raise ProtocolError(Reason.BAD_BODY, "revocations must have exactly task (this one), devices, ts")
    devices, ts = body["devices"], body["ts"]
    if not isinstance(devices, list) or not all(isinstance(d, bytes) and len(d) == 32 for d in devices):
        raise ProtocolError(Reason.BAD_BODY, "devices must be a list of 32-byte signing keys")
    if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
        raise ProtocolError(Reason.BAD_BODY, "ts must be a non-negative integer")
    return RevocationList(frozenset(devices), ts, raw)
