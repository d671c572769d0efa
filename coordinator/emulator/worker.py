"""A worker process of the emulator: many device agents in one process.

    python -m coordinator.emulator.worker --spec FILE

Each agent is a whole device — its own identity, MQTT connection and credentials, chain store,
state directory and outbox — running its node loop in a thread of its own; what they share is
what a process can share safely: one trainer per model package (ONNX Runtime sessions run
concurrently), and a pool of as many training threads as the machine has cores. One process per
device cost ~55 MB each; here a device costs a few MB (see docs/emulator.md).

The spec is JSON: {"devices": [{"name", "bundle", "identity", "data", "state", "miner_index",
"verify", "attack"}]}. SIGTERM stops every agent as it would stop a device process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from coordinator.emulator import lifeline
from edge_sdk.node import logs
from edge_sdk.node.bundle import Bundle
from edge_sdk.node.device import Device
from edge_sdk.node.runtime import Node
from edge_sdk.protocol.identity import Identity
from edge_sdk.training.trainers import make_trainer

log = logging.getLogger("blockfl.worker")
JOIN_S = 30  # how long stopping waits for every agent to close its store and connection


@dataclass(frozen=True)
class AgentSpec:
    name: str
    bundle: str
    identity: str
    data: str
    state: str
    miner_index: int
    verify: str = "full"
    attack: str | None = None


def write_spec(path: Path, agents: list[AgentSpec]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"devices": [asdict(a) for a in agents]}))
    return path


def read_spec(path: str | Path) -> list[AgentSpec]:
    return [AgentSpec(**entry) for entry in json.loads(Path(path).read_text())["devices"]]


class Agents:
    """Builds the devices of one spec, sharing a trainer per model, and runs each in a thread."""

    def __init__(self, specs: list[AgentSpec], backend: str = "portable"):
        self.backend = backend
        self._trainers: dict[bytes, object] = {}
        self.devices = [self._build(spec) for spec in specs]
        self.threads: list[threading.Thread] = []

    def _trainer(self, bundle: Bundle):
        key = b"".join(digest for _, digest in sorted(bundle.task.model_files.items()))
        if key not in self._trainers:
            self._trainers[key] = make_trainer(bundle.package, self.backend)
        return self._trainers[key]

    def _build(self, spec: AgentSpec) -> Device:
        bundle = Bundle(spec.bundle)
        with np.load(spec.data) as data:
            x, y = data["x"], data["y"]
        kind = Device
        extra: dict = {}
        if spec.attack:
            from coordinator.emulator.attacks import AttackerDevice

            kind, extra = AttackerDevice, {"kind": spec.attack}
        return kind(
            bundle=bundle,
            identity=Identity.load(spec.identity),
            data=(x, y),
            state_dir=spec.state,
            backend=self.backend,
            preferred_miner=spec.miner_index,
            trainer=self._trainer(bundle),
            verify=spec.verify,
            **extra,
        )

    def start(self) -> None:
        for device in self.devices:
            thread = threading.Thread(target=device.run, name=device.me[:8], daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        for device in self.devices:
            device.stop()
        for thread in self.threads:
            thread.join(timeout=JOIN_S / max(1, len(self.threads)) + 0.5)


def raise_descriptor_limit() -> None:
    """Every agent holds a socket and SQLite files (database, WAL, shared memory): ~5 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def serve(specs: list[AgentSpec], backend: str, stopping: threading.Event) -> None:
    """Runs the agents of one spec until `stopping` is set or every agent has stopped: the worker
    process's body, shared with the Ray actor (ray_workers.py) so that both run devices alike."""
    raise_descriptor_limit()
    Node.jobs = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="train")
    agents = Agents(specs, backend)
    agents.start()
    while not stopping.wait(0.5):
        if not any(t.is_alive() for t in agents.threads):
            break
    agents.stop()
    Node.jobs.shutdown(wait=False, cancel_futures=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="worker", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True)
    parser.add_argument("--backend", default="portable")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logs.setup(args.verbose)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    lifeline.follow_parent()
    serve(read_spec(args.spec), args.backend, stopping)
    return 0


if __name__ == "__main__":
    sys.exit(main())
