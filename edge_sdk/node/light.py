"""Light verification on a node: follow light blocks, check alerts, and raise alerts as a full node.

A light device stores each light block (header plus the model or aggregate it commits to) and
downloads no updates, so what it receives per round does not grow with the number of devices.
What it cannot check — that the commitment is the right aggregate of the block's updates — full
nodes check: a full node (every miner, and a device with verify = "full") that refuses a block
whose header is valid publishes an alert carrying the block. A light device verifies an alerted
block in full against its own chain before it goes on: if the alert is right, the block and
everything built on it are dropped for good. Assumption: at least one honest full node's alerts
reach the device.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

from edge_sdk.chain.rules import check_header, validate_block
from edge_sdk.clock import now_ms
from edge_sdk.node.logs import event
from edge_sdk.protocol.block import Block, Header, body_root
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.light import make_alert, parse_alert, parse_light

log = logging.getLogger("blockfl.light")
HEAD_GRACE_S = 3.0  # a head is followed by its light block; only a head still unknown after this starts a sync
MAX_DEVICE_PENDING = 4  # alerts from devices whose block's parent is not known yet (miners: one each)
MAX_REMEMBERED = 256  # blocks already alerted on (full node) or found valid (light device)


class LightFollower:
    """The light half of a node: its handlers for light/ and alert/, and deferred heads.

    Alert work is bounded by proof-of-work, not by accusers: an alert counts only if its block is
    the one its header's miner signed with the body its header commits to, and the header passes
    the header rules on its parent; each such header is verified in full once, whoever alerts on
    it. No accuser is ever muted (a light device's own state rests on light blocks' word, so an
    honest alert may look false to it). Alerts whose block's parent is not known yet wait: one per
    accuser, a slot per miner, MAX_DEVICE_PENDING shared by devices."""

    def __init__(self, node):
        self.node = node
        self.pending: OrderedDict[bytes, tuple[bytes, Block]] = OrderedDict()  # accuser -> (block hash, block)
        self.checked: OrderedDict[bytes, bool] = OrderedDict()  # header hash -> found valid (bounded)
        self.heads: dict[str, tuple[bytes, int, float]] = {}  # miner -> (head hash, height, when to sync)

    def on_light(self, raw: bytes, source: str) -> None:
        node = self.node
        light = parse_light(raw, node.task)
        before, refused, received = node.store.tip.hash, node.store.reorgs_refused, now_ms()
        try:
            state, _ = node.store.add_light(light)
        except ProtocolError as exc:
            if exc.reason is Reason.UNKNOWN_PARENT:
                node.request_sync(source)  # full blocks fill the gap
                return
            raise
        node.count("light_blocks")
        node.stored(state, None, before, refused, received)
        self._check_pending()

    def on_alert(self, raw: bytes) -> None:
        node = self.node
        alert = parse_alert(raw, node.task)
        block = Block.parse(alert.block, node.task.chain.max_block_bytes)
        header = block.header
        if block.envelope.signer != header.miner or body_root(block.update_bytes, block.extras) != header.merkle_root:
            node.count("alerts_false")  # not the block its header names: it proves nothing about that header
            return
        if node.store.is_invalid(header.hash) or header.hash in self.checked:
            node.count("alerts_ignored")
            return
        node.count("alerts_received")
        self.pending.pop(alert.signer, None)
        self.pending[alert.signer] = (header.hash, block)
        devices = [a for a in self.pending if node.task.miner(a) is None]
        for accuser in devices[: max(0, len(devices) - MAX_DEVICE_PENDING)]:
            del self.pending[accuser]  # devices' oldest first; a miner's slot is its own
        self._check_pending()

    def _check_pending(self) -> None:
        for accuser, (block_hash, block) in list(self.pending.items()):
            parent = self.node.store.get(block.header.prev_hash)
            if parent is None or (parent.model is None and parent.aggregate is None):
                continue  # wait for the parent (or its opened model): no work until then
            del self.pending[accuser]
            if not (self.node.store.is_invalid(block_hash) or block_hash in self.checked):
                self._check(block, parent)

    def _check(self, block: Block, parent) -> None:
        """Verify the alerted block in full (once per header) against this node's chain."""
        node, header = self.node, block.header
        try:
            check_header(header, parent.header, node.task, node.store, now_ms())
        except ProtocolError:
            node.count("alerts_false")  # this node would never accept that header: nothing to do
            return
        try:
            validate_block(block.envelope.raw, task=node.task, chain=node.store, now_ms=now_ms())
        except ProtocolError as exc:
            if exc.reason is Reason.UNKNOWN_PARENT:  # e.g. a Paillier grandparent not opened yet
                return
            before = node.store.tip.hash
            removed = node.store.invalidate(header.hash)
            node.count("alerts_confirmed")
            event(log, logging.WARNING, "alert confirmed", reason=exc.reason.value, removed=removed)
            if node.store.tip.hash != before:
                node.on_new_tip()
            return
        self.checked[header.hash] = True
        while len(self.checked) > MAX_REMEMBERED:
            self.checked.popitem(last=False)
        node.count("alerts_false")
        event(log, logging.WARNING, "false alert: the block is valid here", height=header.height)

    def on_head(self, source: str, header: Header) -> None:
        """Sync if this head is still unknown HEAD_GRACE_S after the first unknown head of this miner."""
        due = time.monotonic() + HEAD_GRACE_S
        if source in self.heads:
            due = min(due, self.heads[source][2])
        self.heads[source] = (header.hash, header.height, due)

    def tick(self) -> None:
        """Sync from a miner whose head stayed unknown past the grace period (its light block was lost)."""
        now, store = time.monotonic(), self.node.store
        for source, (head, height, due) in list(self.heads.items()):
            if store.has(head) or height <= store.tip.header.height:
                del self.heads[source]
            elif now >= due:
                del self.heads[source]
                self.node.request_sync(source)


class Alerter:
    """The full-node half: alert light devices to a refused block whose header they would accept."""

    def __init__(self, node, cert: bytes | None):
        self.node, self.cert = node, cert
        self.alerted: OrderedDict[bytes, None] = OrderedDict()

    def invalid_block(self, raw: bytes) -> None:
        node = self.node
        try:
            header = Block.parse(raw, node.task.chain.max_block_bytes).header
            parent = node.store.get(header.prev_hash)
            if parent is None:
                return
            check_header(header, parent.header, node.task, node.store, now_ms())
        except ProtocolError:
            return  # a light device refuses this block by its header alone
        if header.hash in self.alerted:
            return
        self.alerted[header.hash] = None
        while len(self.alerted) > MAX_REMEMBERED:
            self.alerted.popitem(last=False)
        node.count("alerts_sent")
        node.publish(node.topics.alert(node.me), make_alert(node.identity, node.task, raw, self.cert))
