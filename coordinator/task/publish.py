"""`blockfl coordinator publish`: the genesis block and the revocation list, retained, as the coordinator."""

from __future__ import annotations

from pathlib import Path

from coordinator.task.setup import TaskDir, coordinator_broker
from edge_sdk.transport.mqtt import publish_once
from edge_sdk.transport.topics import Topics


def publish_retained(
    task_dir: str | Path, broker_url: str, ca_file: str | None = None, timeout: float = 10.0
) -> list[str]:
    """Publish what a late node needs to find the task; returns the topics written."""
    d = TaskDir(task_dir)
    task, _, genesis = d.load()
    topics = Topics(task.id)
    messages = [(topics.genesis, genesis)]
    if d.revocations.exists():
        messages.append((topics.revocations, d.revocations.read_bytes()))
    broker = coordinator_broker(task_dir, broker_url, ca_file)
    publish_once(broker, f"coordinator-{broker.username}", messages, retain=True, timeout=timeout)
    return [t for t, _ in messages]
