"""Where an emulation keeps its files: one directory per node under --out, plus the task and broker."""

from __future__ import annotations

from pathlib import Path

from coordinator.task.setup import TaskDir
from edge_sdk.node.status import Status, device_status_path, miner_status_path


class Layout:
    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.task = TaskDir(self.out / "task")
        self.broker = self.out / "broker"
        self.logs = self.out / "logs"

    def miner(self, i: int) -> Path:
        return self.out / "miners" / f"m{i}"

    def miner_db(self, i: int) -> Path:
        return self.miner(i) / "chain.db"

    def device(self, i: int) -> Path:
        return self.out / "devices" / f"d{i}"

    def device_state(self, i: int) -> Path:
        return self.device(i) / "state"

    def miner_status(self, i: int) -> Status | None:
        return Status.read(miner_status_path(self.miner_db(i)))

    def device_status(self, i: int) -> Status | None:
        return Status.read(device_status_path(self.device_state(i)))
