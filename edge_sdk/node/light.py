"""Light verification on a node: follow light blocks, check alerts, and raise alerts as a full node.

A light device stores each light block (header plus the model or aggregate it commits to) and
downloads no updates, so what it receives per round does not grow with the number of devices.
What it cannot check — that the commitment is the right aggregate of the block's updates — full
nodes check: a full node (every miner, and a device with verify = "full") that refuses a block
whose header is valid publishes an alert carrying the block. A light device verifies an alerted
block in full against its own chain before it goes on: if the alert is right, the block and
everything built on it are dropped for good; if it is false, the accuser is muted. Assumption:
at least one honest full node's alerts reach the device.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

from edge_sdk.chain.rules import check_header, validate_block
from edge_sdk.clock import now_ms
from edge_sdk.node.logs import event
from edge_sdk.protocol.block import Block, Header
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.light import make_alert, parse_alert, parse_light

log = logging.getLogger("blockfl.light")
HEAD_GRACE_S = 3.0  # a head is followed by its light block; only a head still unknown after this starts a sync
MAX_PENDING_ALERTS = 8  # alerts whose block's parent is not known yet
MAX_REMEMBERED = 256  # blocks this full node has already alerted on


class LightFollower:
    """The light half of a node: its handlers for light/ and alert/, and deferred heads."""

    def __init__(self, node):
        self.node = node
        self.pending: OrderedDict[bytes, tuple[bytes, bytes]] = OrderedDict()  # block hash -> (block, accuser)
        self.muted: set[bytes] = set()  # accusers caught with a false alert
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
        if alert.signer in self.muted:
            node.count("alerts_ignored")
            return
        try:
            header = Block.parse(alert.block, node.task.chain.max_block_bytes).header
        except ProtocolError:
            self._false(alert.signer, "the alerted block does not parse")
            return
        if node.store.is_invalid(header.hash) or header.hash in self.pending:
            return
        node.count("alerts_received")
        self.pending[header.hash] = (alert.block, alert.signer)
        while len(self.pending) > MAX_PENDING_ALERTS:
            self.pending.popitem(last=False)
        self._check_pending()

    def _check_pending(self) -> None:
        for block_hash in list(self.pending):
            self._check(block_hash)

    def _check(self, block_hash: bytes) -> None:
        """Verify the alerted block in full once its parent's state is known here."""
        node = self.node
        raw, accuser = self.pending[block_hash]
        try:
            validate_block(raw, task=node.task, chain=node.store, now_ms=now_ms())
        except ProtocolError as exc:
            if exc.reason is Reason.UNKNOWN_PARENT:
                return  # wait for the parent (or its opened model)
            del self.pending[block_hash]
            before = node.store.tip.hash
            removed = node.store.invalidate(block_hash)
            node.count("alerts_confirmed")
            event(log, logging.WARNING, "alert confirmed", reason=exc.reason.value, removed=removed)
            if node.store.tip.hash != before:
                node.on_new_tip()
            return
        del self.pending[block_hash]
        self._false(accuser, "the alerted block is valid")

    def _false(self, accuser: bytes, why: str) -> None:
        self.muted.add(accuser)
        self.node.count("alerts_false")
        event(log, logging.WARNING, "false alert; accuser muted", why=why)

    def on_head(self, source: str, header: Header) -> None:
        self.heads[source] = (header.hash, header.height, time.monotonic() + HEAD_GRACE_S)

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
