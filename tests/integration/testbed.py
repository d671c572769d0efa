"""A real federation for tests: a task, a Mosquitto on a free loopback port, miner and device
processes started and killed by PID, and MQTT clients with any node's credentials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

from coordinator.task import broker
from coordinator.task.setup import add_observer, enroll_device, enroll_miner, init_task
from edge_sdk.node.status import Status, device_status_path, miner_status_path
from edge_sdk.protocol.identity import Identity
from edge_sdk.protocol.task import RoundRules, TrainingParams
from edge_sdk.transport.topics import Topics


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
        **task_options,
    ):
        self.root = root
        self.port = broker.free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
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
                broker_url=self.url,
                out=root / f"d{i}" / "bundle",
                quota=1000,
                name=f"d{i}",
            )
            self.device_ids.append(identity)
        self.observer = add_observer(root / "task")
        self.genesis = (root / "task" / "genesis.block").read_bytes()
        self.broker, _ = broker.start(root / "broker", root / "task" / "broker", port=self.port)
        self.processes: dict[str, subprocess.Popen] = {}

    def credentials(self, node: str) -> tuple[str, str]:
        cfg = json.loads((self.root / node / ("bundle" if node.startswith("d") else "") / "broker.json").read_text())
        return cfg["username"], cfg["password"]

    def start_miner(self, i: int) -> subprocess.Popen:
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
            ],
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

    def _spawn(self, name: str, args: list[str], python: list[str] | None = None) -> subprocess.Popen:
        # cwd: the node imports the installed package, not this checkout's sources
        with open(self.root / f"{name}.log", "ab") as log:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(
                [*(python or [sys.executable]), *args], stdout=log, stderr=subprocess.STDOUT, cwd=self.root
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

    def client(self, username: str, password: str) -> Client:
        return Client(self.port, username, password)

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
        broker.stop(self.broker)


class Client:
    """A plain MQTT 5 client that records what it receives and the PUBACK reason of each publish."""

    def __init__(self, port: int, username: str, password: str):
        self.messages: list[tuple[str, bytes]] = []
        self.acks: dict[int, int] = {}
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"test-{username}-{os.getpid()}-{time.monotonic_ns()}",
            protocol=mqtt.MQTTv5,
        )
        self.c.username_pw_set(username, password)
        self.c.on_connect = lambda c, u, f, rc, p: None if rc.is_failure else self.connected.set()
        self.c.on_message = lambda c, u, m: self._got(m.topic, bytes(m.payload))
        self.c.on_publish = lambda c, u, mid, rc, p: self.acks.__setitem__(mid, rc.value)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.connected.wait(5), "could not connect"

    def _got(self, topic: str, payload: bytes) -> None:
        with self.lock:
            self.messages.append((topic, payload))

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.subscribe(topic, qos=1)
        assert done.wait(5)

    def publish(self, topic: str, payload: bytes, timeout: float = 5) -> int:
        """Publish QoS 1 and return the PUBACK reason code (0 = accepted, 0x87 = not authorized)."""
        info = self.c.publish(topic, payload, qos=1)
        deadline = time.monotonic() + timeout
        while info.mid not in self.acks and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.acks.get(info.mid, -1)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()
