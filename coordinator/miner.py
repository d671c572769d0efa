"""A miner node: validates updates, cross-verifies them with the other miners, mines blocks,
follows the best chain, answers sync requests, and keeps chain, pool and counters in SQLite.

Everything that touches state runs on the main thread, fed by one queue (MQTT messages, publish
acknowledgements, found blocks, timers); only the nonce search runs in a worker thread, which
the main thread stops when a better tip arrives.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from edge_sdk import envelope, sync
from edge_sdk.aggregation import apply_updates
from edge_sdk.block import Block, Header, Update, block_template, seal_block
from edge_sdk.chain import now_ms
from edge_sdk.errors import ProtocolError, Reason
from edge_sdk.keys import Identity
from edge_sdk.params import encode_model
from edge_sdk.logs import event
from edge_sdk.mqtt import Acked, BrokerConfig, Connected, Connection, Incoming
from edge_sdk.store import ChainStore
from edge_sdk.topics import Topics
from edge_sdk.validation import check_update, expected_target

from .mining import search_nonce

log = logging.getLogger("blockfl.miner")

POOL_SCHEMA = """
CREATE TABLE IF NOT EXISTS pool (digest BLOB PRIMARY KEY, base BLOB NOT NULL, device BLOB NOT NULL, raw BLOB NOT NULL, received_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS included (digest BLOB NOT NULL, block BLOB NOT NULL, PRIMARY KEY (digest, block));
"""


@dataclass(frozen=True)
class Mined:
    header: Header
    updates: list[bytes]


class Miner:
    def __init__(self, *, identity: Identity, genesis: bytes, db_path: str | Path, broker: BrokerConfig, metrics_path: str | Path | None = None):
        self.identity = identity
        self.me = identity.public.node_id
        self.store = ChainStore(db_path, genesis)
        self.task = self.store.task
        if self.task.miner(identity.public.sign_pk) is None:
            raise ValueError("this identity is not in the task's miner set")
        self.store.conn.executescript(POOL_SCHEMA)
        self.topics = Topics(self.task.id)
        self.peers = [m for m in self.task.miners if m.sign_pk != identity.public.sign_pk]
        self.revoked: set[bytes] = set()
        self.metrics_path = Path(metrics_path) if metrics_path else Path(str(db_path) + ".metrics.json")
        self.counters: Counter = Counter()
        self.rejections: Counter = Counter()
        self._dirty = True
        t = self.topics
        self.conn = Connection(
            broker, client_id=f"miner-{self.me}",
            subscriptions=[f"{t.prefix}/update/{self.me}/+", f"{t.prefix}/gossip/{self.me}/+", t.all("block"), t.sync(self.me),
                           t.reply(self.me), t.revocations, t.all("head")],
            will=(t.presence(self.me), b"offline"), online=(t.presence(self.me), b"online"),
        )
        self.inbox = self.conn.inbox
        self._stop_mining: threading.Event | None = None
        self._round_started: int | None = None
        self._running = True

    # --- lifecycle ---
    def run(self, *, until: float | None = None) -> None:
        self.conn.start()
        signal.signal(signal.SIGTERM, lambda *_: self.inbox.put("stop"))
        try:
            while self._running and (until is None or time.monotonic() < until):
                try:
                    item = self.inbox.get(timeout=self._timeout())
                except queue.Empty:
                    item = None
                if item == "stop":
                    break
                self._handle(item)
                self._maybe_mine()
                self._write_metrics()
        finally:
            if self._stop_mining:
                self._stop_mining.set()
            self._write_metrics(force=True)
            self.conn.stop()
            self.store.close()

    def _timeout(self) -> float:
        if self._round_started is None:
            return 0.5
        left = (self._round_started + self.task.rounds.max_wait_ms - now_ms()) / 1000
        return max(0.01, min(0.5, left))

    def _handle(self, item) -> None:
        if item is None or isinstance(item, Acked):
            return
        if isinstance(item, Connected):
            self._publish_head()
            self._request_sync()
            return
        if isinstance(item, Mined):
            self._on_mined(item)
            return
        kind = item.topic[len(self.topics.prefix) + 1:].split("/")[0]
        self.counters["bytes_in"] += len(item.payload)
        self._dirty = True
        handler = {"update": self._on_update, "gossip": self._on_gossip, "block": self._on_block, "sync": self._on_sync_request,
                   "reply": self._on_reply, "revocations": self._on_revocations, "head": self._on_head}.get(kind)
        if handler:
            handler(item)

    # --- updates ---
    def _reject(self, reason: Reason, detail: str, **fields) -> None:
        self.rejections[reason.value] += 1
        self._dirty = True
        event(log, logging.WARNING, "rejected", reason=reason.value, detail=detail[:200], **fields)

    def _on_update(self, msg: Incoming) -> None:
        device_id = msg.topic.rsplit("/", 1)[-1]
        update = self._accept_update(msg.payload, source=device_id)
        if update is None:
            return
        for peer in self.peers:  # cross-verification: every other miner validates it again
            sealed = envelope.seal(peer.box_pk, update.envelope.raw)
            self._publish(self.topics.gossip(peer.node_id, self.me), sealed)

    def _on_gossip(self, msg: Incoming) -> None:
        self._accept_update(msg.payload, source="miner:" + msg.topic.rsplit("/", 1)[-1], notify=False)

    def _accept_update(self, sealed: bytes, *, source: str, notify: bool = True) -> Update | None:
        tip = self.store.tip
        digest = None
        try:
            raw = envelope.unseal(self.identity.box_key, sealed, max_bytes=self.task.chain.max_update_bytes)
            digest = hashlib.sha256(raw).digest()
            if self._seen(digest):
                raise ProtocolError(Reason.REPLAY, "this update was received before")
            update = Update.parse(raw, self.task)
            if update.device in self.revoked:
                raise ProtocolError(Reason.REVOKED, "the device's certificate is revoked")
            check_update(update, tip.header, now_ms(), self.task)
            if self.store.conn.execute("SELECT 1 FROM pool WHERE base = ? AND device = ?", (tip.hash, update.device)).fetchone():
                raise ProtocolError(Reason.DUPLICATE_DEVICE, "the device already has an update in this round")
        except ProtocolError as exc:
            self._reject(exc.reason, exc.detail, source=source)
            if notify and digest is not None and not source.startswith("miner:"):
                notice = sync.make_rejection(self.identity, self.task, digest, exc.reason, tip.hash)
                self._publish(self.topics.reply(source), notice)
            return None
        with self.store.conn:
            self.store.conn.execute("INSERT INTO pool VALUES (?, ?, ?, ?, ?)", (digest, update.base, update.device, raw, now_ms()))
        self.counters["updates_accepted"] += 1
        self._dirty = True
        if self._round_started is None:
            self._round_started = now_ms()
        event(log, logging.INFO, "update accepted", source=source, samples=update.samples)
        return update

    def _seen(self, digest: bytes) -> bool:
        conn = self.store.conn
        return bool(conn.execute("SELECT 1 FROM pool WHERE digest = ?", (digest,)).fetchone()
                    or conn.execute("SELECT 1 FROM included WHERE digest = ?", (digest,)).fetchone())

    def _pool(self) -> list[bytes]:
        rows = self.store.conn.execute("SELECT raw FROM pool WHERE base = ? ORDER BY received_ms, digest LIMIT ?",
                                       (self.store.tip.hash, self.task.chain.max_updates)).fetchall()
        return [r[0] for r in rows]

    # --- mining ---
    def _maybe_mine(self) -> None:
        if self._stop_mining is not None:
            return
        pool = self._pool()
        if not pool:
            self._round_started = None
            return
        if self._round_started is None:
            self._round_started = now_ms()
        waited = now_ms() - self._round_started
        if len(pool) < self.task.rounds.min_updates and waited < self.task.rounds.max_wait_ms:
            return
        parent = self.store.tip
        updates = [Update.parse(raw, self.task) for raw in pool]
        started = time.perf_counter()
        commitment, _ = apply_updates(self.task, parent.model, updates)  # miners never hold the Paillier key
        self.counters["aggregate_ms"] += round((time.perf_counter() - started) * 1000, 3)
        template = block_template(parent=parent.header, task=self.task, miner=self.identity.public.sign_pk, update_bytes=pool,
                                  commitment=commitment, timestamp_ms=max(now_ms(), parent.header.timestamp_ms),
                                  target=expected_target(self.task, parent.header, self.store))
        stop = threading.Event()
        self._stop_mining = stop
        start = int.from_bytes(os.urandom(4), "big") << 16  # miners search different nonce ranges

        def work():
            header = search_nonce(template, stop=stop, start=start)
            if header is not None and not stop.is_set():
                self.inbox.put(Mined(header, pool))
            elif stop.is_set():
                self.inbox.put(None)

        event(log, logging.INFO, "mining", height=template.height, updates=len(pool))
        threading.Thread(target=work, name="nonce-search", daemon=True).start()

    def _on_mined(self, mined: Mined) -> None:
        self._stop_mining = None
        if mined.header.prev_hash != self.store.tip.hash:
            return  # a better tip arrived meanwhile
        raw = seal_block(self.identity, mined.header, mined.updates)
        self.counters["blocks_mined"] += 1
        self._accept_block(raw, source="self")
        self._publish(self.topics.block(self.me), raw)

    # --- blocks ---
    def _on_block(self, msg: Incoming) -> None:
        self._accept_block(msg.payload, source=msg.topic.rsplit("/", 1)[-1])

    def _accept_block(self, raw: bytes, *, source: str) -> bool:
        before = self.store.tip.hash
        try:
            state, moved = self.store.add(raw)
        except ProtocolError as exc:
            if exc.reason is Reason.UNKNOWN_PARENT:
                self._request_sync(source)
            else:
                self._reject(exc.reason, exc.detail, source=f"block:{source}")
            return False
        with self.store.conn:
            self.store.conn.executemany("INSERT OR IGNORE INTO included VALUES (?, ?)",
                                        [(hashlib.sha256(u).digest(), state.hash) for u in Block.parse(raw, self.task.chain.max_block_bytes).update_bytes])
        if moved and self.store.tip.hash != before:
            self._on_new_tip()
        return True

    def _on_new_tip(self) -> None:
        if self._stop_mining is not None:
            self._stop_mining.set()
            self._stop_mining = None
        tip = self.store.tip
        with self.store.conn:
            self.store.conn.execute("DELETE FROM pool WHERE base != ?", (tip.hash,))
        self._round_started = None
        self._dirty = True
        event(log, logging.INFO, "new tip", height=tip.header.height, hash=tip.hash.hex()[:16])
        self._publish_head()

    def _publish_head(self) -> None:
        self._publish(self.topics.head(self.me), self.store.tip.header.encode(), retain=True)

    def _on_head(self, msg: Incoming) -> None:
        sender = msg.topic.rsplit("/", 1)[-1]
        try:
            header = Header.decode(msg.payload)
        except ProtocolError:
            return
        if sender != self.me and header.height > self.store.tip.header.height and not self.store.has(header.hash):
            self._request_sync(sender)

    # --- sync ---
    def _best_hashes(self) -> list[bytes]:
        return [h.hash for h in self.store.best_chain()]

    def _request_sync(self, miner_id: str | None = None) -> None:
        targets = [miner_id] if miner_id and miner_id != "self" else [p.node_id for p in self.peers]
        request = sync.make_request(self.identity, self.task, self._best_hashes())
        for target in targets:
            self._publish(self.topics.sync(target), request, response_topic=self.topics.reply(self.me), correlation=os.urandom(8))

    def _on_sync_request(self, msg: Incoming) -> None:
        try:
            request = sync.parse_request(msg.payload, self.task)
        except ProtocolError as exc:
            self._reject(exc.reason, exc.detail, source="sync")
            return
        if not msg.response_topic or not msg.response_topic.startswith(self.topics.prefix + "/reply/"):
            return
        best = self.store.best_chain()
        hashes = [h.hash for h in best]
        if sync.wants_snapshot(request, hashes) and not self.task.privacy.encrypted:  # a late joiner: headers and the tip's model, not every block
            model = encode_model(self.store.tip.model, self.task.chain.frac_bits)
            response = sync.make_response(self.identity, self.task, [], ([h.encode() for h in best[1:]], model))
            self._publish(msg.response_topic, response, correlation=msg.correlation)
            return
        blocks, size = [], 0
        for h in sync.blocks_after(hashes, request):
            raw = self.store.raw_block(h)
            size += len(raw)
            if blocks and size > self.task.chain.max_block_bytes:
                break
            blocks.append(raw)
        self._publish(msg.response_topic, sync.make_response(self.identity, self.task, blocks), correlation=msg.correlation)

    def _on_reply(self, msg: Incoming) -> None:
        try:
            blocks = sync.parse_response(msg.payload, self.task).blocks
        except ProtocolError:
            return  # rejections and notices for devices are not for miners
        for raw in blocks:
            if not self._accept_block(raw, source="sync"):
                return
        if len(blocks) >= sync.MAX_SYNC_BLOCKS:
            self._request_sync()  # there may be more

    def _on_revocations(self, msg: Incoming) -> None:
        try:
            env = envelope.open_envelope(msg.payload, expect="revocations", max_bytes=1 << 20)
            if env.signer != self.task.coordinator or env.body.get("task") != self.task.id:
                raise ProtocolError(Reason.BAD_BODY, "revocations not from this task's coordinator")
            self.revoked = {d for d in env.body["devices"] if isinstance(d, bytes)}
        except (ProtocolError, AttributeError, TypeError, KeyError) as exc:
            self._reject(Reason.BAD_BODY, str(exc), source="revocations")

    # --- output ---
    def _publish(self, topic: str, payload: bytes, **kw) -> None:
        self.counters["bytes_out"] += len(payload)
        self._dirty = True
        self.conn.publish(topic, payload, **kw)

    def _write_metrics(self, force: bool = False) -> None:
        if not (self._dirty or force):
            return
        self._dirty = False
        tip = self.store.tip.header
        data = {"node": self.me, "tip_height": tip.height, "tip": tip.hash.hex(), "counters": dict(self.counters),
                "rejections": dict(self.rejections), "written_ms": now_ms()}
        tmp = self.metrics_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.metrics_path)
