"""MQTT topic names of one task. Every topic of a task lives under `blockfl/<task id, 16 hex>/`.

Subscriptions and the broker's ACL are derived from these same methods: pass `ANY` ("+") for a
node id to get the wildcard form.
"""

from __future__ import annotations

from dataclasses import dataclass

ANY = "+"
ROOT = "blockfl"


@dataclass(frozen=True)
class Topics:
    task_id: bytes

    @property
    def prefix(self) -> str:
        return f"{ROOT}/{self.task_id.hex()[:16]}"

    @property
    def everything(self) -> str:
        """Every topic of the task (for read-only observers)."""
        return f"{self.prefix}/#"

    def update(self, miner: str, device: str) -> str:
        """Sealed update from a device to one miner."""
        return f"{self.prefix}/update/{miner}/{device}"

    def gossip(self, to_miner: str, from_miner: str) -> str:
        """A validated update forwarded from one miner to another, sealed to the receiver."""
        return f"{self.prefix}/gossip/{to_miner}/{from_miner}"

    def block(self, miner: str) -> str:
        return f"{self.prefix}/block/{miner}"

    def light(self, miner: str) -> str:
        """A miner's light blocks: header plus the model (or aggregate) it commits to, for light devices."""
        return f"{self.prefix}/light/{miner}"

    def alert(self, node: str) -> str:
        """A full node's signed alert carrying a block with a valid header that breaks a block rule."""
        return f"{self.prefix}/alert/{node}"

    def head(self, miner: str) -> str:
        """Retained: the header of a miner's best block."""
        return f"{self.prefix}/head/{miner}"

    def partial(self, miner: str) -> str:
        """Retained: a miner's signed partial decryption of its latest block's aggregate (Paillier)."""
        return f"{self.prefix}/partial/{miner}"

    def sync(self, miner: str) -> str:
        """Sync requests to one miner (MQTT 5 request/response)."""
        return f"{self.prefix}/sync/{miner}"

    def reply(self, node: str) -> str:
        """Sync responses and rejection notices for one node."""
        return f"{self.prefix}/reply/{node}"

    def presence(self, node: str) -> str:
        """Retained 'online' / 'offline' (the last will)."""
        return f"{self.prefix}/presence/{node}"

    @property
    def genesis(self) -> str:
        """Retained: the genesis block, which carries the task manifest."""
        return f"{self.prefix}/genesis"

    @property
    def revocations(self) -> str:
        """Retained: the coordinator's signed list of revoked devices."""
        return f"{self.prefix}/revocations"

    def kind(self, topic: str) -> str | None:
        """The kind of a topic of this task ('block', 'update', ...), None for any other topic."""
        if not topic.startswith(self.prefix + "/"):
            return None
        return topic[len(self.prefix) + 1 :].split("/", 1)[0]


def sender(topic: str) -> str:
    """The last level of a topic: the publishing node (block/, light/, alert/, head/, partial/, presence/,
    update/, gossip/)."""
    return topic.rsplit("/", 1)[-1]
