"""The emulator's processes: every miner and device is its own OS process, started and stopped here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.emulator.layout import Layout
from coordinator.task import broker as local_broker
from edge_sdk.node.bundle import BROKER_FILE, GENESIS_FILE

STOP_GRACE_S = 5


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


def device_args(layout: Layout, i: int, miner_index: int, attack: str | None = None) -> list[str]:
    """`blockfl-device run`, or the emulator's attacker process when `attack` names a kind."""
    d = layout.device(i)
    entry = ["coordinator.emulator.attacker", "--kind", attack] if attack else ["edge_sdk.cli", "run"]
    return ["-m", *entry, "--bundle", str(d / "bundle"), "--identity", str(d / "identity"),
            "--data", str(d / "data.npz"), "--state", str(layout.device_state(i)), "--miner-index", str(miner_index),
            "--backend", "portable"]  # fmt: skip


@dataclass
class Federation:
    """The running processes (and the broker, when the emulator started one)."""

    layout: Layout
    processes: list[Process] = field(default_factory=list)
    broker: subprocess.Popen | None = None

    def spawn(self, name: str, args: list[str]) -> Process:
        log = self.layout.logs / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as handle:  # the child keeps its own copy of the descriptor
            popen = subprocess.Popen(
                [sys.executable, *args], stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def dead(self) -> list[str]:
        return [p.name for p in self.processes if p.popen.poll() is not None]

    def stop(self) -> None:
        """SIGTERM everyone, SIGKILL whoever is still there after the grace period, then the broker."""
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
