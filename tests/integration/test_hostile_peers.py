"""Hostile peers against a real federation: Mosquitto, honest miner and device processes, and an
attacker that is test code holding a real key of the task (a miner of the miner set whose process
is not started, or an enrolled device), connected with that node's own broker credentials and
publishing crafted but validly signed messages on that node's own topics."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time

import numpy as np
import pytest
from testbed import Testbed

from coordinator.miner.assembly import build_block, search_nonce
from edge_sdk.chain import robust
from edge_sdk.chain.memory import MemoryChain
from edge_sdk.chain.store import ChainStore, StoredChain
from edge_sdk.chain.view import BlockState
from edge_sdk.clock import now_ms
from edge_sdk.protocol import envelope, sync
from edge_sdk.protocol.aggregation_rule import AggregationRule
from edge_sdk.protocol.block import Block, Update, make_update
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.fixedpoint import model_hash
from edge_sdk.protocol.identity import node_id
from edge_sdk.protocol.revocations import NO_REVOCATIONS
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


def settle_on(bed: Testbed, follower: Follower, nodes: list[str], timeout: float = 60) -> BlockState:
    """Wait until every named node's tip is the follower's (which saw every block), twice 1 s apart."""

    def agreed() -> bool:
        tip = follower.follow().hash.hex()
        return all(status(bed, n).get("tip") == tip for n in nodes)

    for _ in range(2):
        bed.wait(agreed, timeout, f"{nodes} to agree on the tip {follower.chain.tip.hash.hex()[:16]}")
        time.sleep(1)
    bed.wait(agreed, timeout, f"{nodes} to agree on the tip {follower.chain.tip.hash.hex()[:16]}")
    return follower.chain.tip


def recorded_hashes(bed: Testbed, device: int) -> dict[str, str]:
    lines = (bed.root / f"d{device}" / "state" / "model_hashes.jsonl").read_text().splitlines()
    return {json.loads(line)["block"]: json.loads(line)["model_hash"] for line in lines}


# --- tests ---


def test_empty_blocks_from_a_miner_neither_censor_rounds_nor_earn_mining_rewards(bed_factory):
    """m1 (the attacker) answers every honest block at once with an empty block on it, and adds a
    second one a moment later, while the devices train. Before: an update had to name the parent
    block, so each empty block made every pooled and in-training update stale (the devices
    retrained, the round restarted), and every block, empty or not, paid its miner the mining
    reward. Now updates name the last model-changing block, so the honest miner mines them on top
    of the empty blocks, and an empty block pays nothing."""
    bed = bed_factory(miners=2, devices=3, min_updates=3, max_wait_ms=60_000)
    attacker = Attacker(bed, 1)
    honest = bed.task.miners[0].sign_pk
    bed.start_miner(0)
    for i in range(3):
        bed.start_device(i, miner_index=0)

    def honest_rounds_after_empties() -> int:
        """Honest blocks with updates whose parent is one of the attacker's empty blocks."""
        return sum(
            1
            for s in attacker.best()
            if s.header.miner == honest and s.header.prev_hash in attacker.published and s.base == s.hash
        )

    deadline = time.monotonic() + 200
    last_empty, streak = 0.0, 0
    while time.monotonic() < deadline and honest_rounds_after_empties() < 3 and len(attacker.published) < 24:
        tip = attacker.follow()
        ours = tip.header.miner == attacker.identity.public.sign_pk
        if not ours:
            streak = 0
        if not ours or (streak < 2 and time.monotonic() - last_empty > 1.0):
            raw = attacker.mine(tip)
            attacker.chain.add(raw)
            attacker.publish(raw)
            last_empty, streak = time.monotonic(), streak + 1
        for name, p in bed.processes.items():
            assert p.poll() is None, f"{name} exited"
        time.sleep(0.05)
    assert honest_rounds_after_empties() >= 3, (
        f"the honest miner mined {honest_rounds_after_empties()} blocks with updates on the attacker's "
        f"{len(attacker.published)} empty blocks"
    )
    settle(bed, ["m0", "d0", "d1", "d2"])
    bed.close()
    db = bed.root / "m0" / "chain.db"
    chain = best_blocks(db)
    empties = [b for b in chain if b.header.miner == attacker.identity.public.sign_pk]
    assert len(empties) >= 3 and all(not b.update_bytes for b in empties)
    full = [b for b in chain if b.header.miner == honest and len(b.update_bytes) >= bed.task.rounds.min_updates]
    assert len(full) >= 3
    ledger = balances(db)
    assert ledger.get(attacker.node, 0) == 0, f"empty blocks paid {ledger.get(attacker.node)}"
    assert ledger[bed.task.miners[0].node_id] == bed.task.rewards.mining * len(full)
    assert_verifies(db)


def test_a_cheap_private_fork_deeper_than_max_reorg_depth_is_refused(bed_factory):
    """With max_reorg_depth=2, once the honest chain has 4+ blocks the attacker publishes a private
    fork from height 1: empty blocks mined back to back (the retarget makes them harder, so the fork
    carries more cumulative work at this low difficulty). Before: fork choice was cumulative work
    alone, so the honest miner and every device switched to the attacker's history (and lost the
    rounds it abandoned). Now each refuses it and counts `reorgs_refused`."""
    # rounds close on max_wait_ms (min_updates above the devices): a slow honest chain the fork outweighs to the end
    bed = bed_factory(miners=2, devices=2, min_updates=3, max_wait_ms=2500, max_reorg_depth=2)
    attacker = Attacker(bed, 1)
    bed.start_miner(0)
    for i in range(2):
        bed.start_device(i, miner_index=0)
    honest_tip = attacker.wait_for(lambda t: t.header.height >= 4, 120, "four honest blocks")
    fork_base = attacker.best()[0]  # the honest block at height 1
    fork, parent = [], fork_base
    for _ in range(40):
        raw = attacker.mine(parent)
        parent = attacker.chain.add(raw)
        fork.append(raw)
        if len(fork) >= honest_tip.header.height + 2 and parent.cumwork > 2 * honest_tip.cumwork:
            break
    assert parent.cumwork > 2 * honest_tip.cumwork, "the fork should outweigh the honest chain"
    assert attacker.chain.tip.hash == parent.hash  # by work alone, the fork is the best chain
    for raw in fork:
        attacker.publish(raw)
    fork_hashes = {h.hex() for h in attacker.published}
    nodes = ["m0", "d0", "d1"]
    refused = lambda n: status(bed, n).get("counters", {}).get("reorgs_refused", 0) >= 1  # noqa: E731
    bed.wait(lambda: all(refused(n) for n in nodes), 60, "every honest node to refuse the deep reorganisation")
    start = status(bed, "m0")["tip_height"]
    bed.wait(lambda: status(bed, "m0")["tip_height"] >= start + 1, 60, "the honest chain to go on")
    tip = settle(bed, nodes)
    assert tip not in fork_hashes
    honest_chain = {b.hash.hex() for b in best_blocks(bed.root / "m0" / "chain.db")}
    assert honest_tip.hash.hex() in honest_chain and not honest_chain & fork_hashes
    bed.close()
    for db in databases(bed, nodes):
        assert_verifies(db)


def forged_snapshot(bed: Testbed, attacker: Attacker, blocks: int) -> tuple[sync.Snapshot, int]:
    """Headers of `blocks` empty attacker blocks from genesis (valid headers: link, retarget, PoW,
    miner set, time), the last one re-mined to commit to an all-zero model; and their work."""
    scratch = MemoryChain(bed.genesis)
    parent = scratch.tip
    for _ in range(blocks):
        parent = scratch.add(attacker.mine(parent, chain=scratch))
    headers = scratch.branch(parent.hash)[1:]
    zero = {k: np.zeros_like(v) for k, v in bed.task.initial_model.items()}
    last = dataclasses.replace(headers[-1], model_hash=model_hash(zero, bed.task.chain.frac_bits), nonce=0)
    headers[-1] = search_nonce(last)
    return sync.Snapshot([h.encode() for h in headers], zero, headers[-1].hash, None), parent.cumwork


def test_a_late_joiner_never_adopts_one_miners_forged_snapshot(bed_factory, tmp_path):
    """Three miners, two honest processes and the attacker; snapshot_quorum=2. A device that joins
    late asks every miner for a snapshot; the attacker answers each request with forged headers
    (more work than the honest chain) and an all-zero model that the forged tip commits to.
    Before: a joiner adopted any snapshot whose headers checked out, and fork choice then kept the
    one with the most work: the forged history and its zero model. Now it adopts only a snapshot
    that two miners agree on, so it ends on the honest chain."""
    bed = bed_factory(miners=3, devices=2, min_updates=1, max_wait_ms=2500, snapshot_quorum=2)
    attacker = Attacker(bed, 2)
    attacker.client.subscribe(bed.topics.sync(attacker.node))
    for i in range(2):
        bed.start_miner(i)
    bed.start_device(0, miner_index=0)
    bed.wait(lambda: min(status(bed, m).get("tip_height", 0) for m in ("m0", "m1")) >= 3, 120, "three blocks")
    honest_height = max(status(bed, m)["tip_height"] for m in ("m0", "m1"))
    snapshot, forged_work = forged_snapshot(bed, attacker, honest_height + 10)
    forged_tip = snapshot.tip.hex()
    # on its own, the forged snapshot passes every check a store makes, and outweighs the honest chain
    probe = ChainStore(tmp_path / "probe.db", bed.genesis)
    assert probe.add_checkpoint(snapshot).hash == snapshot.tip
    probe.close()
    with StoredChain(bed.root / "m0" / "chain.db") as stored:
        honest_work = max(int.from_bytes(row.cumwork, "big") for row in stored.blocks())
    assert forged_work > honest_work
    late = bed.device_ids[1].public.node_id
    answered = 0
    bed.start_device(1, miner_index=0)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for _, payload in attacker.take("sync"):
            try:
                request = sync.parse_request(payload, bed.task)
            except ProtocolError:
                continue
            if node_id(request.requester) == late and answered < 50:
                response = sync.make_response(attacker.identity, bed.task, [], snapshot)
                assert attacker.client.publish(bed.topics.reply(late), response) == 0
                answered += 1
        joined = status(bed, "d1")
        if answered and joined.get("counters", {}).get("updates_sent", 0) >= 1 and joined.get("tip_height", 0) > 0:
            break
        for name, p in bed.processes.items():
            assert p.poll() is None, f"{name} exited"
        time.sleep(0.05)
    assert answered >= 1, "the late joiner never asked the attacker for a snapshot"
    assert status(bed, "d1").get("tip_height", 0) > 0, "the late joiner never joined"
    tip = settle(bed, ["m0", "m1", "d0", "d1"])  # one moment at which every honest node had this tip
    assert tip != forged_tip
    bed.close()
    honest = {}  # every block an honest miner stored: hash -> the model hash its header commits to
    for m in ("m0", "m1"):
        with StoredChain(bed.root / m / "chain.db") as stored:
            for row in stored.blocks():
                honest[row.hash.hex()] = (
                    Block.parse(row.raw, len(row.raw)).header.model_hash.hex() if row.height else ""
                )
    joined = ChainStore(bed.root / "d1" / "state" / "chain.db")
    assert not joined.has(snapshot.tip), "the forged tip was stored"
    below = joined.db.one("SELECT count(*) FROM blocks WHERE height > 0 AND length(raw) = 0")[0]
    assert below >= 1, "the late joiner did not start from a snapshot"
    assert joined.tip.hash.hex() in honest  # blocks may have followed `tip` before the processes stopped
    joined.close()
    seen = recorded_hashes(bed, 1)  # every block (and the snapshot's checkpoint) the joiner accepted
    assert tip in seen and forged_tip not in seen
    for block, mhash in seen.items():
        assert honest[block] == mhash


def test_a_colluding_miners_block_with_a_revoked_device_is_refused_and_costs_its_deposit(bed_factory):
    """d3 is revoked before the miners start, so the first honest block carries the revocation
    list; then the attacker (m2, in the miner set) publishes a block on that tip that includes an
    update signed by d3. Before: revocation was only the miners' admission policy, so such a block
    was valid everywhere, and nothing penalised its miner. Now every honest node refuses it
    (`revoked`), the honest miners put `invalid-block` evidence against m2 into the next block, and
    every ledger takes m2's deposit. d2 is test code that paces the rounds (min_updates=3), so the
    attacker's block reaches the miners before they mine on the same tip."""
    from coordinator.task.setup import coordinator_broker, revoke_device

    bed = bed_factory(miners=3, devices=4, min_updates=3, max_wait_ms=60_000)
    notice = revoke_device(bed.root / "task", bed.device_ids[3].public.node_id)
    config = coordinator_broker(bed.root / "task", bed.url)
    coordinator = bed.client(config.username, config.password)
    coordinator.c.publish(bed.topics.revocations, notice, qos=1, retain=True).wait_for_publish(5)
    attacker = Attacker(bed, 2)
    for i in range(2):
        bed.start_miner(i)
    for i in range(2):
        bed.start_device(i, miner_index=0)
    send_update(bed, 2, 0, signed_update(bed, 2, attacker.chain.tip.hash))
    carrying = attacker.wait_for(
        lambda t: t.header.height >= 1 and t.revocations.ts >= 0, 120, "a block that carries the revocation list"
    )
    honest_nodes = ["m0", "m1", "d0", "d1"]
    carrying = settle_on(bed, attacker, honest_nodes)  # both miners may have mined height 1
    assert carrying.revocations.ts >= 0
    raw_carrying = Block.parse(attacker.chain.raw[carrying.hash], bed.task.chain.max_block_bytes)
    assert raw_carrying.extras.revocations is not None
    # the attacker's block: valid in every way but the revocation (its template ignores the list)
    revoked_update = Update.parse(signed_update(bed, 3, carrying.base), bed.task)
    blind = dataclasses.replace(carrying, revocations=NO_REVOCATIONS)
    bad = attacker.mine(blind, [revoked_update])
    with pytest.raises(ProtocolError) as info:
        attacker.chain.add(bad)
    assert info.value.reason is Reason.REVOKED
    attacker.publish(bad)
    revoked = lambda n: status(bed, n).get("rejections", {}).get("revoked", 0) >= 1  # noqa: E731
    bed.wait(lambda: all(revoked(n) for n in honest_nodes), 60, "every honest node to refuse the block")
    found = lambda m: status(bed, m).get("counters", {}).get("evidence_found", 0) >= 1  # noqa: E731
    bed.wait(lambda: all(found(m) for m in ("m0", "m1")), 30, "both honest miners to keep evidence")
    send_update(bed, 2, 0, signed_update(bed, 2, carrying.base))  # the round on that tip may close now

    def convicting(tip):
        return any(
            item.kind == "invalid-block"
            for s in attacker.best()
            for item in Block.parse(attacker.chain.raw[s.hash], bed.task.chain.max_block_bytes).extras.evidence
        )

    attacker.wait_for(convicting, 120, "an honest block with invalid-block evidence")
    settle(bed, honest_nodes)
    bed.close()
    deposit = bed.task.rewards.deposit
    for db in databases(bed, honest_nodes):
        chain = best_blocks(db)
        carriers = [b for b in chain if any(e.kind == "invalid-block" for e in b.extras.evidence)]
        assert len(carriers) == 1 and carriers[0].header.prev_hash == carrying.hash, db
        assert carriers[0].header.miner != attacker.identity.public.sign_pk
        assert all(b.header.miner != attacker.identity.public.sign_pk for b in chain)
        assert balances(db).get(attacker.node) == -deposit, db
        assert_verifies(db)


def test_a_device_that_signs_two_updates_for_one_round_loses_its_deposit_once(bed_factory):
    """d2 (test code with d2's key and credentials) signs two different updates on the same base:
    the first goes to m0 (which forwards it to m1), the second to both miners.
    Before: the second was merely refused as a duplicate and nothing penalised the device. Now the
    pair is `double-update` evidence, a block carries it, and every ledger takes d2's deposit
    exactly once (d2 still earns the data reward of the one update that was aggregated)."""
    bed = bed_factory(miners=2, devices=3, min_updates=3, max_wait_ms=60_000)
    for i in range(2):
        bed.start_miner(i)
    # m1 must be subscribed before m0 forwards (online is published after the SUBSCRIBE): under load
    # m1 once connected after m0 had forwarded, and the broker had no one to give it to. Before the
    # Follower: both use the observer's login, and the broker keeps one connection per login.
    bed.wait_online([m.node_id for m in bed.task.miners])
    watcher = Follower(bed, *bed.observer)
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
