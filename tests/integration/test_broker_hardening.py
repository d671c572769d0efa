"""Hostile input at the broker, against a real Mosquitto with the configs we ship and generate: an
enrolled device cannot knock a miner off with the miner's client id, persistent sessions still
work when the client id is the username, and sockets that never send CONNECT take at most the
listener's `max_connections` (the remaining exposure mosquitto/README.md documents)."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from conftest import REPO
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from testbed import production_config

from coordinator.task import broker
from coordinator.task.setup import enroll_device, enroll_miner, init_task
from edge_sdk.protocol.identity import Identity
from edge_sdk.transport.topics import Topics

pytestmark = pytest.mark.timeout(120)
CONFIGS = ["generated", "dev.conf", "production.conf"]


class Task:
    """One miner and two devices: d0 plays the impostor, d1 publishes updates to the miner."""

    def __init__(self, root: Path):
        self.root = root
        self.miner = Identity.generate()
        task = init_task(root / "task", miners=[self.miner.public], name="hardening", initial_hashes=20_000)
        self.topics = Topics(task.id)
        url = "mqtt://127.0.0.1:1883"  # only the credentials in broker.json matter here
        enroll_miner(root / "task", self.miner.public, broker_url=url, out=root / "m0")
        self.devices = []
        for i in range(2):
            device = Identity.generate()
            enroll_device(root / "task", device.public, broker_url=url, out=root / f"d{i}", quota=10, name=f"d{i}")
            self.devices.append(device)

    @property
    def miner_id(self) -> str:
        return self.miner.public.node_id

    def device_id(self, i: int) -> str:
        return self.devices[i].public.node_id

    def credentials(self, node: str) -> tuple[str, str]:
        cfg = json.loads((self.root / node / "broker.json").read_text())
        return cfg["username"], cfg["password"]


class Broker:
    """A real Mosquitto on 127.0.0.1 with one of our configs; restartable on the same port and data."""

    def __init__(self, kind: str, task: Task, max_connections: int | None = None):
        self.kind, self.task, self.root = kind, task, task.root
        self.port = broker.free_port()
        self.max_connections = max_connections
        self.ca_file: str | None = None
        self.host = "127.0.0.1"
        self.process: subprocess.Popen | None = None
        self.conf = self.root / f"{kind}.conf"
        me = pwd.getpwuid(os.geteuid()).pw_name  # as root, mosquitto would switch to a user who cannot read 0600 files
        if kind == "dev.conf":
            text = (REPO / "mosquitto/dev.conf").read_text().replace("listener 1883 ", f"listener {self.port} ")
            (self.root / "mosquitto-data").mkdir()
            self.conf.write_text(f"user {me}\nlog_dest file {self.root / 'mosquitto.log'}\n" + text)
        elif kind == "production.conf":
            pki = self.root / "pki"
            subprocess.run(
                ["bash", str(REPO / "deploy/server/make-certs.sh"), str(pki), "localhost"],
                check=True,
                capture_output=True,
            )
            self.ca_file, self.host = str(pki / "ca.crt"), "localhost"
            broker_files = self.root / "task" / "broker"
            self.conf.write_text(
                production_config(self.port, pki, broker_files, self.root, self.root / "mosquitto.log")
            )
        else:
            assert kind == "generated"

    @property
    def log(self) -> str:
        name = "broker/mosquitto.log" if self.kind == "generated" else "mosquitto.log"
        return (self.root / name).read_text()

    def start(self) -> None:
        if self.kind == "generated":
            self.process, _ = broker.start(
                self.root / "broker",
                self.root / "task" / "broker",
                port=self.port,
                max_connections=self.max_connections,
            )
            return
        # cwd: dev.conf names the task's files relative to where it is started
        self.process = subprocess.Popen(
            [broker.find_mosquitto(), "-c", str(self.conf)], cwd=self.root, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.stderr.read().decode()[-500:]
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.process is not None:
            broker.stop(self.process)  # SIGTERM by PID, then SIGKILL; mosquitto saves its sessions on SIGTERM
            self.process = None


class Peer:
    """An MQTT 5 client with a node's credentials and a client id of our choosing; counts what it sees."""

    def __init__(
        self,
        b: Broker,
        credentials: tuple[str, str],
        client_id: str,
        *,
        subscribe: str | None = None,
        persistent: bool = False,
        reconnect: bool = True,
    ):
        self.connects = self.disconnects = 0
        self.refused: list[str] = []
        self.session_present: list[bool] = []
        self.messages: list[bytes] = []
        self.acks: dict[int, int] = {}
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.subscribe_to = subscribe
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if b.ca_file:
            self.c.tls_set(ca_certs=b.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        self.c.username_pw_set(*credentials)
        self.c.reconnect_delay_set(min_delay=0.2, max_delay=1)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.on_message = lambda c, u, m: self.messages.append(bytes(m.payload))
        self.c.on_publish = lambda c, u, mid, rc, p: self.acks.__setitem__(mid, rc.value)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600 if persistent else 0  # as edge_sdk.transport.mqtt.Connection does
        self.reconnect = reconnect
        self.c.connect_async(b.host, b.port, keepalive=15, clean_start=not persistent, properties=props)
        self.c.loop_start()

    def _on_connect(self, client, userdata, flags, rc, properties):
        if rc.is_failure:
            self.refused.append(str(rc))
            return
        self.connects += 1
        self.session_present.append(bool(flags.session_present))
        if self.subscribe_to:
            client.subscribe(self.subscribe_to, qos=1)
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, rc, properties):
        self.disconnects += 1
        self.refused.append(str(rc))
        if not self.reconnect:
            client.disconnect()  # stops paho's automatic reconnect

    def publish(self, topic: str, payload: bytes, timeout: float = 5) -> int:
        """QoS 1; the PUBACK reason code, or -1 if none came within `timeout`."""
        info = self.c.publish(topic, payload, qos=1)
        deadline = time.monotonic() + timeout
        while info.mid not in self.acks and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.acks.get(info.mid, -1)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def task(tmp_path) -> Task:
    return Task(tmp_path)


@pytest.fixture
def brokers():
    started: list[Broker] = []
    peers: list[Peer] = []
    yield started, peers
    for p in peers:
        p.close()
    for b in started:
        b.stop()


def run_broker(brokers, kind: str, task: Task, **kw) -> Broker:
    b = Broker(kind, task, **kw)
    brokers[0].append(b)
    b.start()
    return b


def peer(brokers, *args, **kw) -> Peer:
    p = Peer(*args, **kw)
    brokers[1].append(p)
    return p


@pytest.mark.parametrize("kind", CONFIGS)
def test_a_device_using_a_miners_client_id_does_not_knock_the_miner_off(kind, task, brokers):
    b = run_broker(brokers, kind, task)
    mid, d1 = task.miner_id, task.device_id(1)
    # the miner as the node runtime connects: client id miner-<id>, persistent session, auto-reconnect
    miner = peer(
        brokers, b, task.credentials("m0"), f"miner-{mid}", subscribe=task.topics.update(mid, "+"), persistent=True
    )
    assert miner.connected.wait(10) and miner.subscribed.wait(5)
    sender = peer(brokers, b, task.credentials("d1"), f"device-{d1}")
    assert sender.connected.wait(10)
    rounds, impostor_connects, acks = 8, 0, []
    for k in range(rounds):
        # an enrolled device (its own valid credentials) connects with the miner's client id, again and again
        impostor = peer(brokers, b, task.credentials("d0"), f"miner-{mid}", reconnect=False)
        impostor_connects += impostor.connected.wait(5)
        acks.append(sender.publish(task.topics.update(mid, d1), b"update %d" % k))
        # the update, published after the impostor connected, reaches the miner: it is still on. (Knocked
        # off, it would not: this wait runs out and the counts below say what happened.)
        deadline = time.monotonic() + 5
        while b"update %d" % k not in miner.messages and time.monotonic() < deadline:
            time.sleep(0.02)
        impostor.close()
    assert impostor_connects == rounds  # the impostor did reach the broker each time
    assert (miner.connects, miner.disconnects) == (1, 0), (
        f"the miner was knocked off: {miner.connects} connects, {miner.disconnects} disconnects ({miner.refused})"
    )
    assert acks == [0] * rounds  # 0x10 here would mean: the miner's subscription was gone
    expected = [b"update %d" % k for k in range(rounds)]
    wait_for(lambda: miner.messages == expected, 5, f"every update at the miner; got {miner.messages}")
    assert "already connected" not in b.log


@pytest.mark.parametrize("kind", CONFIGS)
def test_persistent_sessions_survive_a_reconnect_and_a_broker_restart(kind, task, brokers):
    b = run_broker(brokers, kind, task)
    mid, d1 = task.miner_id, task.device_id(1)
    first = peer(
        brokers, b, task.credentials("m0"), f"miner-{mid}", subscribe=task.topics.update(mid, "+"), persistent=True
    )
    assert first.connected.wait(10) and first.subscribed.wait(5)
    assert first.session_present == [False]
    first.close()  # a clean disconnect; the session stays for its expiry
    sender = peer(brokers, b, task.credentials("d1"), f"device-{d1}")
    assert sender.connected.wait(10)
    assert sender.publish(task.topics.update(mid, d1), b"while away") == 0
    sender.close()
    b.stop()
    b.start()  # persistence: the session and its queued message survive a broker restart
    # back as the node runtime reconnects: same client id, clean_start=False (the broker keys the session
    # by the username now, and the client id the node sends is ignored)
    again = peer(brokers, b, task.credentials("m0"), f"miner-{mid}", persistent=True)
    assert again.connected.wait(10)
    assert again.session_present == [True]
    wait_for(lambda: again.messages == [b"while away"], 5, f"the queued message; got {again.messages}")


def held(sockets: list[socket.socket]) -> int:
    """How many of these sockets the broker still holds open (no EOF, no reset)."""
    n = 0
    for s in sockets:
        s.setblocking(False)
        try:
            n += s.recv(1) != b""
        except BlockingIOError:
            n += 1
        except OSError:
            pass
    return n


def test_idle_sockets_take_at_most_max_connections_and_the_broker_recovers(task, brokers):
    cap = 20
    b = run_broker(brokers, "generated", task, max_connections=cap)
    assert f"max_connections {cap}\n" in (task.root / "broker" / "mosquitto.conf").read_text()
    mid, d1 = task.miner_id, task.device_id(1)
    idle = []
    try:
        for _ in range(cap + 20):  # no credentials, no CONNECT: just TCP
            idle.append(socket.create_connection(("127.0.0.1", b.port), timeout=2))
        # Mosquitto 2.0.11 admits cap + 1 sockets (it compares after counting the new one) and closes
        # every other one at once
        deadline = time.monotonic() + 10
        while (holding := held(idle)) > cap + 1:
            assert time.monotonic() < deadline, f"the broker still holds {holding} idle sockets"
            time.sleep(0.05)
        assert cap <= holding, holding
        assert "denied: max_connections exceeded" in b.log
        assert b.process.poll() is None
        # the remaining exposure: while the cap is held, a device with valid credentials is refused
        refused = peer(brokers, b, task.credentials("d1"), f"device-{d1}", reconnect=False)
        wait_for(lambda: refused.refused, 5, "the refused connection")
        assert not refused.connected.is_set() and refused.connects == 0
        refused.close()
    finally:
        for s in idle:
            s.close()
    assert b.process.poll() is None
    # the idle sockets are gone: devices connect and work again
    miner = peer(brokers, b, task.credentials("m0"), f"miner-{mid}", subscribe=task.topics.update(mid, "+"))
    assert miner.connected.wait(10) and miner.subscribed.wait(5)
    device = peer(brokers, b, task.credentials("d1"), f"device-{d1}")
    assert device.connected.wait(10)
    assert device.publish(task.topics.update(mid, d1), b"after") == 0
    wait_for(lambda: miner.messages == [b"after"], 5, "the update after recovery")


def test_the_generated_cap_is_below_the_brokers_descriptor_limit(task, brokers):
    b = run_broker(brokers, "generated", task)
    cap = int(re.search(r"^max_connections (\d+)$", (task.root / "broker/mosquitto.conf").read_text(), re.M)[1])
    limits = Path(f"/proc/{b.process.pid}/limits").read_text()
    soft = re.search(r"^Max open files\s+(\S+)", limits, re.M)[1]
    assert soft == "unlimited" or cap + broker.RESERVED_FDS <= int(soft), (cap, soft)
    assert cap == broker.default_max_connections() <= broker.MAX_CONNECTIONS


def setting(text: str, name: str) -> int:
    return int(re.search(rf"^{name}\s*=?\s*(\d+)\s*$", text, re.M)[1])


def test_shipped_caps_sit_below_their_descriptor_limits_and_the_drop_in_verifies(tmp_path):
    dev = (REPO / "mosquitto/dev.conf").read_text()
    assert setting(dev, "max_connections") + broker.RESERVED_FDS <= 1024  # a shell's usual `ulimit -n`
    drop_in = (REPO / "deploy/server/mosquitto.service.d/blockfl.conf").read_text()
    production = (REPO / "mosquitto/production.conf").read_text()
    assert setting(production, "max_connections") + broker.RESERVED_FDS <= setting(drop_in, "LimitNOFILE")
    for text in (dev, production, broker.CONFIG):
        assert re.search(r"^use_username_as_clientid true$", text, re.M)
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (Debian: apt-get install -y systemd)"
    # a stand-in for Debian's mosquitto.service, with our drop-in where systemd looks for it
    (tmp_path / "mosquitto.service.d").mkdir()
    (tmp_path / "mosquitto.service").write_text(
        f"[Unit]\nDescription=Mosquitto\n\n[Service]\nExecStart={broker.find_mosquitto()} -c /dev/null\n"
    )
    (tmp_path / "mosquitto.service.d" / "blockfl.conf").write_text(drop_in)
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / "mosquitto.service")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"},
    )
    assert result.returncode == 0, result.stderr
    assert "blockfl.conf" not in result.stderr, result.stderr  # an unknown key or bad value would be named here
