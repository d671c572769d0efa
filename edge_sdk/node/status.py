"""A node's status file and timeline, a device's model-hash and delivery logs: written by the nodes,
read by operators, tests and the emulator. This module is the only one that knows their paths and fields.

status (JSON, replaced atomically):
    {"node", "role", "tip_height", "tip", "counters": {name: number},
     "rejections": {reason: count of messages this node refused}, "details": {...}, "written_ms"}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge_sdk.clock import now_ms
from edge_sdk.files import recover_lines, write_atomic

DEVICE_STATUS_FILE = "status.json"
MODEL_HASHES_FILE = "model_hashes.jsonl"
DELIVERED_FILE = "delivered.jsonl"


def device_status_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / DEVICE_STATUS_FILE


def miner_status_path(db_path: str | Path) -> Path:
    """A miner's status lives beside its chain database."""
    return Path(str(db_path) + ".status.json")


def timeline_path(status_path: str | Path) -> Path:
    """A node's timeline lives beside its status file: status.json -> timeline.jsonl (a device),
    chain.db.status.json -> chain.db.timeline.jsonl (a miner)."""
    path = Path(status_path)
    prefix = path.name.removesuffix("status.json") if path.name.endswith("status.json") else path.name + "."
    return path.with_name(prefix + "timeline.jsonl")


@dataclass
class Status:
    node: str
    role: str
    tip_height: int
    tip: str
    counters: dict = field(default_factory=dict)
    rejections: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    written_ms: int = 0

    def write(self, path: str | Path) -> None:
        write_atomic(path, json.dumps(asdict(self)), durable=False)

    @classmethod
    def parse(cls, data: bytes) -> Status:
        """ValueError if `data` is not a status file (empty, torn, or another file)."""
        try:
            fields = json.loads(data)
            return cls(**fields)
        except TypeError as exc:  # not an object, or other keys
            raise ValueError(f"not a status: {exc}") from None

    @classmethod
    def read(cls, path: str | Path) -> Status | None:
        """The last status written, or None if there is none yet (or it cannot be read)."""
        try:
            return cls.parse(Path(path).read_bytes())
        except (OSError, ValueError):
            return None


class JsonLines:
    """An append-only log, one JSON object a line: cheap to write from a node's loop, and a line torn
    by a kill costs only that line (it is skipped on reading)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def recover(self) -> None:
        """For its writer, at start: a last line torn by a kill is set aside (files.recover_lines)."""
        recover_lines(self.path)

    def add(self, entry: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def entries(self) -> list[dict]:
        if not self.path.exists():
            return []
        entries = []
        for line in self.path.read_bytes().decode("utf-8", "replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):  # a line torn or damaged into another JSON value is skipped too
                entries.append(entry)
        return entries


class ModelHashLog(JsonLines):
    """One line per accepted block: the model hash this device computed for it (cross-device checks)."""

    def __init__(self, state_dir: str | Path):
        super().__init__(Path(state_dir) / MODEL_HASHES_FILE)

    def append(self, height: int, block_hash: bytes, model_hash: bytes) -> None:
        self.add({"height": height, "block": block_hash.hex(), "model_hash": model_hash.hex()})

    def read(self) -> dict[str, str]:
        """Block hash (hex) -> model hash (hex)."""
        return {entry["block"]: entry["model_hash"] for entry in self.entries()}


class DeliveryLog(JsonLines):
    """Audit trail: one line per update the broker acknowledged (digest, base, ms); benchmarks/chaos.py reads it."""

    def __init__(self, state_dir: str | Path):
        super().__init__(Path(state_dir) / DELIVERED_FILE)

    def append(self, digest: bytes, base: bytes, ms: int) -> None:
        self.add({"digest": digest.hex(), "base": base.hex(), "ms": ms})

    def read(self) -> list[dict]:
        """Every entry; a line torn by a kill is skipped."""
        return self.entries()


class Timeline(JsonLines):
    """When this node did what for each block and update (wall-clock ms, byte counters at block
    boundaries): the emulator's round anatomy (coordinator/emulator/anatomy.py) reads it. A few
    short lines per round, appended like the model-hash log."""

    def mark(self, event: str, **fields) -> None:
        """One line: the event, now, and the fields (bytes as hex)."""
        values = {k: v.hex() if isinstance(v, bytes) else v for k, v in fields.items()}
        self.add({"event": event, "ms": now_ms(), **values})
