"""The emulator's processes: every miner is its own OS process; devices run as agents in a few
worker processes (worker.py), or in Ray actors on a cluster (ray_workers.py). Started and stopped here."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from coordinator.emulator import lifeline
from coordinator.emulator.layout import Layout
from coordinator.emulator.worker import AgentSpec, write_spec
from coordinator.task import broker as local_broker
from edge_sdk.node.bundle import BROKER_FILE, GENESIS_FILE

if TYPE_CHECKING:  # only --ray imports ray
    from coordinator.emulator.ray_workers import RayWorkers

STOP_GRACE_S = 30  # a worker closes every agent's store and connection (~20 ms each)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path


def miner_args(layout: Layout, i: int) -> list[str]:
    m = layout.miner(i)
    return ["-m", "coordinator.cli", "miner", "run", "--identity", str(m / "identity"),
            "--genesis", str(m / GENESIS_FILE), "--broker-config", str(m / BROKER_FILE),
            "--db", str(layout.miner_db(i))]  # fmt: skip


def agent_spec(layout: Layout, i: int, miner_index: int, verify: str, attack: str | None = None) -> AgentSpec:
    """Device i as a worker runs it: the same files `blockfl-device run` would take."""
    d = layout.device(i)
    return AgentSpec(f"d{i}", str(d / "bundle"), str(d / "identity"), str(d / "data.npz"),
                     str(layout.device_state(i)), miner_index, verify, attack)  # fmt: skip


def worker_args(layout: Layout, k: int, agents: list[AgentSpec]) -> list[str]:
    spec = write_spec(layout.out / "workers" / f"w{k}.json", agents)
    return ["-m", "coordinator.emulator.worker", "--spec", str(spec), "--backend", "portable"]


@dataclass
class Federation:
    """The running processes (and the broker, when the emulator started one; the device actors,
    when they run on a Ray cluster)."""

    layout: Layout
    processes: list[Process] = field(default_factory=list)
    broker: subprocess.Popen | None = None
    ray: RayWorkers | None = None

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Process:
        """`env`: more environment variables for this process (benchmarks/chaos.py's fault injection)."""
        log = self.layout.logs / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as handle:  # the child keeps its own copy of the descriptor
            popen = subprocess.Popen(
                [sys.executable, *args],
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **lifeline.child_env(), **(env or {})},
            )
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def start_workers(self, agents: list[AgentSpec], count: Callable[[int | None], int], ray: str | None) -> str:
        """Deal the agents round robin to count() worker processes (one per core by default) or, given a
        Ray address, to count(the cluster's CPUs) Ray actors: says how many and where."""
        if ray:
            from coordinator.emulator.ray_workers import RayWorkers

            self.ray = RayWorkers.start(ray, agents, count, self.layout.logs)
            return f"{len(self.ray.actors)} Ray actors on {self.ray.nodes()} nodes"
        n = count(None)
        for k in range(n):
            self.spawn(f"worker{k}", worker_args(self.layout, k, agents[k::n]))
        return f"{n} worker processes"

    def peak_memory_mb(self) -> dict[str, float]:
        """Each live process's peak resident memory (VmHWM; Linux), and the broker's, in MB."""
        pids = {p.name: p.popen.pid for p in self.processes if p.popen.poll() is None}
        if self.broker is not None:
            pids["broker"] = self.broker.pid
        peaks = {}
        for name, pid in pids.items():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            line = next((x for x in status.splitlines() if x.startswith("VmHWM:")), None)
            if line:
                peaks[name] = round(int(line.split()[1]) / 1024, 1)
        if self.ray is not None:
            peaks.update(self.ray.peak_memory_mb())
        return peaks

    def signal_miners(self, signum: int) -> None:
        for p in self.processes:
            if p.name.startswith("miner") and p.popen.poll() is None:
                p.popen.send_signal(signum)

    def dead(self) -> list[str]:
        exited = [p.name for p in self.processes if p.popen.poll() is not None]
        return exited + (self.ray.dead() if self.ray is not None else [])

    def workers(self) -> dict[str, dict]:
        """Where each device worker runs: its process id, and with Ray its node."""
        if self.ray is not None:
            return self.ray.where
        host = socket.gethostname()
        return {p.name: {"host": host, "pid": p.popen.pid} for p in self.processes if p.name.startswith("worker")}

    def stop(self) -> None:
        """SIGTERM everyone, SIGKILL whoever is still there after the grace period, then the broker.
        Ray actors stop first: their agents close stores and connections as a worker's do."""
        if self.ray is not None:
            self.ray.stop()
        for p in self.processes:
            if p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in self.processes:
            try:
                p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.popen.pid, signal.SIGKILL)
                p.popen.wait()
        if self.broker is not None:
            local_broker.stop(self.broker)
