"""A device node: follow the best chain, verify every global model, train, publish updates.

Each new best block: the device validates it (its model hash included), trains the new global
model on local data with ONNX Runtime, and publishes the delta signed and sealed to its miner.
Blocks it missed (offline, late, or a reorg) it fetches with sync requests. A stale update (a
better block came first) is dropped and the device trains again on the new tip. Its chain and
its unacknowledged update live on disk, so a restart resumes where it stopped.
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import codec, envelope, sync
from .block import Header, make_update
from .cert import Certificate
from .chain import now_ms
from .errors import ProtocolError, Reason
from .keys import Identity
from .logs import event
from .mqtt import Acked, BrokerConfig, Connected, Connection, Incoming, MessageTooLarge
from .paillier import Decryptor, MaskPool, encrypt_update
from .params import model_hash, to_fixed, to_float
from .privacy import clip_and_noise, open_private_key
from .store import ChainStore
from .topics import Topics
from .training import ModelPackage, make_trainer
from .validation import validate_genesis

log = logging.getLogger("blockfl.device")


@dataclass(frozen=True)
class Trained:
    base: bytes
    update: bytes


class Bundle:
    """What enrolment gives a device: genesis, certificate, model package, broker settings."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.genesis = (self.directory / "genesis.block").read_bytes()
        _, self.task = validate_genesis(self.genesis)
        self.cert_raw = (self.directory / "cert.bin").read_bytes()
        self.cert = Certificate.parse(self.cert_raw, self.task)
        self.package = ModelPackage.load(self.directory / "model")
        self.broker = BrokerConfig.load(self.directory / "broker.json")
        self._check_package()

    def _check_package(self) -> None:
        for name, digest in self.task.model_files.items():
            if hashlib.sha256((self.package.directory / name).read_bytes()).digest() != digest:
                raise ValueError(f"model package file {name} differs from the one the task commits to")
        initial = to_fixed(self.package.initial_params(), self.task.chain.frac_bits)
        if model_hash(initial, self.task.chain.frac_bits) != model_hash(self.task.initial_model, self.task.chain.frac_bits):
            raise ValueError("the model package's initial parameters are not the genesis model")


class Device:
    def __init__(self, *, bundle: Bundle, identity: Identity, data: tuple[np.ndarray, np.ndarray], state_dir: str | Path,
                 backend: str = "auto", preferred_miner: int = 0):
        self.bundle, self.identity, self.task = bundle, identity, bundle.task
        if bundle.cert.device != identity.public.sign_pk:
            raise ValueError("the certificate in the bundle is for another device")
        self.x, self.y = data
        if len(self.x) > bundle.cert.quota:
            raise ValueError(f"{len(self.x)} samples exceed the certificate's quota of {bundle.cert.quota}")
        self.me = identity.public.node_id
        self.state = Path(state_dir)
        self.state.mkdir(parents=True, exist_ok=True)
        privacy = self.task.privacy
        self.masks = decryptor = None
        if privacy.encrypted:  # the key comes sealed to this device; encryption masks are made while idle
            key = open_private_key((bundle.directory / "paillier.key.sealed").read_bytes(), identity.box_key, privacy.packing.n)
            decryptor = Decryptor(key, privacy.packing)
            values = sum(v.size for v in self.task.initial_model.values())
            self.masks = MaskPool(privacy.packing.n, 2 * privacy.packing.ciphertext_count(values))
        self.store = ChainStore(self.state / "chain.db", bundle.genesis, decryptor=decryptor)
        self.trainer = make_trainer(bundle.package, backend)
        self.topics = Topics(self.task.id)
        miners = list(self.task.miners)
        k = preferred_miner % len(miners)
        self.miners = miners[k:] + miners[:k]
        self.online = {m.node_id: True for m in self.miners}
        self.miner = self.miners[0]
        t = self.topics
        self.conn = Connection(
            bundle.broker, client_id=f"device-{self.me}",
            subscriptions=[t.all("block"), t.all("head"), t.reply(self.me), t.all("presence")],
            will=(t.presence(self.me), b"offline"), online=(t.presence(self.me), b"online"),
        )
        self.inbox = self.conn.inbox
        self.training: threading.Thread | None = None
        self.trained_for: bytes | None = None
        self.pending: tuple[int, bytes] | None = None  # (mid, update) awaiting PUBACK
        self.stats = {"updates_sent": 0, "rejections": {}, "retrains": 0, "bytes_out": 0, "bytes_in": 0, "train_seconds": 0.0,
                      "crypto_seconds": 0.0}

    # --- lifecycle ---
    def run(self, *, until: float | None = None) -> None:
        self.conn.start()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self.inbox.put("stop"))
        try:
            while until is None or time.monotonic() < until:
                try:
                    item = self.inbox.get(timeout=0.5)
                except queue.Empty:
                    item = None
                if item == "stop":
                    break
                self._handle(item)
                self._maybe_train()
        finally:
            self._write_status()
            self.conn.stop()
            self.store.close()
            if self.masks is not None:
                self.masks.close()

    def _handle(self, item) -> None:
        if item is None:
            return
        if isinstance(item, Connected):
            self._request_sync()
            self._resend_outbox()
            self._write_status()
        elif isinstance(item, Acked):
            self._on_ack(item)
        elif isinstance(item, Trained):
            self._on_trained(item)
        elif isinstance(item, Incoming):
            self.stats["bytes_in"] += len(item.payload)
            kind = item.topic[len(self.topics.prefix) + 1:].split("/")[0]
            {"block": self._on_block, "head": self._on_head, "reply": self._on_reply, "presence": self._on_presence}.get(kind, lambda m: None)(item)

    # --- chain ---
    def _accept_block(self, raw: bytes) -> bool:
        before = self.store.tip.hash
        try:
            state, _ = self.store.add(raw)
        except ProtocolError as exc:
            if exc.reason is Reason.UNKNOWN_PARENT:
                self._request_sync()
            else:
                event(log, logging.WARNING, "block rejected", reason=exc.reason.value, detail=exc.detail[:200])
            return False
        self._record(state)
        if self.store.tip.hash != before:
            event(log, logging.INFO, "new tip", height=self.store.tip.header.height)
            self._write_status()
        return True

    def _record(self, state) -> None:
        """The model hash this device computed for the block, for cross-device checks."""
        line = {"height": state.header.height, "block": state.hash.hex(), "model_hash": model_hash(state.model, self.task.chain.frac_bits).hex()}
        with open(self.state / "model_hashes.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")

    def _on_block(self, msg: Incoming) -> None:
        self._accept_block(msg.payload)

    def _on_head(self, msg: Incoming) -> None:
        try:
            header = Header.decode(msg.payload)
        except ProtocolError:
            return
        if header.height > self.store.tip.header.height and not self.store.has(header.hash):
            self._request_sync(msg.topic.rsplit("/", 1)[-1])

    def _request_sync(self, miner_id: str | None = None) -> None:
        fresh = self.store.tip.header.height == 0  # a late joiner asks for a snapshot rather than every block
        request = sync.make_request(self.identity, self.task, [h.hash for h in self.store.best_chain()], snapshot=fresh)
        self._publish(self.topics.sync(miner_id or self.miner.node_id), request, response_topic=self.topics.reply(self.me), correlation=os.urandom(8))

    def _on_reply(self, msg: Incoming) -> None:
        try:
            kind = envelope.open_envelope(msg.payload, max_bytes=sync.MAX_SYNC_BLOCKS * self.task.chain.max_block_bytes).type
        except ProtocolError:
            return
        if kind == "sync_response":
            try:
                response = sync.parse_response(msg.payload, self.task)
                if response.headers:
                    state = self.store.add_checkpoint(response.headers, response.model)
                    self._record(state)
                    event(log, logging.INFO, "snapshot adopted", height=state.header.height)
                    self._write_status()
            except ProtocolError as exc:
                event(log, logging.WARNING, "sync response rejected", reason=exc.reason.value, detail=exc.detail[:200])
                return
            for raw in response.blocks:
                if not self._accept_block(raw):
                    return
            if len(response.blocks) >= sync.MAX_SYNC_BLOCKS:
                self._request_sync()  # there may be more
        elif kind == "rejection":
            notice = sync.parse_rejection(msg.payload, self.task)
            counts = self.stats["rejections"]
            counts[notice.reason] = counts.get(notice.reason, 0) + 1
            event(log, logging.WARNING, "update rejected", reason=notice.reason)
            if notice.reason == Reason.STALE_BASE.value and notice.tip != self.store.tip.hash:
                self._request_sync(self.miner.node_id)  # the miner knows a newer tip: catch up, then retrain

    def _on_presence(self, msg: Incoming) -> None:
        node = msg.topic.rsplit("/", 1)[-1]
        if node not in self.online:
            return
        self.online[node] = msg.payload == b"online"
        if node == self.miner.node_id and not self.online[node]:
            self._fail_over()

    def _fail_over(self) -> None:
        alive = [m for m in self.miners if self.online.get(m.node_id)]
        if not alive:
            return
        self.miner = alive[0]
        event(log, logging.WARNING, "miner offline; switched", miner=self.miner.node_id)
        if self.pending:
            self._send(self.pending[1])

    # --- training and updates ---
    def _maybe_train(self) -> None:
        tip = self.store.tip
        if self.training is not None or tip.hash == self.trained_for:
            return
        base, params = tip.hash, to_float(tip.model, self.task.chain.frac_bits)
        height = tip.header.height
        self.trained_for = base

        def work():
            started = time.perf_counter()
            training = self.task.training
            # the shuffle depends on who trains and for which round, so runs repeat and siblings agree
            seed = int.from_bytes(hashlib.sha256(self.identity.public.sign_pk + height.to_bytes(8, "big")).digest()[:4], "big")
            result = self.trainer.fit(params, self.x, self.y, epochs=training.epochs, batch_size=training.batch_size,
                                      learning_rate=training.learning_rate, seed=seed)
            delta = {p: result.params[p] - params[p] for p in params}
            privacy = self.task.privacy
            if privacy.dp:
                delta = clip_and_noise(delta, privacy.dp_clip, privacy.dp_noise)
            self.stats["train_seconds"] += time.perf_counter() - started
            if privacy.encrypted:
                started = time.perf_counter()
                ciphertexts = encrypt_update(delta, len(self.x), self.task.shapes, privacy.packing, self.masks)
                self.stats["crypto_seconds"] += time.perf_counter() - started
                update = make_update(self.identity, self.task, self.bundle.cert_raw, base, len(self.x), None, now_ms(), ciphertexts=ciphertexts)
            else:
                top = np.nextafter(np.float32(2.0 ** self.task.chain.delta_bits), np.float32(0))
                delta = {p: np.clip(v, -top, top).astype(np.float32) for p, v in delta.items()}
                update = make_update(self.identity, self.task, self.bundle.cert_raw, base, len(self.x), delta, now_ms())
            self.inbox.put(Trained(base, update))

        event(log, logging.INFO, "training", height=height)
        self.training = threading.Thread(target=work, name="train", daemon=True)
        self.training.start()

    def _on_trained(self, done: Trained) -> None:
        self.training = None
        if done.base != self.store.tip.hash:
            self.stats["retrains"] += 1  # a better block arrived while training: train on it instead
            return
        (self.state / "outbox.bin").write_bytes(done.update)
        self._send(done.update)

    def _send(self, update: bytes) -> None:
        sealed = envelope.seal(self.miner.box_pk, update)
        try:
            mid = self._publish(self.topics.update(self.miner.node_id, self.me), sealed)
        except MessageTooLarge as exc:
            event(log, logging.ERROR, "update too large", detail=str(exc))
            return
        self.pending = (mid, update)
        self.stats["updates_sent"] += 1

    def _resend_outbox(self) -> None:
        path = self.state / "outbox.bin"
        if not path.exists() or self.pending:
            return
        update = path.read_bytes()
        body = codec.decode(update)[3]
        if body.get("base") == self.store.tip.hash:
            self._send(update)
            self.trained_for = self.store.tip.hash
        else:
            path.unlink()

    def _on_ack(self, ack: Acked) -> None:
        if self.pending and ack.mid == self.pending[0]:
            if ack.reason >= 0x80:
                event(log, logging.ERROR, "broker refused the update", reason_code=ack.reason)
            self.pending = None
            (self.state / "outbox.bin").unlink(missing_ok=True)

    def _publish(self, topic: str, payload: bytes, **kw) -> int:
        self.stats["bytes_out"] += len(payload)
        return self.conn.publish(topic, payload, **kw)

    def _write_status(self) -> None:
        tip = self.store.tip.header
        status = {"node": self.me, "tip_height": tip.height, "tip": tip.hash.hex(), "miner": self.miner.node_id, **self.stats}
        tmp = self.state / "status.tmp"
        tmp.write_text(json.dumps(status))
        os.replace(tmp, self.state / "status.json")
