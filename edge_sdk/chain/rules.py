"""Block rules. Every rule that a block can break raises ProtocolError naming it.

A node accepts a block only if its parent is known and valid; so the rules here relate one
block to its parent's state (header, cumulative work, global model) and, for the retarget rule,
to one older ancestor on the same branch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from edge_sdk.chain.block_model import apply_updates
from edge_sdk.chain.evidence import offenders
from edge_sdk.chain.opening import Opened, check_items, open_aggregate
from edge_sdk.chain.view import BlockState, ChainView
from edge_sdk.protocol import envelope
from edge_sdk.protocol.block import HEADER_VERSION, ZERO_HASH, Block, Header, Update, body_root
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.fixedpoint import model_hash
from edge_sdk.protocol.merkle import merkle_root
from edge_sdk.protocol.revocations import RevocationList, parse_revocations
from edge_sdk.protocol.task import Task
from edge_sdk.protocol.work import is_retarget_height, meets_target, next_target, work


def validate_genesis(raw: bytes) -> tuple[BlockState, Task]:
    """Check a genesis block against the task it carries. Trust comes from knowing its hash."""
    env = envelope.open_envelope(raw, expect="genesis", max_bytes=envelope.DEFAULT_MAX_BYTES)
    body = env.body
    if not isinstance(body, dict) or set(body) != {"header", "task"}:
        raise ProtocolError(Reason.BAD_BODY, "genesis body must have exactly header, task")
    header = Header.decode(body["header"])
    task = Task.from_wire(body["task"])
    checks = [
        (header.height == 0 and header.prev_hash == ZERO_HASH, "height 0 and a zero parent"),
        (header.task_id == task.id, "task_id is the task's hash"),
        (header.merkle_root == merkle_root([]), "no updates"),
        (header.model_hash == model_hash(task.initial_model, task.chain.frac_bits), "model hash of the initial model"),
        (header.miner == task.coordinator == env.signer, "signed by the task's coordinator"),
        (header.target == task.chain.initial_target, "target is the initial target"),
        (header.timestamp_ms == task.created_ms, "timestamp is the task's creation time"),
    ]
    for ok, rule in checks:
        if not ok:
            raise ProtocolError(Reason.BAD_GENESIS, f"genesis must have {rule}")
    return BlockState(header, work(header.target), task.initial_model, header.hash, header.timestamp_ms), task


def expected_target(task: Task, parent: Header, chain: ChainView) -> int:
    height = parent.height + 1
    params = task.chain
    span = None
    if is_retarget_height(height, params.retarget_window):
        start = chain.ancestor(parent.hash, height - 1 - params.retarget_window)
        span = parent.timestamp_ms - start.timestamp_ms
    return next_target(
        height=height,
        parent_target=parent.target,
        span_ms=span,
        window=params.retarget_window,
        interval_ms=params.target_interval_ms,
        pow_limit=params.pow_limit,
    )


def check_update(update: Update, parent: BlockState, block_time_ms: int, task: Task) -> None:
    """Chain-state rules for one update in a block on `parent` (signature and shape already checked).

    An update names the last block that changed the model: blocks that aggregate nothing (empty
    ones) leave it valid, so they cannot censor a round by making its updates stale."""
    if update.base != parent.base:
        raise ProtocolError(Reason.STALE_BASE, f"update base {update.base.hex()[:16]} is not the round's base")
    if update.device in parent.revocations.devices:
        raise ProtocolError(Reason.REVOKED, "the device is revoked on this chain")
    if block_time_ms > update.cert.expires_ms:  # the receiver's time of the round, not only the update's own
        raise ProtocolError(Reason.CERT_EXPIRED, "the certificate expired before this round")
    skew = task.chain.max_skew_ms
    if not parent.base_ms - skew <= update.timestamp_ms <= block_time_ms + skew:
        raise ProtocolError(Reason.BAD_TIMESTAMP, "update time is outside [base - skew, block + skew]")


def check_revocations(raw: bytes | None, parent: BlockState, task: Task) -> RevocationList:
    """The revocation list in effect after a block: the one it carries (newer than its parent's) or the parent's."""
    if raw is None:
        return parent.revocations
    try:
        listed = parse_revocations(raw, task)
    except ProtocolError as exc:
        raise ProtocolError(Reason.BAD_REVOCATIONS, exc.detail) from None
    if listed.ts <= parent.revocations.ts:
        raise ProtocolError(Reason.BAD_REVOCATIONS, "the block's revocation list is not newer than its chain's")
    return listed


def check_header(header: Header, parent: Header, task: Task, chain: ChainView, now_ms: int) -> None:
    """The rules a header obeys on its own (PoW, link, retarget, miner set, time): enough to follow
    a chain of headers, as a late joiner does before trusting a snapshot."""
    params = task.chain
    if header.version != HEADER_VERSION:
        raise ProtocolError(Reason.BAD_VERSION, f"header version {header.version}")
    if header.task_id != task.id:
        raise ProtocolError(Reason.WRONG_TASK, "block is for another task")
    if header.prev_hash != parent.hash:
        raise ProtocolError(Reason.UNKNOWN_PARENT, "header does not follow its parent")
    if header.height != parent.height + 1:
        raise ProtocolError(Reason.BAD_HEIGHT, f"height {header.height}, parent has {parent.height}")
    target = expected_target(task, parent, chain)
    if header.target != target:
        raise ProtocolError(Reason.BAD_TARGET, f"target {header.target:064x}, rule says {target:064x}")
    if not meets_target(header.hash, header.target):
        raise ProtocolError(Reason.INSUFFICIENT_WORK, "header hash is above its target")
    if task.miner(header.miner) is None:
        raise ProtocolError(Reason.BAD_MINER, "the block's miner is not in the task's miner set")
    if not parent.timestamp_ms <= header.timestamp_ms <= now_ms + params.max_skew_ms:
        raise ProtocolError(Reason.BAD_TIMESTAMP, "block time must be >= parent's and <= now + skew")


def validate_block(
    raw: bytes,
    *,
    task: Task,
    chain: ChainView,
    now_ms: int,
    known_updates: Mapping[bytes, Update] | None = None,
) -> tuple[Block, list[Update], BlockState]:
    """Apply every block rule, cheapest first; return the parsed block, its updates and new state.

    `known_updates` maps the digest of update bytes this node already parsed and verified (a
    miner's pool) to the result: identical bytes give an identical parse, so their signatures
    and shapes are not checked again. Chain-state rules still run for every update.
    """
    params = task.chain
    if len(raw) > params.max_block_bytes:
        raise ProtocolError(Reason.TOO_LARGE, f"block of {len(raw)} bytes > {params.max_block_bytes}")
    block = Block.parse(raw, params.max_block_bytes)
    header = block.header
    parent = chain.get(header.prev_hash)
    if parent is None or (parent.model is None and parent.aggregate is None):
        raise ProtocolError(Reason.UNKNOWN_PARENT, f"parent {header.prev_hash.hex()[:16]} is not known")
    check_header(header, parent.header, task, chain, now_ms)
    if block.envelope.signer != header.miner:
        raise ProtocolError(Reason.BAD_MINER, "block is not signed by its header's miner")
    if len(block.update_bytes) > params.max_updates:
        raise ProtocolError(Reason.TOO_MANY_UPDATES, f"{len(block.update_bytes)} > {params.max_updates}")
    if body_root(block.update_bytes, block.extras) != header.merkle_root:
        raise ProtocolError(Reason.BAD_MERKLE_ROOT, "merkle root does not match the updates and extras")
    revocations = check_revocations(block.extras.revocations, parent, task)
    updates, devices = [], set()
    known = known_updates or {}
    for index, update_raw in enumerate(block.update_bytes):
        update = known.get(hashlib.sha256(update_raw).digest()) if known else None
        if update is None:
            try:
                update = Update.parse(update_raw, task)
            except ProtocolError as exc:
                raise ProtocolError(Reason.BAD_UPDATE, f"update {index}: {exc}") from None
        check_update(update, parent, header.timestamp_ms, task)
        if update.device in devices:
            raise ProtocolError(Reason.DUPLICATE_DEVICE, f"update {index} repeats a device")
        devices.add(update.device)
        updates.append(update)
    offenders(block.extras.evidence, task=task, chain=chain, parent=parent.hash, validate=validate_block)
    parent_model, opened = parent.model, None
    if task.privacy.encrypted:
        opened = open_parent(block, parent, len(updates), task, chain)
        parent_model = opened.model if opened else parent.model
    commitment, model, excluded, aggregate = apply_updates(task, parent_model, updates)
    if excluded != block.extras.excluded:
        raise ProtocolError(Reason.BAD_EXCLUSIONS, "the block's excluded updates are not those its rule excludes")
    if commitment != header.model_hash:
        raise ProtocolError(
            Reason.BAD_MODEL_HASH, "header's model hash is not that of the aggregated model (or encrypted aggregate)"
        )
    changed = len(updates) > len(excluded)
    state = BlockState(
        header,
        parent.cumwork + work(header.target),
        model,
        header.hash if changed else parent.base,
        header.timestamp_ms if changed else parent.base_ms,
        revocations,
        aggregate,
        opened,
    )
    return block, updates, state


def open_parent(block: Block, parent: BlockState, updates: int, task: Task, chain: ChainView) -> Opened | None:
    """Paillier rules: a block aggregates no update or at least min_participants; it carries the
    threshold's decryption of its parent's aggregate exactly when the parent has updates."""
    least = task.privacy.threshold.min_participants
    if 0 < updates < least:
        raise ProtocolError(Reason.TOO_FEW_UPDATES, f"{updates} updates; a block aggregates none or >= {least}")
    decryption = block.extras.decryption
    if parent.aggregate is None:
        if decryption:
            raise ProtocolError(Reason.BAD_DECRYPTION, "the parent has no aggregate to decrypt")
        return None
    grandparent = chain.get(parent.header.prev_hash)
    if grandparent is None or grandparent.model is None:
        raise ProtocolError(Reason.UNKNOWN_PARENT, "the grandparent's model is not known")
    partials = check_items(decryption, parent.aggregate, task)
    return open_aggregate(task, grandparent.model, parent.aggregate, partials)
