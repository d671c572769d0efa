"""Evidence of misbehaviour: who it convicts, checked the same way by every node.

A block may carry evidence (PROTOCOL.md 7.2); the ledger takes the offender's deposit once. The
check must give the same answer on every node that validates the carrying block, so it uses only
the signed messages themselves and the carrying block's parent, never a node's clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from edge_sdk.protocol import envelope
from edge_sdk.protocol.block import Block, Update
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.extras import Evidence
from edge_sdk.protocol.task import Task

NO_CLOCK_MS = 1 << 62  # an accused block is judged without "too far in the future": no node's clock counts


def offenders(evidence: Sequence[Evidence], *, task: Task, chain, parent: bytes, validate: Callable) -> list[bytes]:
    """The signing key each item convicts, in order; BAD_EVIDENCE if any item proves nothing
    or two items accuse one node (a block convicts a node at most once)."""
    found: list[bytes] = []
    for index, item in enumerate(evidence):
        who = offender(item, task=task, chain=chain, parent=parent, validate=validate)
        if who in found:
            raise ProtocolError(Reason.BAD_EVIDENCE, f"evidence {index} accuses a node twice in one block")
        found.append(who)
    return found


def offender(item: Evidence, *, task: Task, chain, parent: bytes, validate: Callable) -> bytes:
    if item.kind == "double-update":
        return _double_update(item, task)
    return _invalid_block(item.signed[0], task=task, chain=chain, parent=parent, validate=validate)


def _double_update(item: Evidence, task: Task) -> bytes:
    try:
        first, second = (Update.parse(raw, task) for raw in item.signed)
    except ProtocolError as exc:
        raise ProtocolError(Reason.BAD_EVIDENCE, f"double-update: {exc}") from None
    if first.device != second.device or first.base != second.base:
        raise ProtocolError(Reason.BAD_EVIDENCE, "double-update: not one device on one base")
    if not first.digest < second.digest:
        raise ProtocolError(Reason.BAD_EVIDENCE, "double-update: two different updates, in digest order")
    return first.device


def _invalid_block(raw: bytes, *, task: Task, chain, parent: bytes, validate: Callable) -> bytes:
    try:
        signer = envelope.open_envelope(raw, expect="block", max_bytes=task.chain.max_block_bytes).signer
    except ProtocolError as exc:
        raise ProtocolError(Reason.BAD_EVIDENCE, f"invalid-block: not a signed block: {exc}") from None
    if task.miner(signer) is None:
        raise ProtocolError(Reason.BAD_EVIDENCE, "invalid-block: not signed by a miner of the task")
    try:
        block = Block.parse(raw, task.chain.max_block_bytes)
    except ProtocolError:
        return signer  # a miner signed a malformed block
    if block.header.prev_hash != parent:
        raise ProtocolError(Reason.BAD_EVIDENCE, "invalid-block: the accused block must extend this block's parent")
    if block.extras.evidence:
        raise ProtocolError(Reason.BAD_EVIDENCE, "invalid-block: an accused block may not carry evidence")
    try:
        validate(raw, task=task, chain=chain, now_ms=NO_CLOCK_MS)
    except ProtocolError as exc:
        if exc.reason is Reason.UNKNOWN_PARENT:
            raise ProtocolError(Reason.BAD_EVIDENCE, "invalid-block: its parent is not known") from None
        return signer
    raise ProtocolError(Reason.BAD_EVIDENCE, "invalid-block: the accused block is valid")
