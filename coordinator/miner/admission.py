"""Update admission: every rule a miner applies before an update may enter its pool.

One pure function: the caller passes what it knows (tip, clock, revocations, what it has seen)
and gets a verdict; nothing is stored or sent here, so every rule is testable without a broker.
This is the only place a miner checks an update's signature: the pool keeps the parsed result.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Container
from dataclasses import dataclass

from nacl.public import PrivateKey

from edge_sdk.chain.rules import check_update
from edge_sdk.chain.view import BlockState
from edge_sdk.protocol import envelope
from edge_sdk.protocol.block import Update
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.task import Task


@dataclass(frozen=True)
class Verdict:
    """Admitted when there is no `error`. `digest` of the unsealed update whenever it could be opened
    (a rejection notice names it); `update` whenever its signature verified (a device's second
    update for a round is refused, and is also evidence against it)."""

    digest: bytes | None
    update: Update | None = None
    error: ProtocolError | None = None

    @property
    def admitted(self) -> bool:
        return self.error is None


def admit(
    sealed: bytes,
    *,
    box_key: PrivateKey,
    task: Task,
    tip: BlockState,
    now_ms: int,
    revoked: Container[bytes],
    seen: Callable[[bytes], bool],
    devices_in_round: Container[bytes],
) -> Verdict:
    """Unseal, then (cheapest first) replay, signature and body, revocation, base and time, one per round.

    `seen(digest)`: whether this exact update is pooled or already in a block;
    `devices_in_round`: devices with a pooled update on the tip's round base.
    """
    digest = update = None
    try:
        raw = envelope.unseal(box_key, sealed, max_bytes=task.chain.max_update_bytes)
        digest = hashlib.sha256(raw).digest()
        if seen(digest):
            raise ProtocolError(Reason.REPLAY, "this update was received before")
        update = Update.parse(raw, task)
        if update.device in revoked:
            raise ProtocolError(Reason.REVOKED, "the device's certificate is revoked")
        check_update(update, tip, now_ms, task)
        if update.device in devices_in_round:
            raise ProtocolError(Reason.DUPLICATE_DEVICE, "the device already has an update in this round")
    except ProtocolError as exc:
        return Verdict(digest, update, exc)
    return Verdict(digest, update=update)
