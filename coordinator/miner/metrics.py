"""A miner's Prometheus metrics (`blockfl miner run --metrics-port`): an HTTP endpoint that reads
the miner's latest status snapshot at scrape time, so the node's loop thread never shares live
state with the server's thread. The snapshot is at most STATUS_MIN_INTERVAL_S (0.25 s) old."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from edge_sdk.node.status import Status

COUNTERS = {  # status counter -> (metric, help)
    "updates_accepted": ("blockfl_updates_accepted", "Updates this miner admitted to its pool"),
    "blocks_mined": ("blockfl_blocks_mined", "Blocks this miner mined and published"),
    "bytes_in": ("blockfl_bytes_in", "Payload bytes received"),
    "bytes_out": ("blockfl_bytes_out", "Payload bytes sent"),
    "mining_seconds": ("blockfl_mining_seconds", "Time spent searching nonces"),
    "validation_seconds": ("blockfl_validation_seconds", "Time spent validating blocks"),
    "handler_errors": ("blockfl_handler_errors", "Unexpected errors in handlers (bugs)"),
}


class StatusCollector:
    def __init__(self, snapshot: Callable[[], Status | None]):
        self.snapshot = snapshot

    def collect(self):
        status = self.snapshot()
        if status is None:
            return
        yield GaugeMetricFamily("blockfl_tip_height", "Height of this miner's best block", value=status.tip_height)
        for key, (name, text) in COUNTERS.items():
            yield CounterMetricFamily(name, text, value=status.counters.get(key, 0))
        rejected = CounterMetricFamily("blockfl_rejected", "Messages refused, by reason code", labels=["reason"])
        for reason, count in sorted(status.rejections.items()):
            rejected.add_metric([reason], count)
        yield rejected


def serve_metrics(port: int, addr: str, snapshot: Callable[[], Status | None]):
    """Start the endpoint on addr:port in a daemon thread; returns (server, thread)."""
    registry = CollectorRegistry()
    registry.register(StatusCollector(snapshot))
    return start_http_server(port, addr=addr, registry=registry)
