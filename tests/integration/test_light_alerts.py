"""Light devices against a hostile miner, with real processes: Mosquitto, an honest miner, light
device processes, and an attacker (test code holding the other miner's key and credentials) that
publishes a block whose model is not its updates' aggregate, and a light block for it."""

from __future__ import annotations

import pytest
from test_hostile_peers import Attacker, bed_factory, settle  # noqa: F401 (bed_factory is a fixture)

from coordinator.miner.assembly import search_nonce
from edge_sdk.chain.rules import expected_target
from edge_sdk.clock import now_ms
from edge_sdk.protocol.block import block_template, seal_block
from edge_sdk.protocol.extras import Extras
from edge_sdk.protocol.fixedpoint import model_hash
from edge_sdk.protocol.light import make_light

pytestmark = pytest.mark.timeout(300)


def test_light_devices_drop_a_miners_invalid_block_when_an_honest_miner_alerts(bed_factory):  # noqa: F811
    bed = bed_factory(miners=2, devices=2, min_updates=2, max_wait_ms=60_000)
    attacker = Attacker(bed, 1)
    bed.start_miner(0)
    for i in range(2):
        bed.start_device(i, miner_index=0, verify="light")
    tip = attacker.wait_for(lambda t: t.header.height >= 1, 150, "the first honest block")
    bed.wait(lambda: all(bed.device_status(i).get("tip_height", 0) >= 1 for i in range(2)), 60, "devices at 1")

    # an empty block on the honest tip that moves the model anyway: its header is valid, its body is not
    forged = {name: value + (1 << 10) for name, value in tip.model.items()}
    header = block_template(
        parent=tip.header, task=bed.task, miner=attacker.identity.public.sign_pk, update_bytes=[], extras=Extras(),
        commitment=model_hash(forged, bed.task.chain.frac_bits), timestamp_ms=max(now_ms(), tip.header.timestamp_ms),
        target=expected_target(bed.task, tip.header, attacker.chain),
    )  # fmt: skip
    header = search_nonce(header)
    raw = seal_block(attacker.identity, header, [], Extras())
    light = make_light(attacker.identity, bed.task, header, model=forged, changed=True, revocations=None)
    assert attacker.client.publish(bed.topics.light(attacker.node), light) == 0
    attacker.publish(raw)

    def dropped(i: int) -> bool:
        counters = bed.device_status(i).get("counters", {})
        return counters.get("alerts_confirmed", 0) >= 1

    bed.wait(lambda: all(dropped(i) for i in range(2)), 60, "both light devices to confirm the honest miner's alert")
    # the miner's status file trails its counters by up to 0.25 s: wait for it rather than read it once
    bed.wait(lambda: bed.metrics(0)["counters"].get("alerts_sent", 0) >= 1, 20, "the honest miner's alert count")
    assert bed.metrics(0)["rejections"].get("bad_model_hash", 0) >= 1
    # the federation goes on, and no device is on the forged block
    bed.wait(lambda: bed.metrics(0).get("tip_height", 0) >= 2, 150, "an honest block on height 1")
    final = settle(bed, ["m0", "d0", "d1"])
    assert final != header.hash.hex()
    for i in range(2):
        assert bed.device_status(i)["details"]["verify"] == "light"
        assert bed.device_status(i)["counters"].get("light_blocks", 0) >= 2
