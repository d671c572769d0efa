"""Hostile peers against a real federation: Mosquitto, honest miner and device processes, and an
attacker that is test code holding a real key of the task (a miner of the miner set whose process
is not started, or an enrolled device), connected with that node's own broker credentials and
publishing crafted but validly signed messages on that node's own topics."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from testbed import Testbed

from coordinator.miner.assembly import build_block
from edge_sdk.chain import robust
from edge_sdk.chain.memory import MemoryChain
from edge_sdk.chain.store import StoredChain
from edge_sdk.chain.view import BlockState
from edge_sdk.clock import now_ms
from edge_sdk.protocol import envelope
from edge_sdk.protocol.aggregation_rule import AggregationRule
from edge_sdk.protocol.block import Block, Update, make_update
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.fixedpoint import model_hash
from edge_sdk.transport.topics import ANY

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def bed_factory(tmp_path):
    beds = []

    def make(**kw):
        bed = Testbed(tmp_path / f"bed{len(beds)}", **kw)
        beds.append(bed)
        return bed

    yield make
    for bed in beds:
        bed.close()


# --- helpers ---


class Follower:
    """An MQTT client (any node's credentials) that feeds every block it hears into an in-test
    MemoryChain, so the test can build blocks on the honest chain. Invalid blocks are kept aside."""

    def __init__(self, bed: Testbed, username: str, password: str):
        self.bed = bed
        self.client = bed.client(username, password)
        self.chain = MemoryChain(bed.genesis)
        self.invalid: list[tuple[bytes, Reason]] = []
        self._read = 0
        self._orphans: list[bytes] = []
        self.client.subscribe(bed.topics.block(ANY))

    def take(self, kind: str) -> list[tuple[str, bytes]]:
        """New messages of one topic kind since the last call (blocks are consumed by `follow`)."""
        with self.client.lock:
            new = self.client.messages[self._read :]
            self._read = len(self.client.messages)
        blocks = [p for t, p in new if self.bed.topics.kind(t) == "block"]
        self._add(blocks)
        return [(t, p) for t, p in new if self.bed.topics.kind(t) == kind]

    def follow(self) -> BlockState:
        self.take("block")
        return self.chain.tip

    def _add(self, blocks: list[bytes]) -> None:
        pending = self._orphans + blocks
        for _ in range(len(pending) + 1):  # a block may arrive before its parent (two publishers)
            waiting = []
            for raw in pending:
                try:
                    self.chain.add(raw)
                except ProtocolError as exc:
                    if exc.reason is Reason.UNKNOWN_PARENT:
                        waiting.append(raw)
                    else:
                        self.invalid.append((raw, exc.reason))
            if len(waiting) == len(pending):
                break
            pending = waiting
        self._orphans = pending[-64:]

    def best(self) -> list[BlockState]:
        """States from height 1 to the tip of the best chain."""
        states, state = [], self.chain.tip
        while state.header.height > 0:
            states.append(state)
            state = self.chain.get(state.header.prev_hash)
        return states[::-1]

    def wait_for(self, predicate, timeout: float, what: str) -> BlockState:
        """Follow blocks until predicate(tip) holds (the bed also checks its processes are alive)."""
        self.bed.wait(lambda: predicate(self.follow()), timeout, what)
        return self.chain.tip


class Attacker(Follower):
    """A miner of the task's miner set whose process is not running: the test signs as it."""

    def __init__(self, bed: Testbed, miner: int):
        super().__init__(bed, *bed.credentials(f"m{miner}"))
        self.identity = bed.miner_ids[miner]
        self.node = self.identity.public.node_id
        self.published: list[bytes] = []  # hashes of blocks it published

    def mine(self, parent: BlockState, updates=(), *, chain=None, ts: int | None = None, **kw) -> bytes:
        return build_block(
            identity=self.identity,
            task=self.bed.task,
            chain=chain or self.chain,
            parent=parent,
            updates=list(updates),
            now_ms=now_ms() if ts is None else ts,
            **kw,
        )

    def publish(self, raw: bytes) -> None:
        assert self.client.publish(self.bed.topics.block(self.node), raw) == 0
        self.published.append(Block.parse(raw, len(raw)).hash)


def send_update(bed: Testbed, device: int, miner: int, raw: bytes, timeout: float = 20) -> None:
    """Publish a device's update to a miner with that device's credentials, until the broker
    accepts it with a subscriber present (PUBACK 0, not 0x10 'no matching subscribers')."""
    client = bed.client(*bed.credentials(f"d{device}"))
    miner_info = bed.task.miners[miner]
    topic = bed.topics.update(miner_info.node_id, bed.device_ids[device].public.node_id)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if client.publish(topic, envelope.seal(miner_info.box_pk, raw)) == 0:
                return
            time.sleep(0.3)
        raise AssertionError(f"miner m{miner} never subscribed to d{device}'s update topic")
    finally:
        client.close()


def signed_update(bed: Testbed, device: int, base: bytes, *, samples: int = 60, value: float = 0.01) -> bytes:
    cert = (bed.root / f"d{device}" / "bundle" / "cert.bin").read_bytes()
    delta = {p: np.full(s, value, np.float32) for p, s in bed.task.shapes.items()}
    return make_update(bed.device_ids[device], bed.task, cert, base, samples, delta, now_ms())


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "coordinator.cli", *args], capture_output=True, text=True, timeout=120)


def balances(db) -> dict[str, int]:
    """`blockfl chain balances DB`, parsed."""
    out = cli("chain", "balances", str(db))
    assert out.returncode == 0, out.stderr[-2000:]
    return {line.split()[0]: int(line.split()[1]) for line in out.stdout.splitlines() if line.strip()}


def assert_verifies(db) -> None:
    out = cli("chain", "verify", str(db))
    assert out.returncode == 0, f"chain verify {db}: {out.stdout[-1000:]}{out.stderr[-1000:]}"


def best_blocks(db) -> list[Block]:
    """The blocks (height 1 up) of a stored chain's best chain, read-only."""
    with StoredChain(db) as stored:
        tip = stored.meta()["tip"]
        rows = {row.hash: row for row in stored.blocks()}
    blocks, at = [], tip
    while rows[at].height > 0:
        block = Block.parse(rows[at].raw, len(rows[at].raw))
        blocks.append(block)
        at = block.header.prev_hash
    return blocks[::-1]


def databases(bed: Testbed, nodes: list[str]) -> list:
    return [bed.root / n / "chain.db" if n.startswith("m") else bed.root / n / "state" / "chain.db" for n in nodes]


def status(bed: Testbed, node: str) -> dict:
    return bed.metrics(int(node[1:])) if node.startswith("m") else bed.device_status(int(node[1:]))


def settle(bed: Testbed, nodes: list[str], timeout: float = 60) -> str:
    """Wait until every named node reports the same tip; returns it."""
    tips = {}

    def same():
        tips.update({n: status(bed, n).get("tip") for n in nodes})
        return len(set(tips.values())) == 1 and None not in tips.values()

    bed.wait(same, timeout, f"{nodes} to agree on one tip, got {tips}")
    return tips[nodes[0]]


def recorded_hashes(bed: Testbed, device: int) -> dict[str, str]:
    lines = (bed.root / f"d{device}" / "state" / "model_hashes.jsonl").read_text().splitlines()
    return {json.loads(line)["block"]: json.loads(line)["model_hash"] for line in lines}


# --- tests ---


def test_a_device_that_signs_two_updates_for_one_round_loses_its_deposit_once(bed_factory):
    """d2 (test code with d2's key and credentials) signs two different updates on the same base:
    the first goes to m0 (which forwards it to m1), the second to both miners.
    Before: the second was merely refused as a duplicate and nothing penalised the device. Now the
    pair is `double-update` evidence, a block carries it, and every ledger takes d2's deposit
    exactly once (d2 still earns the data reward of the one update that was aggregated)."""
    bed = bed_factory(miners=2, devices=3, min_updates=3, max_wait_ms=60_000)
    watcher = Follower(bed, *bed.observer)
    for i in range(2):
        bed.start_miner(i)
    genesis = watcher.chain.tip.hash
    first, second = signed_update(bed, 2, genesis, value=0.01), signed_update(bed, 2, genesis, value=0.02)
    send_update(bed, 2, 0, first)  # m0 admits it and forwards it to m1
    accepted = lambda m: status(bed, m).get("counters", {}).get("updates_accepted", 0) >= 1  # noqa: E731
    bed.wait(lambda: all(accepted(m) for m in ("m0", "m1")), 30, "the first update at both miners")
    for miner in range(2):  # each refuses the second as a duplicate: the pair is evidence
        send_update(bed, 2, miner, second)
    found = lambda m: status(bed, m).get("counters", {}).get("evidence_found", 0) >= 1  # noqa: E731
    bed.wait(lambda: all(found(m) for m in ("m0", "m1")), 30, "both miners to see the double update")
    for i in range(2):
        bed.start_device(i)
    d2 = bed.device_ids[2].public

    def convicted(tip):
        return any(
            item.kind == "double-update"
            for s in watcher.best()
            for item in Block.parse(watcher.chain.raw[s.hash], bed.task.chain.max_block_bytes).extras.evidence
        )

    watcher.wait_for(convicted, 120, "a block with double-update evidence")
    nodes = ["m0", "m1", "d0", "d1"]
    settle(bed, nodes)
    bed.close()
    rewards = bed.task.rewards
    for db in databases(bed, nodes):
        chain = best_blocks(db)
        accusations = [
            e for b in chain for e in b.extras.evidence if e.kind == "double-update"
        ]  # the device is convicted however often it is accused
        assert accusations and all(Update.parse(e.signed[0], bed.task).device == d2.sign_pk for e in accusations)
        earned = 0
        for block in chain:
            updates = [Update.parse(u, bed.task) for u in block.update_bytes]
            claims = [u.samples for u in updates]
            cap = 2 * sorted(claims)[(len(claims) - 1) // 2] if claims else 0
            earned += sum(
                rewards.per_sample * min(u.samples, cap)
                for k, u in enumerate(updates)
                if u.device == d2.sign_pk and k not in block.extras.excluded
            )
        assert earned == 60 * rewards.per_sample  # one of its two updates was aggregated
        assert balances(db)[d2.node_id] == earned - rewards.deposit, db
        assert_verifies(db)


def test_a_device_claiming_its_whole_quota_is_paid_and_weighted_as_twice_the_median(bed_factory):
    """d2 (test code) claims 1000 samples, its whole certificate quota, while d0 and d1 train on
    their 60. Before: the ledger paid per_sample * 1000 and FedAvg weighted the update by 1000 of
    1120 samples. Now both use min(claim, weight_cap * median claim) = 2 * 60 = 120, and the block's
    model hash, which every device computed for itself, is that of the capped average."""
    bed = bed_factory(miners=1, devices=3, min_updates=3, max_wait_ms=60_000)
    watcher = Follower(bed, *bed.observer)
    bed.start_miner(0)
    genesis = watcher.chain.tip
    inflated = signed_update(bed, 2, genesis.hash, samples=1000, value=0.05)
    send_update(bed, 2, 0, inflated)
    bed.wait(lambda: status(bed, "m0").get("counters", {}).get("updates_accepted") == 1, 30, "the inflated update")
    for i in range(2):
        bed.start_device(i)
    watcher.wait_for(lambda t: t.header.height >= 1, 120, "the first round")
    settle(bed, ["m0", "d0", "d1"])
    bed.close()
    db = bed.root / "m0" / "chain.db"
    block = best_blocks(db)[0]
    assert block.hash == watcher.best()[0].hash
    updates = [Update.parse(u, bed.task) for u in block.update_bytes]
    assert sorted(u.samples for u in updates) == [60, 60, 1000] and not block.extras.excluded
    per_sample, cap = bed.task.rewards.per_sample, bed.task.aggregation.weight_cap
    assert cap == 2
    ledger = balances(db)
    assert ledger[bed.device_ids[2].public.node_id] == cap * 60 * per_sample
    for i in range(2):
        assert ledger[bed.device_ids[i].public.node_id] == 60 * per_sample
    # the model: every node validated it (the watcher too); the capped average, not the claimed one
    frac = bed.task.chain.frac_bits
    pairs = [(u.samples, u.delta) for u in updates]
    capped, _ = robust.aggregate(genesis.model, pairs, frac, bed.task.aggregation)
    claimed, _ = robust.aggregate(genesis.model, pairs, frac, AggregationRule(weight_cap=0))
    assert model_hash(capped, frac) == block.header.model_hash == watcher.best()[0].header.model_hash
    assert model_hash(claimed, frac) != block.header.model_hash
    for i in range(2):
        assert recorded_hashes(bed, i)[block.hash.hex()] == block.header.model_hash.hex()
    assert_verifies(db)
