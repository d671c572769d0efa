"""A running miner process's Prometheus endpoint, scraped over HTTP on loopback."""

from __future__ import annotations

import urllib.request

import pytest
from testbed import Testbed

from coordinator.task import broker

pytestmark = pytest.mark.timeout(240)


def scrape(port: int) -> dict[str, float]:
    """metric{labels} -> value, from the text exposition format."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_a_miners_metrics_endpoint_reports_its_chain_updates_and_traffic(tmp_path):
    bed = Testbed(tmp_path, miners=1, devices=2, max_wait_ms=3000)
    try:
        port = broker.free_port()
        bed.start_miner(0, ("--metrics-port", str(port)))
        for i in range(2):
            bed.start_device(i)
        bed.wait(lambda: bed.metrics(0).get("tip_height", 0) >= 2, 180, "two blocks")
        samples: dict = {}

        def scraped() -> bool:
            try:
                samples.update(scrape(port))
            except OSError:
                return False
            return samples.get("blockfl_tip_height", 0) >= 2

        bed.wait(scraped, 30, "the endpoint to show height 2")
        assert samples["blockfl_updates_accepted_total"] >= 4
        assert samples["blockfl_blocks_mined_total"] >= 2
        assert samples["blockfl_bytes_in_total"] > 0 and samples["blockfl_bytes_out_total"] > 0
        assert samples["blockfl_mining_seconds_total"] > 0 and samples["blockfl_validation_seconds_total"] > 0
    finally:
        bed.close()
