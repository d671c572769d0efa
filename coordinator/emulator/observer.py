"""The emulator's observer: follows the best chain read-only, as a verifying node would, and
evaluates each new global model on the held-out test set; the report is made from what it saw."""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Callable

from coordinator.emulator.layout import Layout
from coordinator.emulator.processes import Federation
from edge_sdk.chain.memory import MemoryChain
from edge_sdk.chain.opening import Opened
from edge_sdk.node.openings import Openings
from edge_sdk.protocol.block import Block, Update
from edge_sdk.protocol.errors import ProtocolError
from edge_sdk.protocol.fixedpoint import to_float
from edge_sdk.protocol.identity import node_id
from edge_sdk.training.package import ModelPackage
from edge_sdk.training.trainers import PortableTrainer
from edge_sdk.transport.mqtt import BrokerConfig, Connection, Incoming
from edge_sdk.transport.topics import ANY, Topics


class Observer:
    def __init__(self, layout: Layout, genesis: bytes, broker: BrokerConfig, test_set, *, miners: int, devices: int,
                 dp_delta: float, say: Callable[[str], None]):  # fmt: skip
        self.layout, self.miners, self.devices, self.dp_delta, self.say = layout, miners, devices, dp_delta, say
        self.chain = MemoryChain(genesis)
        self.task = self.chain.task
        self.topics = Topics(self.task.id)
        subscriptions = [self.topics.block(ANY), self.topics.genesis]
        self.genesis, self.genesis_retained = genesis, False  # what a late node finds on the broker
        self.openings = None
        if self.task.privacy.encrypted:  # models come, as for a device, from the miners' partial decryptions
            self.openings = Openings(self.chain, lambda state, opened: self._opened(state.hash, opened))
            subscriptions.append(self.topics.partial(ANY))
        self.conn = Connection(broker, client_id=f"observer-{os.getpid()}", subscriptions=subscriptions)
        self.evaluator = PortableTrainer(ModelPackage.load(layout.task.model))
        self.x_test, self.y_test = test_set
        self.rounds: dict[str, dict] = {}
        self._last_totals = {"bytes": 0, "rejections": {}, "aggregate_ms": 0, "crypto_s": 0.0}
        initial = to_float(self.task.initial_model, self.task.chain.frac_bits)
        self.initial = self.evaluator.evaluate(initial, self.x_test, self.y_test)

    def follow(self, fed: Federation, started: float, rounds: int, timeout: float) -> bool:
        """Until the best chain reaches `rounds` blocks (True), a process dies or time runs out (False)."""
        self.conn.start()
        self._started = started
        deadline = started + timeout
        last = None
        while time.monotonic() < deadline:
            dead = fed.dead()
            if dead:
                self.say(f"process(es) exited early: {', '.join(dead)}; see {self.layout.logs}")
                return False
            if not self._take(0.5):
                continue
            tip = self.chain.tip
            entry = self.rounds.get(tip.hash.hex())
            if entry is None or entry.get("accuracy") is None:
                continue  # (Paillier: the tip's aggregate is not opened yet)
            if tip.hash != last:
                switched = last is not None and self.chain.get(last).header.height >= tip.header.height
                last = tip.hash
                self._progress(entry, rounds, switched, started)
            if tip.header.height >= rounds:
                return True
        self.say(f"timed out after {timeout:.0f}s at height {self.chain.tip.header.height}")
        return False

    def settle(self, deadline: float, quiet_s: float = 1.0) -> bool:
        """After the miners stopped mining: read what is still on its way until every miner's tip is
        this observer's and nothing arrived for `quiet_s` (True), or the deadline (False)."""
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            if self._take(0.2):
                quiet_since = time.monotonic()
                continue
            tips = {s.tip if s else None for s in (self.layout.miner_status(i) for i in range(self.miners))}
            if tips == {self.chain.tip.hash.hex()} and time.monotonic() - quiet_since >= quiet_s:
                return True
        return False

    def close(self) -> None:
        self.conn.stop()

    def _take(self, timeout: float) -> bool:
        """Handle one block or partial decryption, if one arrives within `timeout`."""
        try:
            item = self.conn.inbox.get(timeout=timeout)
        except queue.Empty:
            return False
        if not isinstance(item, Incoming):
            return False
        try:
            if item.topic == self.topics.genesis:
                self.genesis_retained = item.payload == self.genesis
            elif self.topics.kind(item.topic) == "partial":
                self.openings.receive(item.payload, item.topic.rsplit("/", 1)[-1])
            else:
                state = self.chain.add(item.payload)
                self._record(state, item.payload, self._started)
                if self.openings is not None:
                    self.openings.block_arrived()
        except ProtocolError:
            pass
        return True

    def _progress(self, r: dict, rounds: int, switched: bool, started: float) -> None:
        extra = f"  epsilon {r['epsilon']:.2f}" if "epsilon" in r else ""
        self.say(
            f"round {r['height']}/{rounds}{' (fork switch)' if switched else ''}  accuracy {r['accuracy']:.3f}  "
            f"loss {r['loss']:.3f}  block interval {r['block_interval_s']:.1f}s  updates {r['updates']}  "
            f"miner {r['miner_id'][:8]}{extra}  [{time.monotonic() - started:.0f}s]"
        )

    def _record(self, state, raw: bytes, started: float) -> None:
        block = Block.parse(raw, self.task.chain.max_block_bytes)
        parent = self.chain.get(state.header.prev_hash)
        entry = self.rounds[state.hash.hex()] = {
            "height": state.header.height,
            "hash": state.hash.hex(),
            "miner": state.header.miner.hex(),
            "miner_id": node_id(state.header.miner),
            "updates": len(block.update_bytes),
            "accuracy": None,
            "loss": None,
            "block_interval_s": (state.header.timestamp_ms - parent.header.timestamp_ms) / 1000,
            "block_bytes": len(raw),
            "update_bytes": sum(len(u) for u in block.update_bytes),
            "excluded": self._excluded(block),
            "seen_at_s": round(time.monotonic() - started, 3),
        }
        if state.opened is not None:  # this block's decryption opened its parent
            self._opened(state.header.prev_hash, state.opened)
        if state.model is not None:
            self._evaluate(state.hash)
        if self.chain.tip.hash != state.hash:
            return
        # the traffic and rejections since the previous tip
        totals, last = self._totals(), self._last_totals
        entry["wire_bytes"] = totals["bytes"] - last["bytes"]
        entry["rejections"] = {
            k: v - last["rejections"].get(k, 0)
            for k, v in totals["rejections"].items()
            if v != last["rejections"].get(k, 0)
        }
        if self.task.privacy.encrypted:
            entry["miner_aggregate_ms"] = round(totals["aggregate_ms"] - last["aggregate_ms"], 1)
            entry["device_encrypt_s"] = round(totals["crypto_s"] - last["crypto_s"], 3)
        if self.task.privacy.dp:
            from coordinator.emulator.accountant import epsilon

            entry["epsilon"] = epsilon(self.task.privacy.dp_noise, state.header.height, self.dp_delta)
        self._last_totals = totals

    def _opened(self, block_hash: bytes, opened: Opened) -> None:
        entry = self.rounds.get(block_hash.hex())
        if entry is not None:
            entry["overflow"] = opened.overflow  # the aggregate broke its slots: the model stayed as it was
        self._evaluate(block_hash)

    def _evaluate(self, block_hash: bytes) -> None:
        entry, state = self.rounds.get(block_hash.hex()), self.chain.get(block_hash)
        if entry is None or state is None or state.model is None or entry["accuracy"] is not None:
            return
        params = to_float(state.model, self.task.chain.frac_bits)
        evaluation = self.evaluator.evaluate(params, self.x_test, self.y_test)
        entry["accuracy"], entry["loss"] = evaluation.accuracy, evaluation.loss

    def _excluded(self, block: Block) -> list[str] | None:
        """Node ids of the updates the block's aggregation rule left out (`extras.excluded`, update
        indexes), or None where blocks do not say (read defensively: older blocks carry no extras)."""
        extras = block.envelope.body.get("extras")
        indexes = extras.get("excluded") if isinstance(extras, dict) else None
        if not isinstance(indexes, list):
            return None
        updates = block.update_bytes
        return [
            node_id(Update.parse(updates[i], self.task).device)
            if isinstance(i, int) and 0 <= i < len(updates)
            else f"#{i}"
            for i in indexes
        ]

    def _totals(self) -> dict:
        """Bytes miners sent and received, rejections by reason, aggregation and encryption time, so far."""
        total, rejections, aggregate_ms, crypto_s = 0, {}, 0.0, 0.0
        for i in range(self.miners):
            status = self.layout.miner_status(i)
            if status is None:
                continue
            total += status.counters.get("bytes_in", 0) + status.counters.get("bytes_out", 0)
            aggregate_ms += status.counters.get("aggregate_ms", 0)
            for k, v in status.rejections.items():
                rejections[k] = rejections.get(k, 0) + v
        for i in range(self.devices):
            status = self.layout.device_status(i)
            crypto_s += status.counters.get("crypto_seconds", 0.0) if status else 0.0
        return {"bytes": total, "rejections": rejections, "aggregate_ms": aggregate_ms, "crypto_s": crypto_s}
