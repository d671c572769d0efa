"""Device certificates: the coordinator's signed statement that a device may take part.

Every update carries its device's certificate, so any node holding the task manifest can check
that an update comes from an enrolled device, within its sample quota and before expiry, without
asking anyone.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_sdk.protocol import envelope
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.identity import Identity, PublicIdentity, node_id
from edge_sdk.protocol.task import Task

MAX_CERT_BYTES = 4096


@dataclass(frozen=True)
class Certificate:
    envelope: envelope.Envelope
    task_id: bytes
    device: bytes  # Ed25519 public key
    box_pk: bytes  # X25519 public key
    quota: int  # most samples one update may claim
    expires_ms: int
    name: str

    @property
    def device_id(self) -> str:
        return node_id(self.device)

    @classmethod
    def parse(cls, raw: bytes, task: Task) -> Certificate:
        try:
            env = envelope.open_envelope(raw, expect="cert", max_bytes=MAX_CERT_BYTES)
        except ProtocolError as exc:
            raise ProtocolError(Reason.BAD_CERT, f"certificate: {exc}") from None
        body = env.body
        keys = {"task", "device", "box_pk", "quota", "expires_ms", "name"}
        if not isinstance(body, dict) or set(body) != keys:
            raise ProtocolError(Reason.BAD_CERT, f"certificate body must have exactly {sorted(keys)}")
        if env.signer != task.coordinator:
            raise ProtocolError(Reason.BAD_CERT, "certificate is not signed by the task's coordinator")
        if body["task"] != task.id:
            raise ProtocolError(Reason.BAD_CERT, "certificate is for another task")
        if not all(isinstance(body[k], bytes) and len(body[k]) == 32 for k in ("device", "box_pk")):
            raise ProtocolError(Reason.BAD_CERT, "certificate keys must be 32 bytes")
        if not all(
            isinstance(body[k], int) and not isinstance(body[k], bool) and body[k] >= 0 for k in ("quota", "expires_ms")
        ):
            raise ProtocolError(Reason.BAD_CERT, "quota and expires_ms must be non-negative integers")
        if not isinstance(body["name"], str) or len(body["name"]) > 64:
            raise ProtocolError(Reason.BAD_CERT, "name must be text of at most 64 characters")
        return cls(env, body["task"], body["device"], body["box_pk"], body["quota"], body["expires_ms"], body["name"])


def issue_certificate(
    coordinator: Identity, task: Task, device: PublicIdentity, *, quota: int, expires_ms: int, name: str = ""
) -> bytes:
    body = {
        "task": task.id,
        "device": device.sign_pk,
        "box_pk": device.box_pk,
        "quota": int(quota),
        "expires_ms": int(expires_ms),
        "name": name,
    }
    return envelope.sign(coordinator, "cert", body)
