"""A device node: follow the best chain, verify every global model, train, publish updates.

Each new best block: the device validates it (its model hash included), trains the new global
model on local data with ONNX Runtime, and publishes the delta signed and sealed to its miner.
Blocks it missed (offline, late, or a reorg) it fetches with sync requests. A stale update (a
better block came first) is dropped and the device trains again on the new tip. Its chain and
its undelivered update (node/outbox.py) live on disk, so a restart resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_sdk.chain.database import Database
from edge_sdk.chain.store import ChainStore
from edge_sdk.chain.view import BlockState
from edge_sdk.clock import now_ms
from edge_sdk.files import DAMAGED_SUFFIX, set_aside
from edge_sdk.node.bundle import Bundle
from edge_sdk.node.logs import event
from edge_sdk.node.outbox import Outbox
from edge_sdk.node.runtime import Node
from edge_sdk.node.status import DeliveryLog, ModelHashLog, Timeline, device_status_path, timeline_path
from edge_sdk.privacy.dp import clip_and_noise
from edge_sdk.privacy.paillier import MaskPool, encrypt_update
from edge_sdk.protocol import envelope, sync
from edge_sdk.protocol.block import make_update
from edge_sdk.protocol.errors import Reason
from edge_sdk.protocol.fixedpoint import model_hash, to_float
from edge_sdk.protocol.identity import Identity
from edge_sdk.training.trainers import Trainer, make_trainer
from edge_sdk.transport.mqtt import NO_MATCHING_SUBSCRIBERS, Acked, Incoming, MessageTooLarge
from edge_sdk.transport.topics import Topics, sender

log = logging.getLogger("blockfl.device")
CHAIN_FILE = "chain.db"
# Refusals that say the miner is behind this device, not that the update is bad: while the device's
# own round base is still the update's, it keeps the update and sends it again later.
TRANSIENT = frozenset({Reason.STALE_BASE.value, Reason.BAD_TIMESTAMP.value})
RETRY_S = 1.0
IDLE_WAIT_S = 5.0


@dataclass(frozen=True)
class Trained:
    base: bytes
    update: bytes
    train_seconds: float
    crypto_seconds: float


def open_chain(path: Path, genesis: bytes) -> ChainStore:
    """The device's chain. One SQLite cannot read (torn or overwritten: WAL with synchronous=FULL
    survives kills, not a failing card) is set aside with its journal, and the device starts again
    from genesis: the network has every block, and a snapshot brings it back quickly."""
    db = None
    try:
        db = Database(path)
        verdict = db.one("PRAGMA quick_check")[0]  # pages a kill cannot tear but a card can lose
        if verdict != "ok":
            raise sqlite3.DatabaseError(str(verdict)[:100])
        return ChainStore(db, genesis)
    except sqlite3.DatabaseError as exc:
        if db is not None:
            db.close()
        for journal in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if journal.exists():
                journal.replace(journal.with_name(journal.name + DAMAGED_SUFFIX))
        set_aside(path, f"sqlite: {exc}")
        return ChainStore(path, genesis)


class Device(Node):
    role = "device"
    adopts_snapshots = True

    def __init__(
        self,
        *,
        bundle: Bundle,
        identity: Identity,
        data: tuple[np.ndarray, np.ndarray],
        state_dir: str | Path,
        backend: str = "auto",
        preferred_miner: int = 0,
        trainer: Trainer | None = None,
        verify: str = "full",
    ):
        """`trainer`: one shared by devices of the same model in one process (its sessions are
        thread-safe); by default the device makes its own from the bundle's package."""
        task = bundle.task
        if bundle.cert.device != identity.public.sign_pk:
            raise ValueError("the certificate in the bundle is for another device")
        self.x, self.y = data
        if len(self.x) > bundle.cert.quota:
            raise ValueError(f"{len(self.x)} samples exceed the certificate's quota of {bundle.cert.quota}")
        self.bundle = bundle
        self.state = Path(state_dir)
        self.state.mkdir(parents=True, exist_ok=True)
        privacy = task.privacy
        self.masks = None
        if privacy.encrypted:  # public key only; encryption masks are made while idle
            values = sum(v.size for v in task.initial_model.values())
            self.masks = MaskPool(privacy.packing.n, 2 * privacy.packing.ciphertext_count(values))
        store = open_chain(self.state / CHAIN_FILE, bundle.genesis)
        self.trainer = trainer or make_trainer(bundle.package, backend)
        miners = list(task.miners)
        k = preferred_miner % len(miners)
        self.miners = miners[k:] + miners[:k]
        # a miner's retained presence: True online, False offline, None not heard yet. A miner announces
        # "online" only after subscribing, so an update sent before that would be dropped by the broker.
        self.online: dict[str, bool | None] = {m.node_id: None for m in self.miners}
        self.miner = self.miners[0]
        self.hashes = ModelHashLog(self.state)
        self.delivered = DeliveryLog(self.state)  # audit trail: updates the broker acknowledged
        for journal in (self.hashes, self.delivered):
            journal.recover()
        self.training = False
        timeline = Timeline(timeline_path(device_status_path(self.state)))
        self.outbox = Outbox(self.state, task, identity.public.sign_pk, store.tip.base, timeline)
        self.trained_for = self.outbox.signed_for  # the base of the last training started (unsigned if dropped)
        self.rejected_by_miners: dict[str, int] = {}
        super().__init__(
            identity=identity,
            store=store,
            broker=bundle.broker,
            handlers={"presence": self.on_presence},
            # miners' presence only: with presence/+ every device would receive every other device's
            # retained presence, N^2 messages for N devices
            subscriptions=[Topics(task.id).presence(m.node_id) for m in self.miners],
            status_path=device_status_path(self.state),
            verify=verify,
            alert_cert=bundle.cert_raw,
        )

    # --- runtime hooks ---
    def on_connected(self) -> None:
        self.request_sync()
        self.outbox.send_now()  # what the broker had not saved before a crash is gone: send it again
        self._deliver()
        self.mark_dirty()

    def sync_targets(self, hint: str | None) -> list[str]:
        if self.wants_snapshot():  # a snapshot is trusted only when several miners agree on it
            return [m.node_id for m in self.miners]
        return [hint if hint in self.online else self.miner.node_id]

    def wants_snapshot(self) -> bool:
        return self.store.tip.header.height == 0  # a late joiner asks for a snapshot rather than every block

    def on_block_accepted(self, state: BlockState, raw: bytes | None) -> None:
        """Record the model hash this device computed for the block, for cross-device checks (in
        Paillier modes a block with updates has its model once its aggregate is opened)."""
        if state.model is not None:
            self.hashes.append(state.header.height, state.hash, model_hash(state.model, self.task.chain.frac_bits))

    def on_block_opened(self, state: BlockState, opened) -> None:
        self.on_block_accepted(state, None)

    def on_rejection(self, notice: sync.Rejection) -> None:
        self.rejected_by_miners[notice.reason] = self.rejected_by_miners.get(notice.reason, 0) + 1
        self.mark_dirty()
        event(log, logging.WARNING, "update rejected", reason=notice.reason[:40])
        if notice.digest == self.outbox.digest:
            if notice.reason in TRANSIENT and self.outbox.base == self.store.tip.base:
                self.outbox.acknowledged()  # that miner is behind this device: the update stands, send it again later
            else:
                self.outbox.drop()  # an outcome (on `replay`, that miner has it already)
        if notice.reason == Reason.STALE_BASE.value and notice.tip != self.store.tip.hash:
            self.request_sync(self.miner.node_id)  # the miner knows a newer tip: catch up, then retrain

    def after_event(self) -> None:
        self._maybe_train()
        self._deliver()

    def wait_seconds(self) -> float:
        """A device has nothing to do between events but publishing its update again (and a light
        device's head grace): idle, it sleeps long, so a thousand agents in one process stay cheap."""
        box, now = self.outbox, time.monotonic()
        if box.update is not None and box.in_flight is None and box.due > now:
            return min(IDLE_WAIT_S, box.due - now)
        if self.light is not None and self.light.heads:
            return 0.5
        return IDLE_WAIT_S

    def status_details(self) -> dict:
        verify = "light" if self.light else "full"
        return {"miner": self.miner.node_id, "verify": verify, "rejected_by_miners": dict(self.rejected_by_miners)}

    def on_close(self) -> None:
        if self.masks is not None:
            self.masks.close()

    # --- miners coming and going ---
    def on_presence(self, msg: Incoming) -> None:
        node = sender(msg.topic)
        if node not in self.online:
            return
        self.online[node] = msg.payload == b"online"
        self._choose_miner()
        self._deliver()

    def _choose_miner(self) -> None:
        """The first online miner in preference order: a device fails over when its miner goes, and
        goes back when it returns, so devices do not pile up on whichever miner came online first."""
        alive = [m for m in self.miners if self.online[m.node_id]]
        if not alive or alive[0] is self.miner:
            return
        self.miner = alive[0]
        self.outbox.send_now()  # the update without an outcome goes to this one too
        self.mark_dirty()
        event(log, logging.INFO, "switched miner", miner=self.miner.node_id)

    # --- training and updates ---
    def _maybe_train(self) -> None:
        tip = self.store.tip
        if self.training or tip.base == self.trained_for or self.outbox.has_signed(tip.base) or tip.model is None:
            return  # (no model yet: a Paillier aggregate waits for t partial decryptions)
        base, params, height = tip.base, to_float(tip.model, self.task.chain.frac_bits), tip.header.height
        self.trained_for = base
        self.training = True
        event(log, logging.INFO, "training", height=height)
        self.timeline.mark("train", base=base, height=height)
        self.background("train", lambda: self._train(base, params, height), self._on_trained)

    def _train(self, base: bytes, params: dict, height: int) -> Trained:
        """Runs in a worker thread: reads the node's settings, changes no node state."""
        started = time.perf_counter()
        delta, samples = self.local_update(params, height)
        privacy = self.task.privacy
        if privacy.dp:  # paillier+dp: this device's share of the noise the aggregate carries
            delta = clip_and_noise(delta, privacy.dp_clip, privacy.device_noise())
        train_seconds, crypto_seconds = time.perf_counter() - started, 0.0
        cert = self.bundle.cert_raw
        if privacy.encrypted:
            started = time.perf_counter()
            ciphertexts = self.encrypt(delta, privacy.weight(samples))
            crypto_seconds = time.perf_counter() - started
            update = make_update(self.identity, self.task, cert, base, samples, None, now_ms(), ciphertexts=ciphertexts)
        else:
            top = np.nextafter(np.float32(2.0**self.task.chain.delta_bits), np.float32(0))
            delta = {p: np.clip(v, -top, top).astype(np.float32) for p, v in delta.items()}
            update = make_update(self.identity, self.task, cert, base, samples, delta, now_ms())
        return Trained(base, update, train_seconds, crypto_seconds)

    def local_update(self, params: dict, height: int) -> tuple[dict, int]:
        """Train on local data from `params`: the float delta and the sample count to claim.
        (The emulator's attackers override this one step and nothing else.)"""
        training = self.task.training
        # the shuffle depends on who trains and for which round, so runs repeat and siblings agree
        seed_bytes = hashlib.sha256(self.identity.public.sign_pk + height.to_bytes(8, "big")).digest()[:4]
        result = self.trainer.fit(
            params,
            self.x,
            self.y,
            epochs=training.epochs,
            batch_size=training.batch_size,
            learning_rate=training.learning_rate,
            seed=int.from_bytes(seed_bytes, "big"),
        )
        return {p: result.params[p] - params[p] for p in params}, len(self.x)

    def encrypt(self, delta: dict, weight: int) -> list[bytes]:
        """Paillier modes: the ciphertexts of the weighted delta (the emulator's overflow attacker
        overrides this step)."""
        return encrypt_update(delta, weight, self.task.shapes, self.task.privacy.packing, self.masks)

    def _on_trained(self, done: Trained | None) -> None:
        self.training = False
        if done is None:
            return  # training failed (logged); the next tip trains again
        self.count("train_seconds", done.train_seconds)
        self.count("crypto_seconds", done.crypto_seconds)
        if done.base != self.store.tip.base:
            self.count("retrains")  # a better block arrived while training: train on it instead
            return
        self.timeline.mark("trained", base=done.base, digest=hashlib.sha256(done.update).digest())
        self.outbox.hold(done.update, done.base)  # on disk: never a second update on this base, even after a restart
        self._deliver()

    def _deliver(self) -> None:
        """Drop the held update once stale; publish it if due and the miner is online."""
        box = self.outbox
        if box.update is not None and box.in_flight is None and box.base != self.store.tip.base:
            box.drop()  # an outcome: the round closed (with or without it); (in flight: once the PUBACK is logged)
            return
        if not box.ready(time.monotonic()) or not self.online[self.miner.node_id]:
            return  # on_presence delivers it when a miner is online
        sealed = envelope.seal(self.miner.box_pk, box.update)
        try:
            box.published(self.publish(self.topics.update(self.miner.node_id, self.me), sealed))
        except MessageTooLarge as exc:
            event(log, logging.ERROR, "update too large", detail=str(exc))
            box.drop()
            return
        self.count("updates_sent")
        if box.sends > 1:
            self.count("updates_resent")
        self.timeline.mark("sent", digest=box.digest)

    def on_ack(self, ack: Acked) -> None:
        box = self.outbox
        if box.in_flight is None or ack.mid != box.in_flight:
            return
        if ack.reason == NO_MATCHING_SUBSCRIBERS:  # the broker dropped it: the miner is not subscribed yet
            box.retry_in(RETRY_S)
        elif ack.reason >= 0x80:  # refused by the broker (its ACL or limits): sending again changes nothing
            event(log, logging.ERROR, "broker refused the update", reason_code=ack.reason)
            box.drop()
        else:  # the broker has it; delivered once a miner pooled it: keep it until an outcome comes
            self.delivered.append(box.digest, box.base, now_ms())
            box.acknowledged()
