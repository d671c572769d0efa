"""A message the broker delivered is acknowledged only once the node has handled it (issue 17's
first bug): a node killed in between receives it again from its persistent session. Real
Mosquitto, real processes; the killed process exits without a word to the broker."""

import subprocess
import sys

import pytest
from testbed import Testbed

from edge_sdk.protocol import envelope

NODE = r"""
import os, sys, time
from edge_sdk.transport.mqtt import BrokerConfig, Connected, Connection, Incoming
url, user, password, topic, mode, fate = sys.argv[1:7]
conn = Connection(BrokerConfig(url, user, password), client_id="miner-" + user, subscriptions=[topic],
                  ack_when_handled=mode == "manual")
conn.start()
deadline = time.monotonic() + 8
while time.monotonic() < deadline:
    try:
        item = conn.inbox.get(timeout=0.2)
    except Exception:
        continue
    if isinstance(item, Connected):
        print("READY", flush=True)
    elif isinstance(item, Incoming):
        print("GOT", len(item.payload), flush=True)
        if fate == "die":
            time.sleep(0.5)  # paho's own acknowledgement (if any) has long gone out
            os._exit(0)  # killed before handling: no acknowledgement from us, no DISCONNECT
        conn.ack(item)
        time.sleep(0.3)
        conn.stop()
        sys.exit(0)
print("NOTHING", flush=True)
conn.stop()
"""


@pytest.fixture
def bed(tmp_path):
    bed = Testbed(tmp_path, miners=1, devices=1)
    yield bed
    bed.close()


def node(bed, mode, fate):
    user, password = bed.credentials("m0")
    topic = bed.topics.update(bed.task.miners[0].node_id, "+")
    args = [sys.executable, "-c", NODE, bed.url, user, password, topic, mode, fate]
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=bed.root)


@pytest.mark.parametrize("mode, delivered_again", [("manual", True), ("paho", False)])
def test_an_update_survives_a_node_killed_before_handling_it(bed, mode, delivered_again):
    first = node(bed, mode, "die")
    assert first.stdout.readline().strip() == "READY"
    device = bed.client(*bed.credentials("d0"))
    miner = bed.task.miners[0]
    topic = bed.topics.update(miner.node_id, bed.device_ids[0].public.node_id)
    assert device.publish(topic, envelope.seal(miner.box_pk, b"an update")) == 0  # the broker took it
    assert first.stdout.readline().startswith("GOT")
    assert first.wait(timeout=10) == 0
    device.close()
    again = node(bed, mode, "handle")
    out = again.communicate(timeout=20)[0].split("\n")
    assert out[0] == "READY"
    assert out[1].startswith("GOT") == delivered_again, out
