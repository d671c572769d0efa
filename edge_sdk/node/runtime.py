"""The node runtime: the one event loop that devices and miners run.

paho's network thread and background jobs (training, nonce search) only put items on one queue;
everything that touches state runs on the loop's thread, one item at a time. The runtime
dispatches messages by topic kind to the node's handlers, accepts blocks (asking peers for missing
parents), handles the topics every node shares (block, head, reply), counts bytes and
rejections, and keeps the status file current. A device or a miner is a set of handlers and
hooks on it.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_sdk.chain.opening import Opened
from edge_sdk.chain.store import ChainStore
from edge_sdk.chain.view import BlockState
from edge_sdk.clock import now_ms
from edge_sdk.files import read_state
from edge_sdk.node.light import Alerter, LightFollower
from edge_sdk.node.logs import event
from edge_sdk.node.openings import Openings
from edge_sdk.node.status import Status, Timeline, timeline_path
from edge_sdk.protocol import sync
from edge_sdk.protocol.block import Header, Update
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.identity import Identity, node_id
from edge_sdk.transport.mqtt import Acked, BrokerConfig, Connected, Connection, Incoming
from edge_sdk.transport.topics import ANY, Topics, sender

log = logging.getLogger("blockfl.node")
STATUS_MIN_INTERVAL_S = 0.25  # status is rewritten at most this often (and always on exit)
Handler = Callable[[Incoming], None]
VERIFY_MODES = ("full", "light")


@dataclass(frozen=True)
class _Done:
    """A background job finished: `done(result)` runs on the loop's thread."""

    done: Callable[[Any], None]
    result: Any


class Node:
    """Event loop, dispatch, block acceptance and sync, counters and status; subclasses add handlers."""

    role = "node"
    adopts_snapshots = False  # a late joiner may start from headers and a checked model
    jobs: Executor | None = None  # where background work runs (default: a thread each); set per process

    def __init__(
        self,
        *,
        identity: Identity,
        store: ChainStore,
        broker: BrokerConfig,
        handlers: Mapping[str, Handler],
        subscriptions: list[str],
        status_path: str | Path,
        verify: str = "full",
        alert_cert: bytes | None = None,
    ):
        """`verify`: "full" validates every block (and alerts light devices to invalid ones); "light"
        follows light blocks and alerts (node/light.py). `alert_cert`: a device's certificate, which
        its alerts carry."""
        self.identity = identity
        self.me = identity.public.node_id
        self.store = store
        self.task = store.task
        self.topics = t = Topics(self.task.id)
        self.handlers: dict[str, Handler] = {
            "block": self.on_block,
            "head": self.on_head,
            "reply": self.on_reply,
            **handlers,
        }
        if verify not in VERIFY_MODES:
            raise ValueError(f"verify {verify!r}: expected one of {', '.join(VERIFY_MODES)}")
        self.light = LightFollower(self) if verify == "light" else None
        self.alerter = None if self.light else Alerter(self, alert_cert)
        if self.light:
            self.handlers.pop("block")
            self.handlers["light"] = lambda msg: self.light.on_light(msg.payload, sender(msg.topic))
            self.handlers["alert"] = lambda msg: self.light.on_alert(msg.payload)
            followed = [t.light(ANY), t.alert(ANY)]
        else:
            followed = [t.block(ANY)]
        self.openings = None
        if self.task.privacy.encrypted:  # every node opens aggregates from the miners' partial decryptions
            self.openings = Openings(store, self._opened)
            self.handlers["partial"] = lambda msg: self.openings.receive(msg.payload, sender(msg.topic))
            subscriptions = [*subscriptions, t.partial(ANY)]
        self.conn = Connection(
            broker,
            client_id=f"{self.role}-{self.me}",
            subscriptions=[*followed, t.head(ANY), t.reply(self.me), *subscriptions],
            will=(t.presence(self.me), b"offline"),
            online=(t.presence(self.me), b"online"),
            ack_when_handled=True,
        )
        self.inbox: queue.Queue = self.conn.inbox
        self.counters: Counter = Counter()
        self.rejections: Counter = Counter()
        self._snapshot_votes: dict[bytes, tuple] = {}  # miner -> the snapshot it sent last
        self.status_path = Path(status_path)
        self.timeline = Timeline(timeline_path(self.status_path))  # per-block phase times (round anatomy)
        self.timeline.recover()
        read_state(self.status_path, Status.parse)  # only to report and set aside a damaged one: it is rewritten
        self._dirty = True
        self._status_written = 0.0
        self._stopping = threading.Event()
        self.snapshot: Status | None = None

    # --- lifecycle ---
    def run(self, *, until: float | None = None) -> None:
        """Process events until SIGTERM, `stop()`, or the monotonic deadline `until`."""
        self.conn.start()
        if threading.current_thread() is threading.main_thread():
            # only set a flag: a signal handler that took the queue's lock could deadlock the loop
            signal.signal(signal.SIGTERM, lambda *_: self._stopping.set())
        try:
            while not self._stopping.is_set() and (until is None or time.monotonic() < until):
                try:
                    item = self.inbox.get(timeout=self.wait_seconds())
                except queue.Empty:
                    item = None
                self.dispatch(item)
                if self.light:
                    self.guarded("light", self.light.tick)
                self.guarded("after_event", self.after_event)
                self.guarded("status", self.write_status)
        finally:
            self.close()

    def stop(self) -> None:
        """Ask the loop to end (from any thread); it finishes the current event first."""
        self._stopping.set()
        self.inbox.put(None)  # wake it

    def close(self) -> None:
        self.on_close()
        self.write_status(force=True)
        self.conn.stop()
        self.store.close()

    def dispatch(self, item) -> None:
        if isinstance(item, Incoming):
            self._on_message(item)
        elif isinstance(item, Connected):
            self.count("connects")
            self.guarded("connected", self.on_connected)
        elif isinstance(item, Acked):
            self.guarded("ack", self.on_ack, item)
        elif isinstance(item, _Done):
            self.guarded("job", item.done, item.result)

    def guarded(self, what: str, fn: Callable, *args) -> None:
        """Run the node's own step; a failure is logged and counted, and the loop goes on."""
        try:
            fn(*args)
        except Exception:
            self.count("handler_errors")
            log.exception("%s failed", what)

    def _on_message(self, msg: Incoming) -> None:
        """The one place a peer's message enters a node. It is acknowledged to the broker only after
        its handler ran (stored, refused or ignored): a node killed before that gets it again."""
        try:
            self._handle(msg)
        finally:
            self.conn.ack(msg)

    def _handle(self, msg: Incoming) -> None:
        self.count("bytes_in", len(msg.payload))
        handler = self.handlers.get(self.topics.kind(msg.topic))
        if handler is None:
            return
        try:
            handler(msg)
        except ProtocolError as exc:
            self.reject(exc.reason, exc.detail, source=sender(msg.topic))
        except Exception:  # a bug or an unforeseen input: count it, keep the node alive
            self.count("handler_errors")
            log.exception("handler for %s failed", self.topics.kind(msg.topic))

    def background(self, name: str, work: Callable[[], Any], done: Callable[[Any], None]) -> None:
        """Run `work` in a thread; `done(result)` (None if it raised) runs later on the loop's thread."""

        def run() -> None:
            try:
                result = work()
            except Exception:
                log.exception("background job %s failed", name)
                result = None
            self.inbox.put(_Done(done, result))

        if self.jobs is not None:
            self.jobs.submit(run)
        else:
            threading.Thread(target=run, name=name, daemon=True).start()

    # --- hooks for subclasses ---
    def wait_seconds(self) -> float:
        """How long the loop may block waiting for an event."""
        return 0.5

    def after_event(self) -> None:
        """Runs after every event (and every idle wake-up)."""

    def on_connected(self) -> None:
        self.request_sync()

    def on_ack(self, ack: Acked) -> None:
        pass

    def on_block_accepted(self, state: BlockState, raw: bytes | None) -> None:
        """A valid block was stored (`raw` is None for a snapshot's checkpoint)."""

    def on_block_opened(self, state: BlockState, opened: Opened) -> None:
        """A block's aggregate was opened from gossiped partials (Paillier): its model is known now."""

    def _opened(self, state: BlockState, opened: Opened) -> None:
        self.count("aggregates_opened")
        self.timeline.mark("opened", block=state.hash)
        if opened.overflow:
            self.count("aggregates_overflowed")
            event(log, logging.WARNING, "aggregate broke its slots; model unchanged", height=state.header.height)
        self.mark_dirty()
        self.on_block_opened(state, opened)

    def on_new_tip(self) -> None:
        event(log, logging.INFO, "new tip", height=self.store.tip.header.height, hash=self.store.tip.hash.hex()[:16])
        self.mark_dirty()

    def on_invalid_block(self, raw: bytes, error: ProtocolError) -> None:
        """A block broke a block rule (miners keep it as evidence against its signer)."""

    def on_rejection(self, notice: sync.Rejection) -> None:
        """A miner refused one of this node's updates."""

    def sync_targets(self, hint: str | None) -> list[str]:
        """Which miners to ask for missing blocks; `hint` is the node that showed us something new."""
        raise NotImplementedError

    def wants_snapshot(self) -> bool:
        return False

    def known_updates(self) -> Mapping[bytes, Update] | None:
        """Updates this node has already verified, by digest (a miner's pool)."""
        return None

    def status_details(self) -> dict:
        return {}

    def on_close(self) -> None:
        pass

    # --- chain ---
    def accept_block(self, raw: bytes, source: str | None) -> bool:
        """Validate and store a block; a missing parent starts a sync with `source`."""
        before, refused, received = self.store.tip.hash, self.store.reorgs_refused, now_ms()
        try:
            state, _ = self.store.add(raw, known_updates=self.known_updates())
        except ProtocolError as exc:
            if exc.reason is Reason.UNKNOWN_PARENT:
                self.request_sync(source)
            else:
                self.reject(exc.reason, exc.detail, source=f"block:{source}")
                self.on_invalid_block(raw, exc)
                if self.alerter:
                    self.alerter.invalid_block(raw)
            return False
        self.stored(state, raw, before, refused, received)
        return True

    def stored(self, state: BlockState, raw: bytes | None, before: bytes, refused: int, received: int) -> None:
        """After a block (or light block, `raw` None) was stored: hooks, openings, reorg and tip news."""
        self.timeline.mark("block", block=state.hash, height=state.header.height, received=received, **self.traffic())
        self.on_block_accepted(state, raw)
        if self.openings is not None:
            self.openings.block_arrived()
        if self.store.reorgs_refused != refused:
            self.count("reorgs_refused")
            limit = self.task.chain.max_reorg_depth
            event(log, logging.WARNING, "deep reorganisation refused", height=state.header.height, limit=limit)
        if self.store.tip.hash != before:
            self.on_new_tip()

    def on_block(self, msg: Incoming) -> None:
        self.accept_block(msg.payload, sender(msg.topic))

    def on_head(self, msg: Incoming) -> None:
        """A miner's retained head: if it is ahead of us and unknown, ask that miner for blocks."""
        source = sender(msg.topic)
        try:
            header = Header.decode(msg.payload)
        except ProtocolError:
            return
        if source != self.me and header.height > self.store.tip.header.height and not self.store.has(header.hash):
            if self.light:  # its light block is probably on the way: sync only if it does not come
                self.light.on_head(source, header)
            else:
                self.request_sync(source)

    def request_sync(self, hint: str | None = None) -> None:
        hashes = [h.hash for h in self.store.best_chain()]
        request = sync.make_request(self.identity, self.task, hashes, snapshot=self.wants_snapshot())
        for target in self.sync_targets(hint):
            reply_to = self.topics.reply(self.me)
            self.publish(self.topics.sync(target), request, response_topic=reply_to, correlation=os.urandom(8))

    def on_reply(self, msg: Incoming) -> None:
        reply = sync.parse_reply(msg.payload, self.task)
        if isinstance(reply, sync.Rejection):
            self.on_rejection(reply)
            return
        source = node_id(reply.signer)
        if reply.snapshot is not None and self.adopts_snapshots:
            self.consider_snapshot(reply.snapshot, reply.signer)
        for raw in reply.blocks:
            if not self.accept_block(raw, source):
                return
        if len(reply.blocks) >= sync.MAX_SYNC_BLOCKS:
            self.request_sync(source)  # there may be more

    def consider_snapshot(self, snapshot: sync.Snapshot, signer: bytes) -> None:
        """Adopt a snapshot only when snapshot_quorum distinct miners sent the same one (tip, round
        base, revocations): one peer's proof-of-work alone never decides where a joiner starts."""
        if self.store.tip.header.height > 0:
            return
        self._snapshot_votes[signer] = snapshot.agreement_key  # one vote per miner, its latest
        agreeing = sum(key == snapshot.agreement_key for key in self._snapshot_votes.values())
        if agreeing < min(self.task.chain.snapshot_quorum, len(self.task.miners)):
            event(log, logging.INFO, "snapshot vote", agreeing=agreeing, height=len(snapshot.headers))
            return
        self._snapshot_votes.clear()
        before = self.store.tip.hash
        state = self.store.add_checkpoint(snapshot)
        event(log, logging.INFO, "snapshot adopted", height=state.header.height, miners=agreeing)
        self.on_block_accepted(state, None)
        if self.store.tip.hash != before:
            self.on_new_tip()

    # --- output ---
    def publish(self, topic: str, payload: bytes, **kw) -> int:
        self.count("bytes_out", len(payload))
        return self.conn.publish(topic, payload, **kw)

    def traffic(self) -> dict:
        """Payload bytes received and sent so far (the timeline records them at block boundaries)."""
        return {"bytes_in": self.counters["bytes_in"], "bytes_out": self.counters["bytes_out"]}

    def count(self, name: str, amount: float = 1) -> None:
        self.counters[name] += amount
        self._dirty = True

    def mark_dirty(self) -> None:
        self._dirty = True

    def reject(self, reason: Reason, detail: str, **fields) -> None:
        """Count a refused message by reason and log it once."""
        self.rejections[reason.value] += 1
        self._dirty = True
        event(log, logging.WARNING, "rejected", reason=reason.value, detail=detail[:200], **fields)

    def status(self) -> Status:
        tip = self.store.tip.header
        return Status(
            node=self.me,
            role=self.role,
            tip_height=tip.height,
            tip=tip.hash.hex(),
            counters=dict(self.counters),
            rejections=dict(self.rejections),
            details=self.status_details(),
            written_ms=now_ms(),
        )

    def write_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and (not self._dirty or now - self._status_written < STATUS_MIN_INTERVAL_S):
            return
        self._dirty = False
        self._status_written = now
        self.snapshot = self.status()  # read by other threads (a metrics endpoint): replaced, never changed
        self.snapshot.write(self.status_path)
