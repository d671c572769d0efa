"""Block assembly, the one sequence every block maker follows (the miner, `chain demo`, tests):

    assemble (chain-state checks, aggregate, template) -> search_nonce -> seal

Updates come already parsed and verified (a miner's pool holds them so); assembly only checks
the rules that depend on the block itself (base, time), which cost no cryptography.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from edge_sdk.chain.block_model import apply_updates
from edge_sdk.chain.rules import check_update, expected_target
from edge_sdk.chain.view import BlockState, ChainView
from edge_sdk.protocol.block import NONCE_OFFSET, Header, Update, block_template, seal_block
from edge_sdk.protocol.errors import ProtocolError
from edge_sdk.protocol.extras import Evidence, Extras
from edge_sdk.protocol.identity import Identity
from edge_sdk.protocol.light import make_light
from edge_sdk.protocol.revocations import RevocationList
from edge_sdk.protocol.task import Task

NONCE_LIMIT = 1 << 64
BLOCK_OVERHEAD = 1024  # envelope, header, signature and CBOR heads around the updates, generously


@dataclass(frozen=True)
class Template:
    """A block before proof-of-work: its header (nonce 0), the updates it records (in order) and its extras."""

    header: Header
    updates: tuple[Update, ...]
    extras: Extras = Extras()
    left_out: tuple[tuple[Update, ProtocolError], ...] = ()  # offered, but no longer valid on this parent

    @property
    def update_bytes(self) -> list[bytes]:
        return [u.envelope.raw for u in self.updates]


def assemble(
    *,
    miner: bytes,
    task: Task,
    chain: ChainView,
    parent: BlockState,
    updates: Sequence[Update],
    now_ms: int,
    evidence: Sequence[Evidence] = (),
    revocations: RevocationList | None = None,
    decryption: Sequence[dict] = (),
) -> Template:
    """The header of a block on `parent` recording `updates` (parsed and verified by the caller),
    the `evidence` given (checked by the caller against this parent), `revocations` if newer
    than the parent's, and (Paillier) t verified partial decryptions of the parent's aggregate.

    The block's time is now, but never before its parent's nor so early that an update admitted
    a moment ago (dated up to max_skew_ms ahead) falls outside it: a clock stepped back by less
    than the skew still gives a valid block. Updates that became invalid while pooled (certificate
    expired, device revoked) are left out and returned, for the caller to drop.
    """
    newest = max((u.timestamp_ms for u in updates), default=0)
    timestamp = max(now_ms, parent.header.timestamp_ms, newest - task.chain.max_skew_ms)
    carried = None
    if revocations is not None and revocations.ts > parent.revocations.ts:
        carried = revocations.raw
    kept, left_out = [], []
    for update in updates:
        try:
            check_update(update, parent, timestamp, task)
            kept.append(update)
        except ProtocolError as exc:
            left_out.append((update, exc))
    commitment, _, excluded, _ = apply_updates(task, parent.model, kept)
    extras = Extras(excluded, tuple(evidence), carried, tuple(decryption))
    update_bytes = [u.envelope.raw for u in kept]
    header = block_template(
        parent=parent.header,
        task=task,
        miner=miner,
        update_bytes=update_bytes,
        extras=extras,
        commitment=commitment,
        timestamp_ms=timestamp,
        target=expected_target(task, parent.header, chain),
    )
    return Template(header, tuple(kept), extras, tuple(left_out))


def fitting(updates: Sequence[Update], task: Task) -> list[Update]:
    """The longest prefix of `updates` whose block stays within max_updates and max_block_bytes."""
    budget = task.chain.max_block_bytes - BLOCK_OVERHEAD
    chosen = []
    for update in updates[: task.chain.max_updates]:
        budget -= len(update.envelope.raw) + 8  # the byte string's CBOR head
        if budget < 0:
            break
        chosen.append(update)
    return chosen


def search_nonce(
    header: Header, *, stop: threading.Event | None = None, start: int = 0, limit: int = NONCE_LIMIT
) -> Header | None:
    """Find a nonce whose header hash meets the target; None if stopped or out of nonces.

    Hashes the fixed 212-byte prefix once and finishes each try from that midstate.
    """
    prefix = hashlib.sha256(header.encode()[:NONCE_OFFSET])
    target = header.target
    for nonce in range(start, limit):
        if stop is not None and nonce & 0x3FF == 0 and stop.is_set():
            return None
        h = prefix.copy()
        h.update(nonce.to_bytes(8, "big"))
        if int.from_bytes(h.digest(), "big") <= target:
            return header.with_nonce(nonce)
    return None


def seal(identity: Identity, header: Header, template: Template) -> bytes:
    """Wire bytes of a mined block, signed by its miner."""
    return seal_block(identity, header, template.update_bytes, template.extras)


def build_block(
    *,
    identity: Identity,
    task: Task,
    chain: ChainView,
    parent: BlockState,
    updates: Sequence[Update | bytes],
    now_ms: int,
    stop: threading.Event | None = None,
    evidence: Sequence[Evidence] = (),
    revocations: RevocationList | None = None,
    decryption: Sequence[dict] = (),
) -> bytes | None:
    """Assemble, mine and seal in one call (raw update bytes are parsed and verified first)."""
    parsed = [u if isinstance(u, Update) else Update.parse(u, task) for u in updates]
    template = assemble(
        miner=identity.public.sign_pk,
        task=task,
        chain=chain,
        parent=parent,
        updates=parsed,
        now_ms=now_ms,
        evidence=evidence,
        revocations=revocations,
        decryption=decryption,
    )
    mined = search_nonce(template.header, stop=stop)
    return None if mined is None else seal(identity, mined, template)


def light_of(identity: Identity, task: Task, state: BlockState, template: Template) -> bytes:
    """The light block of a block this miner made: what light devices follow instead of the block."""
    return make_light(identity, task, state.header, model=state.model, aggregate=state.aggregate,
                      changed=state.base == state.hash, revocations=template.extras.revocations)  # fmt: skip
