"""The node runtime driven by hand, without a broker: a Miner and a Device built on real keys,
SQLite files and ONNX Runtime; their MQTT clients are never connected, so what they publish only
shows up in the byte counters."""

import hashlib
import time

import numpy as np
import pytest
from conftest import make_federation

from coordinator.miner.assembly import build_block
from coordinator.miner.node import Miner
from coordinator.miner.pool import read_audit
from coordinator.task.setup import enroll_device, init_task
from edge_sdk.clock import now_ms
from edge_sdk.node.bundle import Bundle
from edge_sdk.node.device import Device
from edge_sdk.node.runtime import _Done
from edge_sdk.node.status import DeliveryLog, Status, device_status_path, miner_status_path
from edge_sdk.protocol import envelope, sync
from edge_sdk.protocol.errors import Reason
from edge_sdk.protocol.identity import Identity
from edge_sdk.protocol.task import RoundRules, TrainingParams
from edge_sdk.transport.mqtt import Acked, BrokerConfig, Incoming

NOWHERE = BrokerConfig("mqtt://127.0.0.1:1")


@pytest.fixture
def miner(fed, tmp_path):
    node = Miner(identity=fed.miner, genesis=fed.genesis, db_path=tmp_path / "m.db", broker=NOWHERE)
    yield node
    node.store.close()


def message(node, topic, payload):
    node.dispatch(Incoming(topic, payload))


@pytest.mark.parametrize("kind", ["update", "gossip", "block", "head", "sync", "reply", "revocations"])
def test_garbage_on_any_topic_is_counted_and_the_node_goes_on(miner, kind):
    t, me = miner.topics, miner.me
    topic = {
        "update": t.update(me, "d"),
        "gossip": t.gossip(me, "m"),
        "block": t.block("m"),
        "head": t.head("m"),
        "sync": t.sync(me),
        "reply": t.reply(me),
        "revocations": t.revocations,
    }[kind]
    message(miner, topic, b"\xff" * 50)
    assert miner.counters["bytes_in"] == 50
    assert sum(miner.rejections.values()) == (0 if kind == "head" else 1), dict(miner.rejections)
    assert miner.counters["handler_errors"] == 0
    assert miner.store.tip.header.height == 0


def test_an_update_is_admitted_pooled_and_forwarded_once(tmp_path):
    fed = make_federation(devices=1, peers=1)
    node = Miner(identity=fed.miner, genesis=fed.genesis, db_path=tmp_path / "m.db", broker=NOWHERE)
    sealed = envelope.seal(fed.miner.public.box_pk, fed.update(0, node.store.tip.hash))
    topic = node.topics.update(node.me, fed.devices[0].public.node_id)
    message(node, topic, sealed)
    assert node.counters["updates_accepted"] == 1 and not node.rejections
    assert len(node.pool.on_base(node.store.tip.hash, 10)) == 1
    assert node.counters["bytes_out"] == len(sealed)  # sealed again for the one peer: the same size
    message(node, topic, sealed)
    assert node.rejections == {"replay": 1}
    admitted, refused = read_audit(tmp_path / "m.db")  # the audit trail: admitted once, then refused as a replay
    assert [a[0] for a in admitted] == [d for d, _, _ in refused] == list(node.pool.parsed)
    assert [r for _, r, _ in refused] == ["replay"]
    assert node.counters["bytes_out"] > len(sealed)  # and the device is told why
    node.store.close()


def test_sync_answers_go_only_to_the_requesters_own_reply_topic(fed, miner):
    """Finding 7: a device could name another node's reply topic and reflect answers at it (1400x)."""
    requester = fed.devices[0]
    request = sync.make_request(requester, fed.task, [miner.store.tip.hash])
    victim = miner.topics.reply("victim")
    miner.dispatch(Incoming(miner.topics.sync(miner.me), request, response_topic=victim, correlation=b"1"))
    assert miner.rejections == {"bad_body": 1} and miner.counters["bytes_out"] == 0
    own = miner.topics.reply(requester.public.node_id)
    miner.dispatch(Incoming(miner.topics.sync(miner.me), request, response_topic=own, correlation=b"2"))
    assert miner.counters["bytes_out"] > 0  # answered


def test_a_malformed_rejection_is_counted_and_the_node_goes_on(fed, miner):
    """Finding 4: parse_rejection ran outside any try and crashed the receiving node."""
    notice = envelope.sign(fed.miner, "rejection", {"task": fed.task.id, "digest": 1, "reason": 2, "tip": 3})
    message(miner, miner.topics.reply(miner.me), notice)
    assert miner.rejections == {"bad_body": 1} and miner.counters["handler_errors"] == 0


def test_a_block_moves_the_tip_and_the_status_file_says_so(fed, miner):
    chain = fed.chain()
    block = build_block(identity=fed.miner, task=fed.task, chain=chain, parent=chain.tip, updates=[], now_ms=now_ms())
    message(miner, miner.topics.block("someone"), block)
    assert miner.store.tip.header.height == 1
    miner.write_status(force=True)
    status = Status.read(miner_status_path(miner.store.path))
    assert status.role == "miner" and status.tip_height == 1 and status.tip == miner.store.tip.hash.hex()
    assert status.counters["bytes_in"] == len(block) and status.rejections == {}


def test_a_block_with_an_unknown_parent_asks_for_sync_not_a_rejection(fed, miner):
    chain = fed.chain()
    first = build_block(identity=fed.miner, task=fed.task, chain=chain, parent=chain.tip, updates=[], now_ms=now_ms())
    chain.add(first)
    second = build_block(identity=fed.miner, task=fed.task, chain=chain, parent=chain.tip, updates=[], now_ms=now_ms())
    before = miner.counters["bytes_out"]
    message(miner, miner.topics.block("someone"), second)
    assert miner.store.tip.header.height == 0 and not miner.rejections
    assert miner.counters["bytes_out"] == before  # a one-miner task has no peer to ask


def test_the_miner_mines_when_its_round_is_full(tmp_path):
    fed = make_federation(devices=2, rounds=RoundRules(min_updates=2, max_wait_ms=60_000))
    node = Miner(identity=fed.miner, genesis=fed.genesis, db_path=tmp_path / "m.db", broker=NOWHERE)
    for i in range(2):
        node.after_event()
        assert node._mining is None  # the round is not full yet
        sealed = envelope.seal(fed.miner.public.box_pk, fed.update(i, node.store.tip.hash))
        message(node, node.topics.update(node.me, fed.devices[i].public.node_id), sealed)
    node.after_event()  # full: assemble and start the nonce search
    item = node.inbox.get(timeout=30)
    assert isinstance(item, _Done)
    node.dispatch(item)
    assert node.store.tip.header.height == 1 and node.counters["blocks_mined"] == 1
    assert node.pool.on_base(node.store.tip.hash, 10) == []
    node.store.close()


def test_a_device_keeps_its_update_until_a_miner_gives_it_an_outcome(tmp_path, digits):
    """Delivered means pooled (or refused) by a miner, not acknowledged by the broker (issue 17): the
    update stays in the outbox after the PUBACK, goes out again when its wait is over or the device
    changes miner, and leaves only when a rejection names it (a replay: that miner has it)."""
    preferred, other = Identity.from_seed(b"runtime-miner-a"), Identity.from_seed(b"runtime-miner-b")
    init_task(
        tmp_path / "task",
        miners=[preferred.public, other.public],
        training=TrainingParams(1, 16, 0.1),
        initial_hashes=20_000,
    )
    device_id = Identity.from_seed(b"runtime-device")
    bundle = tmp_path / "bundle"
    enroll_device(tmp_path / "task", device_id.public, broker_url="mqtt://127.0.0.1:1", out=bundle, quota=1000)
    x, _, y, _ = digits
    device = Device(bundle=Bundle(bundle), identity=device_id, data=(x[:40], y[:40]), state_dir=tmp_path / "state")
    a, b = preferred.public.node_id, other.public.node_id
    presence, box, outbox = device.topics.presence, device.outbox, tmp_path / "state" / "outbox.bin"
    try:
        device.after_event()  # trains on genesis in the background
        item = device.inbox.get(timeout=60)
        assert isinstance(item, _Done)
        device.dispatch(item)
        assert box.update is not None and device.counters["updates_sent"] == 0  # no miner heard from yet
        assert outbox.read_bytes() == box.update

        device.dispatch(Incoming(presence(b), b"online"))  # the preferred miner never came: use the one that did
        assert device.miner.node_id == b and device.counters["updates_sent"] == 1

        device.dispatch(Acked(box.in_flight, 0x10))  # accepted, but nobody was subscribed: keep it
        assert box.update is not None and box.in_flight is None
        assert DeliveryLog(tmp_path / "state").read() == []  # not delivered
        box.due = 0.0  # its second is over
        device.after_event()
        assert device.counters["updates_sent"] == 2

        device.dispatch(Incoming(presence(a), b"online"))  # the preferred miner is back: go back, send there
        assert device.miner.node_id == a and device.counters["updates_sent"] == 2  # not sooner than MIN_GAP_S
        box.due = 0.0  # after the last copy
        device.after_event()
        assert device.counters["updates_sent"] == 3
        device.dispatch(Incoming(presence(b), b"offline"))  # another miner going changes nothing
        assert device.miner.node_id == a and device.counters["updates_sent"] == 3

        update, base = box.update, box.base
        device.dispatch(Acked(box.in_flight, 0))  # the broker has it: still held, on disk, until an outcome
        assert box.update == update and outbox.read_bytes() == update
        [delivered] = DeliveryLog(tmp_path / "state").read()  # the audit trail
        assert (delivered["digest"], delivered["base"]) == (hashlib.sha256(update).hexdigest(), base.hex())
        wait = device.wait_seconds()  # the round's wait and a margin, within the idle wake-up
        assert 0 < wait <= 5.0 and box.due - box.resend_after_s <= time.monotonic() <= box.due
        device.after_event()
        assert device.counters["updates_sent"] == 3  # not due yet
        box.due = 0.0  # no block, no rejection for that long: publish it again
        device.after_event()
        assert device.counters["updates_sent"] == 4 and device.counters["updates_resent"] == 3  # all but the first
        device.dispatch(Acked(box.in_flight, 0))
        assert box.due - time.monotonic() > 1.5 * box.resend_after_s  # the wait doubles

        other_digest = hashlib.sha256(b"another update").digest()
        for digest in (other_digest, hashlib.sha256(update).digest()):  # only a rejection naming it counts
            notice = sync.make_rejection(preferred, device.task, digest, Reason.REPLAY, device.store.tip.hash)
            device.dispatch(Incoming(device.topics.reply(device.me), notice))
            assert (box.update is None) == (digest != other_digest)
        assert not outbox.exists() and (tmp_path / "state" / "signed_for.bin").read_bytes() == base
        device.write_status(force=True)
        status = Status.read(device_status_path(tmp_path / "state"))
        assert status.role == "device" and status.details["miner"] == a and status.counters["updates_sent"] == 4
        assert status.details["rejected_by_miners"] == {"replay": 2}
        assert np.isfinite(status.counters["train_seconds"])
    finally:
        device.store.close()


def test_a_miner_drops_an_update_whose_certificate_expired_in_its_pool_and_mines_the_rest(tmp_path):
    """Review finding: one such update made every later assembly raise, halting mining on that tip."""
    import time

    from edge_sdk.protocol.block import make_update
    from edge_sdk.protocol.cert import issue_certificate

    fed = make_federation(devices=2, rounds=RoundRules(min_updates=2, max_wait_ms=60_000))
    node = Miner(identity=fed.miner, genesis=fed.genesis, db_path=tmp_path / "m.db", broker=NOWHERE)
    tip = node.store.tip.hash
    short = issue_certificate(fed.coordinator, fed.task, fed.devices[0].public, quota=100, expires_ms=now_ms() + 300)
    expiring = make_update(fed.devices[0], fed.task, short, tip, 10, fed.delta(0), now_ms())
    message(node, node.topics.update(node.me, "d0"), envelope.seal(fed.miner.public.box_pk, expiring))
    node.after_event()
    assert node.counters["updates_accepted"] == 1 and node._mining is None
    time.sleep(0.5)  # the certificate expires while the update waits in the pool
    message(node, node.topics.update(node.me, "d1"), envelope.seal(fed.miner.public.box_pk, fed.update(1, tip)))
    node.after_event()
    assert node.rejections == {"cert_expired": 1} and node.counters["handler_errors"] == 0
    item = node.inbox.get(timeout=30)
    node.dispatch(item)
    assert node.store.tip.header.height == 1 and node.counters["blocks_mined"] == 1
    node.store.close()
