"""A real federation for tests: a task, a Mosquitto on a free loopback port, miner and device
processes started and killed by PID, and MQTT clients with any node's credentials.

`bridged=True`: devices connect to a second, regional Mosquitto bridged to the core one, where the
miners are (coordinator/task/bridge.py)."""

from __future__ import annotations

import json
import os
import pwd
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

from coordinator.task import bridge, broker
from coordinator.task.setup import add_observer, enroll_device, enroll_miner, init_task
from edge_sdk.chain.store import ChainStore
from edge_sdk.node.status import Status, device_status_path, miner_status_path
from edge_sdk.protocol.identity import Identity
from edge_sdk.protocol.task import RoundRules, TrainingParams
from edge_sdk.transport.topics import Topics

REPO = Path(__file__).resolve().parents[2]


class Testbed:
    __test__ = False  # a helper, not a test class

    def __init__(
        self,
        root: Path,
        *,
        miners: int = 2,
        devices: int = 3,
        min_updates: int | None = None,
        max_wait_ms: int = 4000,
        samples: int = 60,
        initial_hashes: int = 2000,
        bridged: bool = False,
        **task_options,
    ):
        self.root = root
        self.reserved = [reserve_port() for _ in range(2 if bridged else 1)]  # closed as each broker starts
        self.port = self.reserved[0].getsockname()[1]
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.device_port = self.reserved[-1].getsockname()[1]  # where devices connect: the regional broker if bridged
        self.device_url = f"mqtt://127.0.0.1:{self.device_port}"
        self.miner_ids = [Identity.generate() for _ in range(miners)]
        for i, m in enumerate(self.miner_ids):
            m.save(root / f"m{i}" / "identity")
        self.task = init_task(
            root / "task",
            miners=[m.public for m in self.miner_ids],
            name="test",
            training=TrainingParams(2, 16, 0.1),
            rounds=RoundRules(min_updates or devices, max_wait_ms),
            initial_hashes=initial_hashes,
            target_interval_ms=2000,
            **task_options,
        )
        self.topics = Topics(self.task.id)
        for i, m in enumerate(self.miner_ids):
            enroll_miner(root / "task", m.public, broker_url=self.url, out=root / f"m{i}")
        from sklearn.datasets import load_digits

        digits = load_digits()
        x, y = (digits.data / 16).astype(np.float32), digits.target
        self.device_ids = []
        for i in range(devices):
            identity = Identity.generate()
            identity.save(root / f"d{i}" / "identity")
            part = slice(i * samples, (i + 1) * samples)
            np.savez(root / f"d{i}" / "data.npz", x=x[part], y=y[part])
            enroll_device(
                root / "task",
                identity.public,
                broker_url=self.device_url,
                out=root / f"d{i}" / "bundle",
                quota=1000,
                name=f"d{i}",
            )
            self.device_ids.append(identity)
        self.observer = add_observer(root / "task")
        self.genesis = (root / "task" / "genesis.block").read_bytes()
        self.processes: dict[str, subprocess.Popen] = {}
        self.regional = self.bridge_conf = None
        if bridged:
            self.bridge_conf = bridge.create_bridge(root / "task", "region", core_url=self.url, out=root / "bridge")
        self.reserved.pop(0).close()
        self.broker, _ = broker.start(root / "broker", root / "task" / "broker", port=self.port)
        if bridged:
            try:
                self.reserved.pop(0).close()
                self.regional, _ = bridge.start_regional(
                    root / "regional", root / "task", self.bridge_conf, self.device_port
                )
                self.wait_bridged()
            except BaseException:
                self.close()  # the caller gets no bed to close
                raise

    def wait_bridged(self, timeout: float = 15) -> float:
        """Until a message published on the regional broker reaches the core (a non-retained presence
        of d0, before any device runs); returns the seconds it took."""
        observer = Client(self.port, *self.observer)
        probe = Client(self.device_port, *self.credentials("d0"))
        try:
            return wait_across(probe, observer, self.topics.presence(self.device_ids[0].public.node_id), timeout)
        finally:
            probe.close()
            observer.close()

    def bridge_credentials(self) -> tuple[str, str]:
        """The bridge user's username and password on the core, from its bridge.conf."""
        conf = dict(
            line.split(" ", 1) for line in self.bridge_conf.read_text().splitlines() if line.startswith("remote_")
        )
        return conf["remote_username"], conf["remote_password"]

    def credentials(self, node: str) -> tuple[str, str]:
        cfg = json.loads((self.root / node / ("bundle" if node.startswith("d") else "") / "broker.json").read_text())
        return cfg["username"], cfg["password"]

    def start_miner(self, i: int, extra: tuple[str, ...] = (), env: dict[str, str] | None = None) -> subprocess.Popen:
        """`env`: more environment variables (fault injection: coordinator/miner/faults.py)."""
        m = self.root / f"m{i}"
        return self._spawn(
            f"m{i}",
            [
                "-m",
                "coordinator.cli",
                "miner",
                "run",
                "--identity",
                str(m / "identity"),
                "--genesis",
                str(m / "genesis.block"),
                "--broker-config",
                str(m / "broker.json"),
                "--db",
                str(m / "chain.db"),
                "--verbose",
                *extra,
            ],
            env=env,
        )

    def start_device(
        self, i: int, miner_index: int | None = None, python: list[str] | None = None, verify: str = "full"
    ) -> subprocess.Popen:
        """`python`: another interpreter command (an emulated arm64 one, say) instead of this one."""
        d = self.root / f"d{i}"
        return self._spawn(
            f"d{i}",
            [
                "-m",
                "edge_sdk.cli",
                "run",
                "--bundle",
                str(d / "bundle"),
                "--identity",
                str(d / "identity"),
                "--data",
                str(d / "data.npz"),
                "--state",
                str(d / "state"),
                "--backend",
                "portable",
                "--miner-index",
                str(i % len(self.miner_ids) if miner_index is None else miner_index),
                "--verify",
                verify,
            ],
            python,
        )

    def _spawn(
        self, name: str, args: list[str], python: list[str] | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        # cwd: the node imports the installed package, not this checkout's sources
        with open(self.root / f"{name}.log", "ab") as log:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(
                [*(python or [sys.executable]), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env={**os.environ, **env} if env else None,
            )
        self.processes[name] = process
        return process

    def kill(self, name: str, sig=signal.SIGKILL) -> None:
        process = self.processes.pop(name)
        os.kill(process.pid, sig)
        process.wait(timeout=10)

    def metrics(self, i: int) -> dict:
        """Miner i's status file as a dict ({} until it writes one)."""
        status = Status.read(miner_status_path(self.root / f"m{i}" / "chain.db"))
        return asdict(status) if status else {}

    def device_status(self, i: int) -> dict:
        status = Status.read(device_status_path(self.root / f"d{i}" / "state"))
        return asdict(status) if status else {}

    def wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            for name, p in self.processes.items():
                assert p.poll() is None, f"{name} exited: {(self.root / f'{name}.log').read_text()[-2000:]}"
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")

    def wait_online(self, node_ids: list[str], timeout: float = 30) -> None:
        """Until each node's retained presence is `online`: a node publishes it only after its
        subscriptions are in place, so from then on messages to it are delivered. It logs in as the
        observer, and the broker keeps one connection per login (client id = user name): an observer
        client the test already holds is disconnected, and loses its subscriptions."""
        watcher = Client(self.port, *self.observer)
        topics = {self.topics.presence(n) for n in node_ids}
        try:
            for topic in topics:
                watcher.subscribe(topic)
            deadline = time.monotonic() + timeout
            while {t for t, p in list(watcher.messages) if t in topics and p == b"online"} != topics:
                assert time.monotonic() < deadline, f"not online within {timeout} s: {sorted(topics)}"
                for name, p in self.processes.items():
                    assert p.poll() is None, f"{name} exited: {(self.root / f'{name}.log').read_text()[-2000:]}"
                time.sleep(0.05)
        finally:
            watcher.close()

    def client(self, username: str, password: str, port: int | None = None) -> Client:
        """A client of the core broker, or of another (`port`: the regional one is `device_port`)."""
        return Client(port or self.port, username, password)

    def close(self) -> None:
        for name in list(self.processes):
            p = self.processes.pop(name)
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for reservation in self.reserved:
            reservation.close()
        if self.regional is not None:
            broker.stop(self.regional)
        broker.stop(self.broker)


def chain_hashes(bed: Testbed, i: int) -> dict[str, str]:
    """Best-chain (height, block, model hash) the device recorded, for blocks on its final tip."""
    lines = (bed.root / f"d{i}" / "state" / "model_hashes.jsonl").read_text().splitlines()
    return {json.loads(line)["block"]: json.loads(line)["model_hash"] for line in lines}


def settle(bed: Testbed, miner: int = 0, timeout: float = 30) -> str:
    """Wait until every running device has the miner's tip; returns that tip (blocks mined after it
    may still be in flight when the bed closes)."""
    running = [int(n[1:]) for n in bed.processes if n.startswith("d")]
    settled = {}

    def same():
        tip = bed.metrics(miner).get("tip")
        settled["tip"] = tip
        return all(bed.device_status(i).get("tip") == tip for i in running)

    bed.wait(same, timeout, "devices to reach the miner's tip")
    return settled["tip"]


def assert_devices_agree(bed: Testbed, db: Path, upto: str, devices: list[int] | None = None) -> None:
    """Every device (of `devices`, default all) recorded, for each block of the best chain in `db` up
    to `upto` from the first it computed, the model hash that block's header commits to."""
    store = ChainStore(db)
    tip = bytes.fromhex(upto)
    best = [store.ancestor(tip, h) for h in range(1, store.get(tip).header.height + 1)]
    store.close()
    for i in range(len(bed.device_ids)) if devices is None else devices:
        seen = chain_hashes(bed, i)
        # a device that started after two blocks adopts a snapshot (PROTOCOL.md §13.1): it computed
        # the models from that block on (none if it recorded none of the chain: the tip is checked)
        start = min((h.height for h in best if h.hash.hex() in seen), default=best[-1].height if best else 1)
        for header in best[start - 1 :]:
            assert seen.get(header.hash.hex()) == header.model_hash.hex(), f"d{i} at height {header.height}"


def reserve_port() -> socket.socket:
    """A loopback port, held by a bound socket until its broker starts (close it just before). It is
    taken below the kernel's ephemeral range, where binding to port 0 (broker.free_port, in this or
    a concurrent test session) never lands: with free_port, parallel sessions sometimes started a
    broker on a port another had picked (mosquitto: "Address already in use")."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(100):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", random.randrange(10_000, low) if low > 11_000 else 0))
            return s
        except OSError:
            s.close()
    raise RuntimeError("no free loopback port below the ephemeral range")


def connack(
    port: int, username: str, password: str, timeout: float = 5, host: str = "127.0.0.1", ca_file: Path | None = None
) -> int:
    """The reason code of the broker's CONNACK to an MQTT 5 CONNECT with these credentials (0 success,
    0x87 not authorized: Mosquitto 2.0's answer to a wrong password or an unknown user); -1 if none.
    `ca_file`: over TLS, checking the broker's certificate for `host`."""
    answered, codes = threading.Event(), []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"connack-{time.monotonic_ns()}", protocol=mqtt.MQTTv5)
    c.username_pw_set(username, password)
    if ca_file:
        c.tls_set(ca_certs=str(ca_file))
    c.on_connect = lambda client, u, f, rc, p: (codes.append(rc.value), answered.set())
    c.connect(host, port)
    c.loop_start()
    try:
        answered.wait(timeout)
        return codes[0] if codes else -1
    finally:
        c.disconnect()
        c.loop_stop()


def wait_across(sender: Client, receiver: Client, topic: str, timeout: float = 15) -> float:
    """Publish on `topic` through `sender` (non-retained, every 0.1 s) until `receiver`, a client of
    another broker, gets it; returns the seconds it took. The bridge subscribed on the core before it
    forwarded that message, so both directions work from then on."""
    started = time.monotonic()
    receiver.subscribe(topic)
    while not any(t == topic for t, _ in receiver.messages):
        assert time.monotonic() - started < timeout, f"nothing on {topic} crossed the bridge within {timeout} s"
        assert sender.publish(topic, b"probe") == 0
        time.sleep(0.1)
    return time.monotonic() - started


def production_config(port: int, pki: Path, broker_files: Path, data: Path, log: Path) -> str:
    """mosquitto/production.conf as a test runs it: listener on 127.0.0.1:`port`, certificates from
    `pki` (deploy/server/make-certs.sh), passwd and acl from `broker_files`, run as this user."""
    text = (REPO / "mosquitto/production.conf").read_text()
    for old, new in (
        ("listener 8883", f"listener {port} 127.0.0.1"),
        ("/etc/mosquitto/blockfl/ca.crt", str(pki / "ca.crt")),
        ("/etc/mosquitto/blockfl/broker.crt", str(pki / "broker.crt")),
        ("/etc/mosquitto/blockfl/broker.key", str(pki / "broker.key")),
        ("/etc/mosquitto/blockfl/passwd", str(broker_files / "passwd")),
        ("/etc/mosquitto/blockfl/acl", str(broker_files / "acl")),
        ("/var/lib/mosquitto/", str(data) + "/"),
        ("log_dest syslog", f"log_dest file {log}"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    # as root, mosquitto would switch to a user who cannot read 0600 files
    return f"user {pwd.getpwuid(os.geteuid()).pw_name}\n" + text


class Client:
    """A plain MQTT 5 client that records what it receives (and its properties) and the PUBACK reason
    of each publish."""

    def __init__(
        self,
        port: int,
        username: str,
        password: str,
        client_id: str | None = None,
        host: str = "127.0.0.1",
        ca_file: str | Path | None = None,
    ):
        """`ca_file`: connect with TLS, checking the broker's certificate for `host` against it."""
        self.messages: list[tuple[str, bytes]] = []
        self.properties: list = []  # of each message, in the order of `messages`
        self.acks: dict[int, int] = {}
        self.lock = threading.Lock()
        self.received = threading.Condition(self.lock)  # notified on each message and acknowledgement
        self.connected = threading.Event()
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-{username}-{os.getpid()}-{time.monotonic_ns()}",
            protocol=mqtt.MQTTv5,
        )
        self.c.username_pw_set(username, password)
        if ca_file:
            self.c.tls_set(ca_certs=str(ca_file))
        self.c.on_connect = lambda c, u, f, rc, p: None if rc.is_failure else self.connected.set()
        self.c.on_message = lambda c, u, m: self._got(m.topic, bytes(m.payload), m.properties)
        self.c.on_publish = lambda c, u, mid, rc, p: self._acked(mid, rc.value)
        self.c.connect(host, port)
        self.c.loop_start()
        assert self.connected.wait(5), "could not connect"

    def _got(self, topic: str, payload: bytes, properties=None) -> None:
        with self.lock:
            self.messages.append((topic, payload))
            self.properties.append(properties)
            self.received.notify_all()

    def _acked(self, mid: int, reason: int) -> None:
        with self.lock:
            self.acks[mid] = reason
            self.received.notify_all()

    def wait_for(self, match, timeout: float) -> bool:
        """Until a message received so far satisfies `match(topic, payload)`; False after `timeout` s."""
        with self.lock:
            return self.received.wait_for(lambda: any(match(t, p) for t, p in self.messages), timeout)

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.subscribe(topic, qos=1)
        assert done.wait(5)

    def publish(self, topic: str, payload: bytes, timeout: float = 5, properties=None, retain: bool = False) -> int:
        """Publish QoS 1 and return the PUBACK reason code (0 = accepted, 0x87 = not authorized)."""
        info = self.c.publish(topic, payload, qos=1, properties=properties, retain=retain)
        with self.lock:
            self.received.wait_for(lambda: info.mid in self.acks, timeout)
            return self.acks.get(info.mid, -1)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()
