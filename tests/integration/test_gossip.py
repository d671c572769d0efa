"""Cross-verification between real miner processes: an update a device sends to one miner is
forwarded (gossip/) to every other miner, which admits it again: its own counter and its own
audit table record it, though the device never sent it there."""

import hashlib

import numpy as np
import pytest
from testbed import Testbed

from coordinator.miner.pool import read_audit
from edge_sdk.chain.memory import MemoryChain
from edge_sdk.clock import now_ms
from edge_sdk.protocol import envelope
from edge_sdk.protocol.block import make_update

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def bed(tmp_path):
    bed = Testbed(tmp_path, miners=2, devices=1, min_updates=5, max_wait_ms=600_000)  # nobody mines
    yield bed
    bed.close()


def send_to_m0(bed) -> bytes:
    """d0's update on genesis, published to m0 with d0's login; returns it."""
    device = bed.device_ids[0]
    cert = (bed.root / "d0" / "bundle" / "cert.bin").read_bytes()
    delta = {p: np.full(s, 0.01, np.float32) for p, s in bed.task.shapes.items()}
    update = make_update(device, bed.task, cert, MemoryChain(bed.genesis).tip.hash, 60, delta, now_ms())
    m0 = bed.task.miners[0]
    d0 = bed.client(*bed.credentials("d0"))
    # QoS 1 with a subscriber: 0; 0x10 (nobody subscribed) would mean m0 was not listening yet
    assert d0.publish(bed.topics.update(m0.node_id, device.public.node_id), envelope.seal(m0.box_pk, update)) == 0
    d0.close()
    return update


def test_an_update_sent_to_one_miner_is_admitted_by_the_other(bed):
    for i in range(2):
        bed.start_miner(i)
    bed.wait_online([m.node_id for m in bed.task.miners])
    update = send_to_m0(bed)
    accepted = lambda i: bed.metrics(i).get("counters", {}).get("updates_accepted", 0)
    bed.wait(lambda: [accepted(i) for i in range(2)] == [1, 1], 30, "both miners to admit the update")
    digest = hashlib.sha256(update).digest()
    for i in range(2):
        admitted, refused = read_audit(bed.root / f"m{i}" / "chain.db")
        assert [row[0] for row in admitted] == [digest] and refused == [], f"m{i}"
        assert bed.metrics(i)["rejections"] == {}, f"m{i}"


def test_a_miner_that_starts_after_the_forward_still_gets_the_update(bed):
    """m0 admits an update and forwards it while m1 has never connected: the broker accepts the
    forward with "no matching subscribers" (PUBACK 0x10) and drops it. Before: m1 never had that
    update (its pool waited for it until max_wait_ms). Now m0 sends the forward again, backing
    off, while the broker answers 0x10; m1 admits it once it has subscribed."""
    bed.start_miner(0)
    bed.wait_online([bed.task.miners[0].node_id])
    update = send_to_m0(bed)
    bed.wait(lambda: bed.metrics(0).get("counters", {}).get("updates_accepted", 0) == 1, 30, "m0 to admit it")
    bed.start_miner(1)
    bed.wait(lambda: bed.metrics(1).get("counters", {}).get("updates_accepted", 0) == 1, 60, "m1 to admit it")
    admitted, _ = read_audit(bed.root / "m1" / "chain.db")
    assert [row[0] for row in admitted] == [hashlib.sha256(update).digest()]
    assert bed.metrics(0).get("counters", {}).get("forwards_resent", 0) >= 1
