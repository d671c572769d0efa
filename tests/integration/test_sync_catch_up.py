"""Sync between real miner processes: a miner 75 blocks behind catches up fully (64 blocks per
answer, so it has to ask again), and an answer on its reply topic that a miner did not sign is
refused even when the broker let it through (a miner's account relaying someone else's answer)."""

import pytest
from testbed import Testbed

from coordinator.miner.assembly import build_block
from edge_sdk.chain.store import ChainStore
from edge_sdk.clock import now_ms
from edge_sdk.protocol import sync
from edge_sdk.protocol.identity import Identity

pytestmark = pytest.mark.timeout(120)
BLOCKS = 75  # more than one answer's 64


@pytest.fixture
def bed(tmp_path):
    # m0 holds the chain, m1 catches up, m2 is in the miner set but never runs: the test answers as m2
    bed = Testbed(tmp_path, miners=3, devices=0, min_updates=1, initial_hashes=64, retarget_window=1000)
    yield bed
    bed.close()


def prebuilt_chain(bed: Testbed) -> list[bytes]:
    """BLOCKS empty blocks by m0, stored in m0's database before it starts."""
    store = ChainStore(bed.root / "m0" / "chain.db", bed.genesis)
    raws = []
    for _ in range(BLOCKS):
        raw = build_block(identity=bed.miner_ids[0], task=bed.task, chain=store, parent=store.tip, updates=[],
                          now_ms=now_ms())  # fmt: skip
        store.add(raw)
        raws.append(raw)
    store.close()
    return raws


def test_a_miner_75_blocks_behind_catches_up_and_refuses_answers_not_signed_by_a_miner(bed):
    raws = prebuilt_chain(bed)
    bed.start_miner(1)
    bed.wait_online([bed.task.miners[1].node_id])
    relay = bed.client(*bed.credentials("m2"))
    reply_to_m1 = bed.topics.reply(bed.task.miners[1].node_id)
    outsider = Identity.generate()  # not in the miner set: its answer carries valid blocks all the same
    assert relay.publish(reply_to_m1, sync.make_response(outsider, bed.task, raws[:64])) == 0
    assert relay.publish(reply_to_m1, sync.make_response(bed.miner_ids[2], bed.task, raws[:3])) == 0
    # handled in order: once the miner's answer moved m1's tip, the outsider's was handled before it
    bed.wait(lambda: bed.metrics(1).get("tip_height", 0) >= 3, 30, "m1 to store the blocks m2 sent")
    status = bed.metrics(1)
    assert status["tip_height"] == 3 and status["rejections"] == {"bad_miner": 1}
    relay.close()
    bed.start_miner(0)  # its retained head shows BLOCKS: m1 asks, gets 64, asks again for the rest
    bed.wait(lambda: bed.metrics(1).get("tip_height", 0) >= BLOCKS, 30, f"m1 to catch up to height {BLOCKS}")
    bed.wait(lambda: bed.metrics(0).get("tip") == bed.metrics(1).get("tip"), 10, "m0 and m1 on one tip")
