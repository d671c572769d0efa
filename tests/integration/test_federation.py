"""The federation for real: Mosquitto, miner and device processes, faults by SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from testbed import Testbed, assert_devices_agree, connack, settle

from coordinator.emulator.processes import STOP_GRACE_S
from coordinator.miner.assembly import build_block
from coordinator.tools.chainverify import verify_database
from edge_sdk.chain.memory import MemoryChain
from edge_sdk.clock import now_ms
from edge_sdk.protocol import envelope, sync
from edge_sdk.protocol.block import make_update
from edge_sdk.protocol.cert import issue_certificate
from edge_sdk.protocol.identity import Identity

pytestmark = pytest.mark.timeout(240)
NOT_AUTHORIZED = 0x87


@pytest.fixture
def bed_factory(tmp_path):
    beds = []

    def make(**kw):
        bed = Testbed(tmp_path / f"bed{len(beds)}", **kw)
        beds.append(bed)
        return bed

    yield make
    for bed in beds:
        bed.close()


def tip_of_miner(bed, i):
    return bed.metrics(i).get("tip_height", -1)


def test_emulate_runs_a_federation_to_a_report(tmp_path):
    out = tmp_path / "report"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "coordinator.cli",
            "emulate",
            "--initial-hashes",  # the suite stays fast; calibration is tested on its own
            "20000",
            "--devices",
            "4",
            "--miners",
            "2",
            "--rounds",
            "3",
            "--seed",
            "2",
            "--max-wait-ms",
            "4000",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["ok"] and len(report["rounds"]) >= 3
    assert report["rounds"][-1]["accuracy"] > report["initial"]["accuracy"] + 0.3
    assert all(v["ok"] for v in report["chain_verify"].values())
    assert report["model_hash_agreement"]["ok"]
    assert sum(report["rewards"].values()) > 0
    for png in ("accuracy_loss.png", "block_intervals.png", "rewards.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "round 3/3" in result.stdout
    leftovers = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], "emulate left processes running"


def device_update(bed, i, base, *, delta=None, samples=60, identity=None, cert=None):
    identity = identity or bed.device_ids[i]
    cert = cert or (bed.root / f"d{i}" / "bundle" / "cert.bin").read_bytes()
    task = bed.task
    delta = delta or {p: np.full(s, 0.01, np.float32) for p, s in task.shapes.items()}
    return make_update(identity, task, cert, base, samples, delta, now_ms())


def test_miner_rejects_bad_updates_each_with_its_reason(bed_factory):
    bed = bed_factory(miners=1, devices=2, max_wait_ms=120_000)
    bed.start_miner(0)
    bed.wait(lambda: bed.metrics(0), 20, "the miner to start")
    miner = bed.task.miners[0]
    genesis_hash = MemoryChain(bed.genesis).tip.hash
    d0, d1 = (bed.client(*bed.credentials(f"d{i}")) for i in range(2))
    d0.subscribe(bed.topics.reply(bed.device_ids[0].public.node_id))
    topic = lambda i: bed.topics.update(miner.node_id, bed.device_ids[i].public.node_id)
    valid = envelope.seal(miner.box_pk, device_update(bed, 0, genesis_hash))
    assert d0.publish(topic(0), valid) == 0
    bed.wait(lambda: bed.metrics(0).get("counters", {}).get("updates_accepted") == 1, 10, "the valid update")
    assert d0.publish(topic(0), valid) == 0  # replayed
    forged = bytearray(device_update(bed, 0, genesis_hash))
    forged[-200] ^= 1  # a changed delta byte
    assert d0.publish(topic(0), envelope.seal(miner.box_pk, bytes(forged))) == 0
    stale = device_update(bed, 0, bytes(32))  # based on a block that is not the tip
    assert d0.publish(topic(0), envelope.seal(miner.box_pk, stale)) == 0
    nan = {p: np.full(s, np.nan, np.float32) for p, s in bed.task.shapes.items()}
    assert d1.publish(topic(1), envelope.seal(miner.box_pk, device_update(bed, 1, genesis_hash, delta=nan))) == 0
    impostor = Identity.generate()  # not enrolled: a self-made certificate
    fake_cert = issue_certificate(impostor, bed.task, impostor.public, quota=10**6, expires_ms=now_ms() + 10**6)
    assert (
        d1.publish(
            topic(1),
            envelope.seal(miner.box_pk, device_update(bed, 1, genesis_hash, identity=impostor, cert=fake_cert)),
        )
        == 0
    )
    expected = {"replay": 1, "bad_signature": 1, "stale_base": 1, "non_finite": 1, "bad_cert": 1}
    bed.wait(
        lambda: bed.metrics(0).get("rejections") == expected,
        10,
        f"rejections {expected}, got {bed.metrics(0).get('rejections')}",
    )
    # the device hears why, so it can act (a stale base means: catch up and train again)
    bed.wait(lambda: len(d0.messages) >= 3, 10, "rejection notices")
    reasons = sorted(sync.parse_rejection(p, bed.task).reason for _, p in d0.messages)
    assert reasons == ["bad_signature", "replay", "stale_base"]
    assert bed.metrics(0)["counters"]["updates_accepted"] == 1


def test_broker_refuses_devices_publishing_blocks_or_other_devices_updates(bed_factory):
    bed = bed_factory(miners=1, devices=2)
    miner_id = bed.task.miners[0].node_id
    d0 = bed.client(*bed.credentials("d0"))
    observer = bed.client(*bed.observer)
    observer.subscribe(bed.topics.prefix + "/#")
    me, other = (bed.device_ids[i].public.node_id for i in range(2))
    assert d0.publish(bed.topics.block(miner_id), b"a block from a device") == NOT_AUTHORIZED
    assert d0.publish(bed.topics.update(miner_id, other), b"pretending to be d1") == NOT_AUTHORIZED
    assert d0.publish(bed.topics.gossip(miner_id, miner_id), b"gossip") == NOT_AUTHORIZED
    assert d0.publish(bed.topics.head(miner_id), b"head") == NOT_AUTHORIZED
    assert d0.publish(bed.topics.update(miner_id, me), b"its own update topic") == 0
    # one publisher, one subscriber: delivered in order, so had a refused publish been routed, it
    # would have reached the observer before this one
    assert observer.wait_for(lambda topic, _: topic == bed.topics.update(miner_id, me), 5)
    assert [t for t, _ in observer.messages] == [bed.topics.update(miner_id, me)]
    username, password = bed.credentials("d0")
    assert connack(bed.port, username, "wrong") == NOT_AUTHORIZED  # wrong password: CONNACK 0x87
    assert connack(bed.port, "nobody", password) == NOT_AUTHORIZED  # unknown user
    assert connack(bed.port, username, password) == 0


def test_rounds_end_to_end_and_an_offline_device_catches_up(bed_factory):
    bed = bed_factory(miners=2, devices=3, max_wait_ms=3000)
    for i in range(2):
        bed.start_miner(i)
    for i in range(3):
        bed.start_device(i)
    bed.wait(lambda: min(tip_of_miner(bed, i) for i in range(2)) >= 1, 60, "the first round")
    bed.kill("d2")  # offline for rounds: the others go on without it
    start = tip_of_miner(bed, 0)
    bed.wait(lambda: tip_of_miner(bed, 0) >= start + 2, 60, "two rounds without d2")
    bed.start_device(2)
    bed.wait(lambda: bed.device_status(2).get("tip_height", -1) >= start + 2, 60, "d2 to catch up")
    bed.wait(lambda: tip_of_miner(bed, 0) >= start + 3, 60, "a round with d2 back")
    tip = settle(bed)
    bed.close()
    for i in range(2):
        report = verify_database(bed.root / f"m{i}" / "chain.db")
        assert report.ok, report.failure
    assert_devices_agree(bed, bed.root / "m0" / "chain.db", tip)
    assert bed.device_status(2)["counters"]["updates_sent"] >= 1


def test_a_miner_killed_mid_round_restarts_resyncs_and_the_federation_completes(bed_factory):
    bed = bed_factory(miners=2, devices=3, max_wait_ms=3000)
    for i in range(2):
        bed.start_miner(i)
    for i in range(3):
        bed.start_device(i)
    bed.wait(lambda: tip_of_miner(bed, 1) >= 1, 60, "the first round")
    bed.kill("m1")  # SIGKILL while devices train for the next round
    killed_at = tip_of_miner(bed, 1)
    survivor = bed.task.miners[0].node_id
    # d1 preferred m1: the broker publishes m1's last will ("offline") and d1 switches to m0
    bed.wait(lambda: bed.device_status(1).get("details", {}).get("miner") == survivor, 60, "d1 to fail over to m0")
    bed.wait(lambda: tip_of_miner(bed, 0) >= killed_at + 2, 60, "rounds with m1 down (its devices fail over)")
    bed.start_miner(1)
    bed.wait(lambda: tip_of_miner(bed, 1) >= tip_of_miner(bed, 0) >= killed_at + 2, 60, "m1 to resync")
    target = tip_of_miner(bed, 0) + 1
    bed.wait(lambda: min(tip_of_miner(bed, i) for i in range(2)) >= target, 60, "another round with both miners")
    tip = settle(bed, miner=1)
    bed.close()
    for i in range(2):
        report = verify_database(bed.root / f"m{i}" / "chain.db")
        assert report.ok, report.failure
    assert_devices_agree(bed, bed.root / "m1" / "chain.db", tip)


def test_competing_blocks_from_two_miners_converge_on_one_chain(bed_factory):
    # miners never mine on their own here; m2 is in the miner set but not running: the test publishes as m2
    # (a broker that ties client ids to usernames would disconnect a running miner whose credentials it used)
    bed = bed_factory(miners=3, devices=1, min_updates=5, max_wait_ms=600_000)
    for i in range(2):
        bed.start_miner(i)
    bed.start_device(0)
    bed.wait(lambda: all(bed.metrics(i) for i in range(2)) and bed.device_status(0), 30, "nodes to start")
    chain = MemoryChain(bed.genesis)
    genesis = chain.tip
    a = build_block(identity=bed.miner_ids[0], task=bed.task, chain=chain, parent=genesis, updates=[], now_ms=now_ms())
    b = build_block(
        identity=bed.miner_ids[1], task=bed.task, chain=chain, parent=genesis, updates=[], now_ms=now_ms() + 1
    )
    sa, sb = chain.add(a), chain.add(b)
    relay = bed.client(*bed.credentials("m2"))  # any miner may relay any miner's block
    on_m2 = bed.topics.block(bed.task.miners[2].node_id)
    assert relay.publish(on_m2, a) == 0
    assert relay.publish(on_m2, b) == 0
    winner = min(sa.hash, sb.hash).hex()
    tips = lambda: [bed.metrics(i).get("tip") for i in range(2)] + [bed.device_status(0).get("tip")]
    bed.wait(lambda: tips() == [winner] * 3, 30, f"every node on the lower-hash block; tips {tips()}")
    loser = sb if winner == sa.hash.hex() else sa
    c = build_block(identity=bed.miner_ids[1], task=bed.task, chain=chain, parent=loser, updates=[], now_ms=now_ms())
    sc = chain.add(c)
    assert relay.publish(on_m2, c) == 0
    bed.wait(lambda: tips() == [sc.hash.hex()] * 3, 30, f"every node reorganised onto the longer branch; tips {tips()}")


def test_a_late_joiner_adopts_a_verified_snapshot_and_takes_part(bed_factory):
    bed = bed_factory(miners=1, devices=2, min_updates=2, max_wait_ms=2500)
    bed.start_miner(0)
    bed.start_device(0)
    bed.wait(lambda: tip_of_miner(bed, 0) >= 3, 60, "three blocks before the late joiner")
    bed.start_device(1)
    bed.wait(lambda: bed.device_status(1).get("tip_height", 0) >= 3, 60, "the late joiner to catch up")
    bed.wait(
        lambda: bed.device_status(1).get("counters", {}).get("updates_sent", 0) >= 1,
        60,
        "the late joiner's first update",
    )
    late = bed.device_ids[1].public.node_id

    def rewarded():
        out = subprocess.run(
            [sys.executable, "-m", "coordinator.cli", "chain", "balances", str(bed.root / "m0" / "chain.db")],
            capture_output=True,
            text=True,
        ).stdout
        return any(line.split()[0] == late and int(line.split()[1]) > 0 for line in out.splitlines())

    bed.wait(rewarded, 60, "a block that includes the late joiner's update (a data reward)")
    settle(bed)
    bed.close()
    import sqlite3

    rows = (
        sqlite3.connect(bed.root / "d1" / "state" / "chain.db")
        .execute("SELECT height, length(raw) FROM blocks ORDER BY height")
        .fetchall()
    )
    assert any(size == 0 for h, size in rows if h > 0), "the late joiner did not use a snapshot"
    lines = [json.loads(line) for line in (bed.root / "d1" / "state" / "model_hashes.jsonl").read_text().splitlines()]
    from edge_sdk.chain.store import ChainStore

    miner_chain = {h.hash.hex(): h for h in ChainStore(bed.root / "m0" / "chain.db").best_chain()}
    for line in lines:
        assert miner_chain[line["block"]].model_hash.hex() == line["model_hash"]


def test_a_snapshot_with_a_wrong_model_or_header_changes_nothing(fed, tmp_path):
    import dataclasses

    from edge_sdk.chain.store import ChainStore
    from edge_sdk.protocol.errors import ProtocolError, Reason

    miner_store = ChainStore(tmp_path / "m.db", fed.genesis)
    for i in range(3):
        miner_store.add(fed.block(miner_store, updates=[fed.update(i, miner_store.tip.hash)]))
    headers = miner_store.best_chain()[1:]
    model = miner_store.tip.model
    tip = miner_store.tip

    def snapshot(hs, m, base=tip.base):
        return sync.Snapshot([h.encode() for h in hs], m, base, None)

    device = ChainStore(tmp_path / "d.db", fed.genesis)
    wrong = {k: v + 1 for k, v in model.items()}
    with pytest.raises(ProtocolError) as info:
        device.add_checkpoint(snapshot(headers, wrong))
    assert info.value.reason is Reason.BAD_MODEL_HASH
    forged = headers[:1] + [dataclasses.replace(headers[1], nonce=headers[1].nonce + 1)] + headers[2:]
    with pytest.raises(ProtocolError):
        device.add_checkpoint(snapshot(forged, model))
    with pytest.raises(ProtocolError) as info:  # a base that is not one of its blocks with its model
        device.add_checkpoint(snapshot(headers, model, base=headers[0].hash))
    assert info.value.reason is Reason.BAD_BODY
    assert device.tip.header.height == 0 and device.count() == 1
    state = device.add_checkpoint(snapshot(headers, model))
    assert device.tip.hash == miner_store.tip.hash == state.hash
    assert state.base == tip.base
    nxt = fed.block(miner_store, updates=[fed.update(0, miner_store.tip.hash)])
    assert device.add(nxt)[1]  # the device validates blocks after its checkpoint in full


def test_nodes_survive_a_broker_restart(bed_factory):
    from coordinator.task import broker

    bed = bed_factory(miners=1, devices=2, min_updates=2, max_wait_ms=3000)
    bed.start_miner(0)
    for i in range(2):
        bed.start_device(i)
    bed.wait(lambda: tip_of_miner(bed, 0) >= 2, 60, "two rounds")
    broker.stop(bed.broker)  # the broker goes away (persistence on)
    time.sleep(2)  # an outage, not a wait for anything: the nodes' reconnect attempts fail meanwhile
    bed.broker, _ = broker.start(bed.root / "broker", bed.root / "task" / "broker", port=bed.port)
    before = tip_of_miner(bed, 0)
    bed.wait(lambda: tip_of_miner(bed, 0) >= before + 2, 60, "rounds after the broker came back (nodes reconnect)")
    bed.wait(
        lambda: min(bed.device_status(i).get("tip_height", 0) for i in range(2)) >= before + 2, 30, "devices to follow"
    )


def test_a_revoked_device_is_refused_by_miners_and_by_the_broker(bed_factory):
    from coordinator.task.setup import coordinator_broker, revoke_device

    bed = bed_factory(miners=1, devices=2, max_wait_ms=120_000)
    target = bed.device_ids[1].public
    d1 = bed.client(*bed.credentials("d1"))
    notice = revoke_device(
        bed.root / "task", target.node_id
    )  # registry, passwd and acl rewritten; broker not yet reloaded
    config = coordinator_broker(bed.root / "task", bed.url)
    coordinator = bed.client(config.username, config.password)
    coordinator.c.publish(bed.topics.revocations, notice, qos=1, retain=True).wait_for_publish(5)
    bed.start_miner(0)  # it gets the retained list when it subscribes, before it announces `online`
    miner = bed.task.miners[0]
    bed.wait_online([miner.node_id])
    genesis_hash = MemoryChain(bed.genesis).tip.hash
    # the broker still lets d1 publish: the miners refuse its update on their own
    assert (
        d1.publish(
            bed.topics.update(miner.node_id, target.node_id),
            envelope.seal(miner.box_pk, device_update(bed, 1, genesis_hash)),
        )
        == 0
    )
    bed.wait(lambda: bed.metrics(0).get("rejections", {}).get("revoked") == 1, 10, "a revoked rejection")
    os.kill(bed.broker.pid, signal.SIGHUP)  # reload: mosquitto drops the revoked user
    deadline = time.monotonic() + 10
    while connack(bed.port, *bed.credentials("d1")) != NOT_AUTHORIZED:  # and refuses it from then on
        assert time.monotonic() < deadline, "the broker still accepts the revoked device after its reload"
        time.sleep(0.1)
    assert connack(bed.port, *bed.credentials("d0")) == 0  # others are unaffected


def test_emulate_cleans_up_on_ctrl_c_and_fails_loudly_on_timeout(tmp_path):
    out = tmp_path / "interrupted"
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coordinator.cli",
            "emulate",
            "--initial-hashes",  # the suite stays fast; calibration is tested on its own
            "20000",
            "--devices",
            "3",
            "--miners",
            "2",
            "--rounds",
            "50",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "round 1/" not in run.stdout.readline():
        pass
    run.send_signal(signal.SIGINT)
    # the emulator gives its children STOP_GRACE_S to close their stores before it SIGKILLs them: wait longer
    assert run.wait(timeout=STOP_GRACE_S + 30) == 130
    deadline = time.monotonic() + 10  # its children exit as it stops them; none may be left
    while leftovers := subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout.split():
        assert time.monotonic() < deadline, f"emulate left processes running: {leftovers}"
        time.sleep(0.1)
    late = tmp_path / "too-slow"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "coordinator.cli",
            "emulate",
            "--initial-hashes",  # the suite stays fast; calibration is tested on its own
            "20000",
            "--devices",
            "2",
            "--miners",
            "1",
            "--rounds",
            "100",
            "--timeout",
            "8",
            "--out",
            str(late),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "timed out" in result.stdout
    assert json.loads((late / "report.json").read_text())["ok"] is False
