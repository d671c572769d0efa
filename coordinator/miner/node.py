"""A miner node: admits updates, cross-verifies them with the other miners, mines blocks,
follows the best chain and answers sync requests; chain, pool and status live on disk.

Built on the node runtime (edge_sdk/node/runtime.py): all state changes run on its loop; only the
nonce search runs in a worker thread, which a better tip stops. The miner validates its own block
with the same `store.add` as any peer's, on purpose (an assembly bug is caught before the block is
stored or published); that costs one aggregation and no signature checks: pooled updates were
verified at admission and `store.add` reuses them by digest, as it does for peers' blocks.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
import time
from pathlib import Path

from coordinator.miner import faults, policy
from coordinator.miner.admission import admit
from coordinator.miner.assembly import Template, assemble, fitting, light_of, seal, search_nonce
from coordinator.miner.decrypting import ShareHolder
from coordinator.miner.forwarding import Forwarder
from coordinator.miner.pool import Pool
from coordinator.miner.serving import answer_sync
from edge_sdk.chain.database import Database
from edge_sdk.chain.evidence import offender
from edge_sdk.chain.rules import validate_block
from edge_sdk.chain.store import ChainStore
from edge_sdk.chain.view import BlockState
from edge_sdk.clock import now_ms
from edge_sdk.node.logs import event
from edge_sdk.node.runtime import Node
from edge_sdk.node.status import miner_status_path
from edge_sdk.privacy.threshold import KeyShare
from edge_sdk.protocol import codec, envelope, sync
from edge_sdk.protocol.block import Block, Header, Update
from edge_sdk.protocol.decryption import PartialDecryption, make_partial
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.extras import MAX_EVIDENCE, Evidence
from edge_sdk.protocol.identity import Identity, node_id
from edge_sdk.protocol.revocations import NO_REVOCATIONS, parse_revocations
from edge_sdk.transport.mqtt import Acked, BrokerConfig, Incoming
from edge_sdk.transport.topics import ANY, Topics, sender

log = logging.getLogger("blockfl.miner")


class Miner(Node):
    role = "miner"

    def __init__(
        self,
        *,
        identity: Identity,
        genesis: bytes,
        db_path: str | Path,
        broker: BrokerConfig,
        status_path: str | Path | None = None,
        share: KeyShare | None = None,
    ):
        db = Database(db_path)
        store = ChainStore(db, genesis)
        task = store.task
        if task.miner(identity.public.sign_pk) is None:
            raise ValueError("this identity is not in the task's miner set")
        if task.privacy.encrypted and share is None:
            raise ValueError("a Paillier task's miner needs its key share (paillier.share.sealed in its bundle)")
        self.holder = ShareHolder(db, share, task) if task.privacy.encrypted else None
        self._stuck: tuple[bytes, int] | None = None  # (tip whose aggregate nobody opens, since when)
        self._second_tries: set[bytes] = set()  # stuck tips this miner considered opening as a second set
        self.pool = Pool(db, task)
        self.forwarder = Forwarder(self.publish, self.count)  # publish and count work once the node is built
        self.peers = [m for m in task.miners if m.sign_pk != identity.public.sign_pk]
        self.revocations = NO_REVOCATIONS  # the coordinator's newest list, as published (retained)
        self.evidence: dict[bytes, Evidence] = {}  # offender -> evidence waiting for a block (memory only)
        self._mining: threading.Event | None = None  # set() stops the running nonce search
        self._quiet = threading.Event()  # SIGUSR1: mine no more (keep following, answering, decrypting)
        self._head_due = False
        self._round_started: int | None = None
        self._refused_tip: bytes | None = None
        self._hold_s = faults.hold_update_seconds()  # fault injection only (faults.py)
        me = identity.public.node_id
        t = Topics(task.id)
        super().__init__(
            identity=identity,
            store=store,
            broker=broker,
            handlers={
                "update": self.on_update,
                "gossip": self.on_gossip,
                "sync": self.on_sync_request,
                "revocations": self.on_revocations,
            },
            subscriptions=[t.update(me, ANY), t.gossip(me, ANY), t.sync(me), t.revocations],
            status_path=status_path or miner_status_path(db_path),
        )
        self._follow_tip()  # a move of the tip that a crash cut off from its follow

    # --- runtime hooks ---
    def on_connected(self) -> None:
        self._publish_head()
        self.request_sync()

    def sync_targets(self, hint: str | None) -> list[str]:
        peers = [p.node_id for p in self.peers]
        return [hint] if hint in peers else peers

    def known_updates(self):
        return self.pool.parsed

    def wait_seconds(self) -> float:
        return self.forwarder.wait_seconds(policy.wait_seconds(self._round_started, now_ms(), self.task.rounds))

    def on_ack(self, ack: Acked) -> None:
        self.forwarder.acked(ack)

    def accept_block(self, raw: bytes, source: str | None) -> bool:
        started = time.perf_counter()
        try:
            return super().accept_block(raw, source)
        finally:
            self.count("validation_seconds", time.perf_counter() - started)

    def status_details(self) -> dict:
        return {"mining": not self._quiet.is_set()}

    def run(self, *, until: float | None = None) -> None:
        if threading.current_thread() is threading.main_thread():  # the emulator, after its last round
            signal.signal(signal.SIGUSR1, lambda *_: self._quiet.set())
        super().run(until=until)

    def after_event(self) -> None:
        self.forwarder.send_due()
        if self._quiet.is_set():
            self._stop_mining()
        if self._head_due:
            self._head_due = False
            self._publish_head()
        self._maybe_mine()

    def on_block_accepted(self, state: BlockState, raw: bytes | None) -> None:
        if raw is not None:  # valid, so its body decodes; no signature to check again
            body = codec.decode(raw)[3]
            self.pool.record(state.hash, body["updates"])
            on_best = state.hash == self.store.tip.hash  # evidence on a branch that loses is still pending
            for item in body["extras"]["evidence"] if on_best else ():  # the ledger counts a conviction once
                self.evidence = {k: e for k, e in self.evidence.items() if e.to_wire() != item}

    def on_invalid_block(self, raw: bytes, error: ProtocolError) -> None:
        """A block that breaks a rule: if another miner of the task signed it, keep it as evidence."""
        item = Evidence("invalid-block", (raw,))
        try:
            who = offender(item, task=self.task, chain=self.store, parent=_accused_parent(raw), validate=validate_block)
        except ProtocolError:
            return  # not provable here (unsigned, foreign, or its parent is unknown)
        if who != self.identity.public.sign_pk:
            self._keep_evidence(who, item)

    def _keep_evidence(self, who: bytes, item: Evidence) -> None:
        if who not in self.evidence and len(self.evidence) < 4 * MAX_EVIDENCE:
            self.evidence[who] = item
            self.count("evidence_found")
            event(log, logging.WARNING, "evidence of misbehaviour", kind=item.kind, offender=node_id(who))

    def on_new_tip(self) -> None:
        self._stop_mining()
        self._follow_tip()
        tip = self.store.tip.hash  # invalid-block evidence fits only a block on the accused block's parent
        self.evidence = {
            k: e for k, e in self.evidence.items() if e.kind != "invalid-block" or _accused_parent(e.signed[0]) == tip
        }
        self._round_started = None
        super().on_new_tip()
        self._head_due = True  # published after this event: after the block itself, never before
        self._decrypt_tip()

    def _follow_tip(self) -> None:
        returned = self.pool.follow(self.store, self.pool.followed() or self.store.tip.hash, self.store.tip)
        if returned:
            self.count("updates_returned", returned)
            event(log, logging.INFO, "updates of abandoned blocks pooled again", updates=returned)

    # --- threshold decryption (Paillier modes) ---
    def _decrypt_tip(self, stuck: bool = False) -> None:
        tip = self.store.tip
        if self.holder is None or tip.aggregate is None:
            return
        members = [hashlib.sha256(u).digest() for u in codec.decode(self.store.raw_block(tip.hash))[3]["updates"]]
        if not self.holder.claim(tip, self.store.get(tip.header.prev_hash).base, members, stuck=stuck):
            return
        if stuck:
            self.count("second_set_decryptions")
            event(log, logging.WARNING, "round stuck: opening a second update set", height=tip.header.height)
        self.background("partial-decryption", lambda: self.holder.decrypt(tip), lambda item: self._decrypted(tip, item))

    def _decrypted(self, block: BlockState, item: PartialDecryption | None) -> None:
        if item is None:
            return
        key = self.task.privacy.threshold.key
        self.publish(self.topics.partial(self.me), make_partial(self.identity, key, block.hash, item), retain=True)
        self.count("partials_published")
        self.openings.add(block.hash, item, verified=True)

    def _opening_parent(self) -> tuple[BlockState, list[dict]] | None:
        """The block to mine on and the decryption its child carries. Normally the tip (with t
        partials of its aggregate, if it has one); if nobody opens the tip for a block interval
        (competing blocks split the share holders, each of whom opens one aggregate per round
        base), the best block that can be opened, for an empty block that outweighs the tip."""
        tip = self.store.tip
        if tip.aggregate is None:
            return tip, []
        items = self.openings.items_for(tip.hash)
        if items is not None:
            self._stuck = None
            return tip, items
        if self._stuck is None or self._stuck[0] != tip.hash:
            self._stuck = (tip.hash, now_ms())
        if now_ms() - self._stuck[1] < self.task.chain.target_interval_ms:
            return None
        if self._stuck[0] not in self._second_tries:
            self._second_tries.add(self._stuck[0])
            self._decrypt_tip(stuck=True)
        candidates = [self.store.get(h) for h in list(self.openings.verified)]
        candidates = [c for c in candidates if c is not None and self.openings.items_for(c.hash) is not None]
        best = max(candidates, key=lambda c: c.cumwork, default=None)
        if best is None or best.cumwork < tip.cumwork:
            return None
        return best, self.openings.items_for(best.hash)

    def on_close(self) -> None:
        self._stop_mining()

    # --- updates ---
    def on_update(self, msg: Incoming) -> None:
        """From a device: admit, tell the device if refused, forward to every other miner if admitted."""
        device_id = sender(msg.topic)
        faults.hold_update(self._hold_s, device_id)
        update = self._admit(msg.payload, source=device_id, notify=device_id)
        if update is None:
            return
        for peer in self.peers:  # cross-verification: every other miner admits it again
            sealed = envelope.seal(peer.box_pk, update.envelope.raw)
            self.forwarder.send(self.topics.gossip(peer.node_id, self.me), sealed)

    def on_gossip(self, msg: Incoming) -> None:
        self._admit(msg.payload, source="miner:" + sender(msg.topic), notify=None)

    def _admit(self, sealed: bytes, *, source: str, notify: str | None) -> Update | None:
        tip, received = self.store.tip, now_ms()
        verdict = admit(
            sealed,
            box_key=self.identity.box_key,
            task=self.task,
            tip=tip,
            now_ms=now_ms(),
            revoked=self.revocations.devices,
            seen=self.pool.seen,
            devices_in_round=self.pool.devices_on(tip.base),
        )
        if verdict.error is not None and verdict.error.reason is Reason.DUPLICATE_DEVICE:
            self._double_update(verdict.update)
        if not verdict.admitted:
            self.reject(verdict.error.reason, verdict.error.detail, source=source)
            if verdict.digest is not None:
                self.pool.refuse(verdict.digest, verdict.error.reason.value)  # audit trail
            if notify and verdict.digest is not None:
                notice = sync.make_rejection(self.identity, self.task, verdict.digest, verdict.error.reason, tip.hash)
                self.publish(self.topics.reply(notify), notice)
            return None
        update = verdict.update
        self.pool.add(update, now_ms())
        self.count("updates_accepted")
        self.timeline.mark("pooled", digest=update.digest, via="device" if notify else "gossip", received=received)
        if self._round_started is None:
            self._round_started = now_ms()
        event(log, logging.INFO, "update accepted", source=source, samples=update.samples)
        return update

    def _double_update(self, second: Update) -> None:
        """A device signed two different updates on one base: the pair convicts it."""
        first = self.pool.of_device(second.base, second.device)
        if first is None or first.digest == second.digest:
            return
        pair = tuple(u.envelope.raw for u in sorted((first, second), key=lambda u: u.digest))
        self._keep_evidence(second.device, Evidence("double-update", pair))

    def _evidence_for(self, parent: BlockState) -> list[Evidence]:
        """Pending evidence that a block on `parent` can carry (an invalid block must be its sibling)."""
        items = []
        for item in self.evidence.values():
            accused = _accused_parent(item.signed[0]) if item.kind == "invalid-block" else None
            if accused is None or accused == parent.hash:
                items.append(item)
        return items[:MAX_EVIDENCE]

    # --- mining ---
    def _maybe_mine(self) -> None:
        if self._mining is not None or self._quiet.is_set():
            return
        parent, decryption = self.store.tip, []
        if self.holder is not None:
            chosen = self._opening_parent()
            if chosen is None:
                return  # waiting for t partial decryptions of the tip's aggregate
            parent, decryption = chosen
        if parent.hash == self._refused_tip:
            return  # our own block on this tip was refused: wait for another tip (see _on_mined)
        rescue = parent.hash != self.store.tip.hash  # an empty block that unblocks the chain
        least = self.task.privacy.threshold.min_participants if self.holder is not None else 1
        if not rescue:  # decide on the count; read (and fit) the updates only to mine them
            count = min(self.pool.count_on(parent.base), self.task.chain.max_updates)
            if not count:
                self._round_started = None
                return
            if self._round_started is None:
                self._round_started = now_ms()
            if count < least or not policy.should_mine(count, self._round_started, now_ms(), self.task.rounds):
                return
        pooled = [] if rescue else fitting(self.pool.on_base(parent.base, self.task.chain.max_updates), self.task)
        started, ready = time.perf_counter(), now_ms()
        template = assemble(
            miner=self.identity.public.sign_pk,
            task=self.task,
            chain=self.store,
            parent=parent,
            updates=pooled,
            now_ms=now_ms(),
            evidence=self._evidence_for(parent),
            revocations=self.revocations,
            decryption=decryption,
        )
        self.count("aggregate_ms", round((time.perf_counter() - started) * 1000, 3))
        for update, error in template.left_out:  # no block can take them any more: out of the pool, on record
            self.pool.drop(update.digest, error.reason.value)
            self.reject(error.reason, "became invalid while pooled", source="pool")
        if not rescue and len(template.updates) < least:
            return
        # when the round started and the pool was ready (by min_updates or max_wait), for the timeline
        full = len(pooled) >= self.task.rounds.min_updates
        timing = {"round_started": self._round_started, "ready": ready, "aggregated": now_ms(),
                  "ready_by": "min_updates" if full else "max_wait"}  # fmt: skip
        stop = threading.Event()
        self._mining = stop
        start = int.from_bytes(os.urandom(4), "big") << 16  # miners search different nonce ranges
        event(log, logging.INFO, "mining", height=template.header.height, updates=len(pooled))
        self.background(
            "nonce-search",
            lambda: search_nonce(template.header, stop=stop, start=start),
            lambda header: self._on_mined(header, template, stop, timing),
        )

    def _stop_mining(self) -> None:
        if self._mining is not None:
            self._mining.set()
            self._mining = None

    def _on_mined(self, header: Header | None, template: Template, stop: threading.Event, timing: dict) -> None:
        self.count("mining_seconds", (now_ms() - timing["aggregated"]) / 1000)
        if stop.is_set():
            return  # a better tip stopped this search (and a new one may be running)
        self._mining = None
        found = now_ms()
        if header is None or header.prev_hash not in (self.store.tip.hash, template.header.prev_hash):
            return
        raw = seal(self.identity, header, template)
        if not self.accept_block(raw, self.me):
            # an assembly bug: never publish it, and do not mine the same set again on this tip
            self._refused_tip = header.prev_hash
            self.count("own_blocks_refused")
            event(log, logging.ERROR, "own block refused; not published", height=header.height)
            return
        self.count("blocks_mined")
        self.publish(self.topics.block(self.me), raw)
        self.publish(
            self.topics.light(self.me), light_of(self.identity, self.task, self.store.get(header.hash), template)
        )
        self.timeline.mark("mined", block=header.hash, height=header.height, found=found, **timing, **self.traffic())

    # --- chain ---
    def _publish_head(self) -> None:
        self.publish(self.topics.head(self.me), self.store.tip.header.encode(), retain=True)

    def on_sync_request(self, msg: Incoming) -> None:
        self.publish(msg.response_topic, answer_sync(self.store, self.identity, msg), correlation=msg.correlation)

    def on_revocations(self, msg: Incoming) -> None:
        listed = parse_revocations(msg.payload, self.task)
        if listed.ts > self.revocations.ts:
            self.revocations = listed  # admitted no more, and carried into this miner's next block


def _accused_parent(raw: bytes) -> bytes | None:
    """The parent an accused block names (None when its body is malformed: then any parent will do)."""
    try:
        return Block.parse(raw, len(raw)).header.prev_hash
    except ProtocolError:
        return None
