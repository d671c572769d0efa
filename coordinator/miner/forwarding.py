"""Cross-verification forwards that survive a peer which has not subscribed yet.

A miner forwards each update it admits to every other miner once. If a peer has never connected
(it is starting up), the broker accepts the forward with PUBACK 0x10 "no matching subscribers" and
drops it, and that peer would never hold the update. So a forward answered 0x10 is sent again,
after 1, 2, 4, ... seconds, RETRIES times at most (about a minute in all). Any other answer ends it:
a peer that connected once has a persistent session, where the broker queues forwards for it.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable

from edge_sdk.transport.mqtt import NO_MATCHING_SUBSCRIBERS, Acked

RETRIES = 6
FIRST_RETRY_S = 1.0
MIN_WAIT_S = 0.01
MAX_TRACKED = 4096  # forwards awaiting their PUBACK or a retry; beyond that, sent once like before


class Forwarder:
    def __init__(
        self,
        publish: Callable[[str, bytes], int],
        count: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ):
        self._publish, self._count, self._clock = publish, count, clock
        self._in_flight: dict[int, tuple[str, bytes, int]] = {}  # mid -> (topic, payload, tries)
        self._due: list[tuple[float, int, str, bytes, int]] = []  # heap of (when, seq, topic, payload, tries)
        self._seq = itertools.count()

    def send(self, topic: str, payload: bytes, tries: int = 0) -> None:
        mid = self._publish(topic, payload)
        if len(self._in_flight) + len(self._due) < MAX_TRACKED:
            self._in_flight[mid] = (topic, payload, tries)

    def acked(self, ack: Acked) -> None:
        """The broker's answer to a publish; those that are not forwards are ignored."""
        entry = self._in_flight.pop(ack.mid, None)
        if entry is None or ack.reason != NO_MATCHING_SUBSCRIBERS or entry[2] >= RETRIES:
            return
        topic, payload, tries = entry
        when = self._clock() + FIRST_RETRY_S * 2**tries
        heapq.heappush(self._due, (when, next(self._seq), topic, payload, tries + 1))

    def send_due(self) -> None:
        now = self._clock()
        while self._due and self._due[0][0] <= now:
            _, _, topic, payload, tries = heapq.heappop(self._due)
            self._count("forwards_resent")
            self.send(topic, payload, tries)

    def wait_seconds(self, longest: float) -> float:
        """How long the node's loop may sleep: `longest`, or less when a retry is due sooner."""
        if not self._due:
            return longest
        return min(longest, max(MIN_WAIT_S, self._due[0][0] - self._clock()))
