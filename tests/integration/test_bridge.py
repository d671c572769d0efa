"""A federation across bridged Mosquitto brokers: miners on the core broker, devices on a regional
one bridged to it (coordinator/task/bridge.py), all real processes on 127.0.0.1. What crosses and
what does not: a device on the regional broker cannot act as a miner through the bridge, and the
bridge user on the core (a compromised regional broker) can do only what its devices may."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from testbed import (
    REPO,
    Client,
    Testbed,
    assert_devices_agree,
    production_config,
    reserve_port,
    settle,
    wait_across,
)

from coordinator.task import bridge, broker
from coordinator.task.registry import REGIONAL
from coordinator.task.setup import add_observer, enroll_device, init_task, revoke_device
from coordinator.tools.chainverify import verify_database
from edge_sdk.chain.memory import MemoryChain
from edge_sdk.chain.store import ChainStore
from edge_sdk.protocol import sync
from edge_sdk.protocol.block import Block
from edge_sdk.protocol.identity import Identity
from edge_sdk.transport.mqtt import BrokerConfig
from edge_sdk.transport.topics import ANY, Topics

pytestmark = pytest.mark.timeout(240)
NOT_AUTHORIZED = 0x87


@pytest.fixture
def bed_factory(tmp_path):
    beds = []

    def make(**kw):
        bed = Testbed(tmp_path / f"bed{len(beds)}", bridged=True, **kw)
        beds.append(bed)
        return bed

    yield make
    for bed in beds:
        bed.close()


def config_lines(text: str) -> list[str]:
    """A Mosquitto config's options, in order: whole `topic` lines, only the name of the others."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [line if line.startswith("topic ") else line.split()[0] for line in lines]


def tip_of_miner(bed: Testbed, i: int) -> int:
    return bed.metrics(i).get("tip_height", -1)


def test_a_federation_across_a_regional_broker_bridged_to_the_core(bed_factory):
    # d3 is enrolled on the regional broker but never runs: the test speaks for it
    bed = bed_factory(miners=2, devices=4, min_updates=3, max_wait_ms=3000)
    for i in range(2):
        bed.start_miner(i)
    for i in range(3):
        bed.start_device(i)
    started = time.monotonic()
    bed.wait(lambda: min(tip_of_miner(bed, i) for i in range(2)) >= 2, 120, "two blocks on both miners")
    two_blocks_s = time.monotonic() - started

    # a sync request crosses up and its answer down, with the MQTT 5 Response Topic and Correlation
    # Data (an MQTT 3.1.1 bridge would drop them, and miners refuse a request without its topic)
    d3 = bed.device_ids[3]
    client = bed.client(*bed.credentials("d3"), port=bed.device_port)
    reply = bed.topics.reply(d3.public.node_id)
    client.subscribe(reply)
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic, props.CorrelationData = reply, b"bridged-sync"
    genesis_hash = MemoryChain(bed.genesis).tip.hash
    request = sync.make_request(d3, bed.task, [genesis_hash])
    assert client.publish(bed.topics.sync(bed.task.miners[0].node_id), request, properties=props) == 0
    bed.wait(lambda: client.messages, 20, "a sync response through the bridge")
    answer = sync.parse_response(client.messages[0][1], bed.task)
    assert client.properties[0].CorrelationData == b"bridged-sync"
    assert len(answer.blocks) >= 2 and answer.signer == bed.task.miners[0].sign_pk
    client.close()

    tip = settle(bed, miner=0, timeout=60)
    bed.close()
    for i in range(2):
        report = verify_database(bed.root / f"m{i}" / "chain.db")
        assert report.ok, report.failure
    assert_devices_agree(bed, bed.root / "m0" / "chain.db", tip, devices=[0, 1, 2])
    store = ChainStore(bed.root / "m0" / "chain.db")
    best = store.best_chain()[1:]
    updates = [len(Block.parse(store.raw_block(h.hash), bed.task.chain.max_block_bytes).update_bytes) for h in best]
    store.close()
    assert len(best) >= 2 and all(n >= 1 for n in updates), updates
    assert all(bed.device_status(i)["counters"]["updates_sent"] >= 1 for i in range(3))
    print(f"two blocks in {two_blocks_s:.1f} s; updates per block {updates}")


@pytest.mark.parametrize("restarted", ["core", "regional"])
def test_the_bridged_federation_goes_on_after_a_broker_restarts(bed_factory, restarted):
    """Mosquitto 2.0 keeps no session for an MQTT 5 bridge across a dropped link: what the core
    publishes meanwhile is lost to the region. Retained heads and presence, and sync, make up for it."""
    bed = bed_factory(miners=2, devices=3, max_wait_ms=3000)
    for i in range(2):
        bed.start_miner(i)
    for i in range(3):
        bed.start_device(i)
    bed.wait(lambda: min(tip_of_miner(bed, i) for i in range(2)) >= 2, 120, "two blocks on both miners")
    if restarted == "core":
        broker.stop(bed.broker)
        time.sleep(2)  # a real outage: the bridge's reconnect attempts fail meanwhile
        bed.broker, _ = broker.start(bed.root / "broker", bed.root / "task" / "broker", port=bed.port)
    else:
        broker.stop(bed.regional)
        time.sleep(2)
        bed.regional, _ = bridge.start_regional(
            bed.root / "regional", bed.root / "task", bed.bridge_conf, bed.device_port
        )
    back = time.monotonic()
    before = max(tip_of_miner(bed, i) for i in range(2))
    bed.wait(lambda: min(tip_of_miner(bed, i) for i in range(2)) >= before + 2, 120, "two blocks after the restart")
    tip = settle(bed, miner=0, timeout=60)
    print(f"{restarted} restarted: two more blocks and devices on the tip {time.monotonic() - back:.1f} s after")
    bed.close()
    assert_devices_agree(bed, bed.root / "m0" / "chain.db", tip)


def test_a_device_on_the_regional_broker_cannot_act_as_a_miner_through_the_bridge(bed_factory):
    bed = bed_factory(miners=1, devices=2)
    miner, me, other = bed.task.miners[0].node_id, *(d.public.node_id for d in bed.device_ids)
    observer = bed.client(*bed.observer)  # on the core, reads every topic of the task
    observer.subscribe(bed.topics.everything)
    d0 = bed.client(*bed.credentials("d0"), port=bed.device_port)
    t = bed.topics
    as_a_miner = [t.block(miner), t.head(miner), t.partial(miner), t.gossip(miner, miner), t.presence(miner)]
    as_others = [t.reply(other), t.update(miner, other), t.presence(other), t.genesis, t.revocations]
    for topic in as_a_miner + as_others:
        assert d0.publish(topic, b"forged") == NOT_AUTHORIZED, topic
    # a device that connects with the bridge's local client id gets its own name as id: the bridge stays
    # (without use_username_as_clientid on the regional broker, this connection cut the bridge)
    squatter = Client(bed.device_port, *bed.credentials("d1"), client_id="local.bridge-region")
    # presence crosses both ways and never comes back (an echo would arrive before the next message
    # on the same path): d0's reaches the core once, then the miner's reaches d0 once
    d0.subscribe(t.presence(ANY))
    assert d0.publish(t.presence(me), b"online") == 0
    bed.wait(lambda: observer.messages, 15, "d0's presence on the core")
    as_miner = bed.client(*bed.credentials("m0"))
    assert as_miner.publish(t.presence(miner), b"online") == 0
    bed.wait(lambda: len(d0.messages) >= 2, 15, "the miner's presence on the regional broker")
    marker = t.update(miner, me)
    assert d0.publish(marker, b"marker") == 0
    # the bridge keeps order: once the marker is on the core, nothing published before it is on its way
    bed.wait(lambda: any(topic == marker for topic, _ in observer.messages), 15, "the marker on the core")
    assert [topic for topic, _ in observer.messages] == [t.presence(me), t.presence(miner), marker]
    assert [topic for topic, _ in d0.messages] == [t.presence(me), t.presence(miner)]
    for client in (squatter, as_miner, d0, observer):
        client.close()


def test_the_bridge_user_can_do_on_the_core_only_what_its_devices_may(bed_factory):
    """What a compromised regional broker (or a stolen bridge password) can do at the core."""
    bed = bed_factory(miners=2, devices=2)
    broker.stop(bed.regional)  # the core lets one session per username: the test takes the bridge's
    bed.regional = None
    m0, m1 = (m.node_id for m in bed.task.miners)
    d0, d1 = (d.public.node_id for d in bed.device_ids)
    t = bed.topics
    hostile = bed.client(*bed.bridge_credentials())
    hostile.subscribe(t.everything)
    forbidden = [
        t.block(m0),
        t.head(m0),
        t.partial(m0),
        t.gossip(m0, m1),
        t.reply(d0),
        t.presence(m0),
        t.genesis,
        t.revocations,
        t.update(m0, "00" * 16),  # no such device
        t.update(m0, m1),
    ]
    for topic in forbidden:
        assert hostile.publish(topic, b"forged") == NOT_AUTHORIZED, topic
    for topic in (t.update(m0, d0), t.sync(m0), t.presence(d0)):
        assert hostile.publish(topic, b"as a device may") != NOT_AUTHORIZED, topic
    # reading: only what devices read, and replies only to enrolled devices
    miner = bed.client(*bed.credentials("m0"))
    device = bed.client(*bed.credentials("d0"))
    assert device.publish(t.update(m0, d0), b"sealed update") == 0
    assert device.publish(t.sync(m0), b"sync request") == 0
    assert miner.publish(t.gossip(m1, m0), b"gossip") == 0
    assert miner.publish(t.reply(m1), b"to a miner") == 0
    assert miner.publish(t.reply(d1), b"to a device") == 0
    assert miner.publish(t.block(m0), b"marker") == 0
    bed.wait(lambda: any(topic == t.block(m0) for topic, _ in hostile.messages), 10, "the marker")
    seen = [topic for topic, _ in hostile.messages if topic != t.presence(d0)]  # its own: it reads presence
    assert seen == [t.reply(d1), t.block(m0)]
    # a revoked device drops out of the bridge user's rules when the core reloads
    revoke_device(bed.root / "task", d1)
    os.kill(bed.broker.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while hostile.publish(t.update(m0, d1), b"revoked") != NOT_AUTHORIZED:
        assert time.monotonic() < deadline, "the core still lets the bridge write for a revoked device"
        time.sleep(0.1)
    hostile.close()
    miner.close()
    device.close()


def test_bridge_settings_are_refused_with_a_reason_before_anything_changes(tmp_path):
    init_task(tmp_path / "task", miners=[Identity.generate().public], initial_hashes=20_000)
    registry = (tmp_path / "task" / "registry.json").read_text()
    for name, url, ca_file, reason in (
        ("EU 1", "mqtts://core:8883", "ca.crt", "bridge name"),
        ("eu1", "http://core", None, "expected mqtt://"),
        ("eu1", "mqtt://core x:1883", None, "expected mqtt://"),
        ("eu1", "mqtt://core:1883", "ca.crt", "mqtts:// only"),
        ("eu1", "mqtts://core:8883", "ca.crt\nallow_anonymous true", "control characters"),
    ):
        with pytest.raises(ValueError, match=reason):
            bridge.create_bridge(tmp_path / "task", name, core_url=url, out=tmp_path / "out", ca_file=ca_file)
    assert (tmp_path / "task" / "registry.json").read_text() == registry and not (tmp_path / "out").exists()


def test_production_brokers_bridged_over_tls_with_the_cli_generated_config(tmp_path):
    """As mosquitto/README.md installs them: mosquitto/production.conf on both hosts, the regional one
    with the regional passwd and acl and `blockfl coordinator bridge`'s bridge.conf in its include
    directory; the bridge checks the core's certificate against the CA."""
    pki = tmp_path / "pki"
    subprocess.run(["bash", REPO / "deploy/server/make-certs.sh", pki, "localhost"], check=True, capture_output=True)
    task_dir, device = tmp_path / "task", Identity.generate()
    task = init_task(task_dir, miners=[Identity.generate().public], initial_hashes=20_000)
    reserved = [reserve_port(), reserve_port()]  # closed as each broker starts
    core_port, regional_port = (r.getsockname()[1] for r in reserved)
    enroll_device(task_dir, device.public, broker_url=f"mqtts://localhost:{regional_port}", out=tmp_path / "d0")
    observer = add_observer(task_dir)
    etc = tmp_path / "regional-etc"  # /etc/mosquitto/blockfl on the regional host
    cli = [sys.executable, "-m", "coordinator.cli", "coordinator", "bridge", "--name", "eu", "--task-dir", task_dir]
    refused = subprocess.run([*cli, "--core-url", "mqtts://localhost", "--out", etc], capture_output=True, text=True)
    assert refused.returncode == 2 and "--ca-file" in refused.stderr and not etc.exists()
    core_url = f"mqtts://localhost:{core_port}"
    made = subprocess.run(
        [*cli, "--core-url", core_url, "--ca-file", pki / "ca.crt", "--out", etc], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    conf = (etc / "bridge.conf").read_text()
    password = next(line.split()[1] for line in conf.splitlines() if line.startswith("remote_password "))
    assert stat.S_IMODE((etc / "bridge.conf").stat().st_mode) == 0o600
    leaked = password in made.stdout + made.stderr + (task_dir / "registry.json").read_text()
    assert not leaked, "the bridge's password is in the output or the registry"
    # mosquitto/bridge.conf.example has the same lines in the same order, but for its values
    example = (
        (REPO / "mosquitto/bridge.conf.example").read_text().replace("0123456789abcdef", Topics(task.id).prefix[8:])
    )
    assert config_lines(example) == config_lines(conf)
    core_conf = tmp_path / "core.conf"
    core_conf.write_text(production_config(core_port, pki, task_dir / "broker", tmp_path, tmp_path / "core.log"))
    (tmp_path / "regional").mkdir()
    regional_files = task_dir / "broker" / REGIONAL
    (etc / "production.conf").write_text(
        production_config(regional_port, pki, regional_files, tmp_path / "regional", tmp_path / "regional.log")
    )
    (tmp_path / "regional.conf").write_text(f"include_dir {etc}\n")  # as deploy/server/mosquitto-blockfl.conf
    reserved[0].close()
    started = [broker.run(core_conf, core_port, log=tmp_path / "core.log")]
    try:
        reserved[1].close()
        started.append(broker.run(tmp_path / "regional.conf", regional_port, log=tmp_path / "regional.log"))
        tls = {"host": "localhost", "ca_file": pki / "ca.crt"}
        receiver = Client(core_port, *observer, **tls)
        sender = Client(
            regional_port, device.public.node_id, BrokerConfig.load(tmp_path / "d0" / "broker.json").password, **tls
        )
        took = wait_across(sender, receiver, Topics(task.id).presence(device.public.node_id), timeout=15)
        print(f"TLS bridge carried a message after {took:.2f} s")
        sender.close()
        receiver.close()
    finally:
        for process in reversed(started):
            broker.stop(process)
