"""Attacks on the device outbox and its state-file recovery, found by a hostile review of the
durable-delivery change: each failed before its fix. They assert what PROTOCOL.md §7.2/§13 and
docs/delivery.md promise (one update per base, an update kept until a miner pooled it), driven by
hand like tests/node/test_runtime.py: real keys, SQLite, ONNX Runtime and a real Miner that turns a
second update on one base into evidence."""

import hashlib
import tracemalloc

import pytest

from coordinator.miner.assembly import build_block
from coordinator.miner.node import Miner
from coordinator.task.setup import enroll_device, init_task
from edge_sdk.chain.memory import MemoryChain
from edge_sdk.clock import now_ms
from edge_sdk.files import recover_lines
from edge_sdk.node.bundle import Bundle
from edge_sdk.node.device import Device
from edge_sdk.node.runtime import _Done
from edge_sdk.protocol import envelope, sync
from edge_sdk.protocol.block import Update
from edge_sdk.protocol.errors import Reason
from edge_sdk.protocol.identity import Identity
from edge_sdk.protocol.task import TrainingParams
from edge_sdk.transport.mqtt import Acked, BrokerConfig, Incoming

NOWHERE = BrokerConfig("mqtt://127.0.0.1:1")


class World:
    """A one-miner task whose miner key the test holds (to sign blocks and rejections), one device."""

    def __init__(self, tmp_path, digits, miners=1):
        self.root = tmp_path
        self.miner_ids = [Identity.from_seed(b"review17-miner-%d" % i) for i in range(miners)]
        init_task(
            tmp_path / "task",
            miners=[m.public for m in self.miner_ids],
            training=TrainingParams(1, 16, 0.1),
            initial_hashes=2_000,
        )
        self.device_id = Identity.from_seed(b"review17-device")
        enroll_device(
            tmp_path / "task", self.device_id.public, broker_url=NOWHERE.url, out=tmp_path / "bundle", quota=1000
        )
        self.bundle = Bundle(tmp_path / "bundle")
        self.task, self.genesis = self.bundle.task, self.bundle.genesis
        self.chain = MemoryChain(self.genesis)
        x, _, y, _ = digits
        self.data = (x[:40], y[:40])
        self.devices = []

    def device(self) -> Device:
        d = Device(bundle=self.bundle, identity=self.device_id, data=self.data, state_dir=self.root / "state")
        self.devices.append(d)
        return d

    def block(self, parent, updates=()):
        raw = build_block(
            identity=self.miner_ids[0],
            task=self.task,
            chain=self.chain,
            parent=parent,
            updates=list(updates),
            now_ms=now_ms(),
        )
        self.last = self.chain.add(raw)
        return raw

    def close(self):
        for d in self.devices:
            d.store.close()


@pytest.fixture
def world(tmp_path, digits):
    w = World(tmp_path, digits)
    yield w
    w.close()


def train(device: Device) -> bytes | None:
    """One pass of the loop after an event; if that started a training, finish it. The held update."""
    device.after_event()
    if device.training:
        item = device.inbox.get(timeout=120)
        assert isinstance(item, _Done)
        device.dispatch(item)
    return device.outbox.update


def deliver_block(device: Device, raw: bytes) -> None:
    device.dispatch(Incoming(device.topics.block("someone"), raw))


def convicting_miner(world, tmp_path, blocks, first: bytes, second: bytes) -> Miner:
    """A real miner on `blocks` that receives both updates from the device, as §13.3 admission does."""
    miner = Miner(identity=world.miner_ids[0], genesis=world.genesis, db_path=tmp_path / "m.db", broker=NOWHERE)
    for raw in blocks:
        miner.dispatch(Incoming(miner.topics.block("someone"), raw))
    topic = miner.topics.update(miner.me, world.device_id.public.node_id)
    for u in (first, second):
        miner.dispatch(Incoming(topic, envelope.seal(world.miner_ids[0].public.box_pk, u)))
    return miner


def test_a_reorganisation_back_to_an_earlier_round_base_does_not_make_the_device_sign_it_again(world, tmp_path):
    """Was: Blocks that change no model (empty, or every update excluded) keep the round base
    (chain/rules.py: `header.hash if changed else parent.base`). The device remembers only the LAST
    base it signed for (outbox.signed_for / trained_for), so a reorganisation from a block that moved
    the base back to a branch of such blocks makes it train and sign a second update on the earlier
    base: `double-update` evidence (§7.2), the honest device loses its deposit. A miner able to mine
    two empty blocks (valid blocks) can do this to every device at once."""
    device = world.device()
    g = world.chain.tip
    first = train(device)
    assert Update.parse(first, world.task).base == g.base
    x = world.block(g, [first])  # the round closes with it: base moves to X
    deliver_block(device, x)
    assert device.store.tip.base == world.chain.tip.hash
    train(device)  # drops the stale one (its round closed) and signs for X
    assert device.outbox.base == world.chain.tip.hash
    e1 = world.block(g)  # a competing branch of empty blocks on G: more work, round base G again
    e2 = world.block(world.last)
    deliver_block(device, e1)
    deliver_block(device, e2)
    assert device.store.tip.base == g.base  # the reorganisation happened
    second = train(device)
    # the promise (PROTOCOL.md §7.2, outbox.py): never a second update on one base
    assert second is None or Update.parse(second, world.task).base != g.base
    if second is not None:
        miner = convicting_miner(world, tmp_path, [e1, e2], first, second)
        try:
            assert world.device_id.public.sign_pk not in miner.evidence
        finally:
            miner.store.close()


def test_a_power_cut_between_outbox_and_signed_for_with_the_timeline_line_lost_does_not_sign_twice(world, tmp_path):
    """Was: Outbox.hold writes outbox.bin, then signed_for.bin (both fsynced); the timeline's
    `trained` line, which recovery relies on, is appended without fsync. A power cut between the two
    writes leaves the new outbox, the previous signed_for, and possibly no (or a torn) `trained` line.
    Outbox.__init__ then takes the timeline's previous training as signed for, not the held update's
    base, and the device signs a second update on the base of the update it still holds and sends."""
    device = world.device()
    g = world.chain.tip
    first = train(device)
    x = world.block(g, [first])
    deliver_block(device, x)
    held = train(device)
    x_state = world.chain.tip
    assert device.outbox.base == x_state.hash
    device.store.close()
    world.devices.remove(device)
    state = tmp_path / "state"
    (state / "signed_for.bin").write_bytes(g.base)  # what it held before hold() wrote the new one
    timeline = state / "timeline.jsonl"
    lines = timeline.read_text().splitlines(keepends=True)
    last_trained = max(i for i, line in enumerate(lines) if '"event": "trained"' in line)
    timeline.write_text("".join(lines[:last_trained]) + lines[last_trained][:25])  # that line torn by the cut
    again = world.device()
    assert again.outbox.update == held  # the held update survives and will be sent
    second = train(again)
    miner = convicting_miner(world, tmp_path, [x], held, second)
    try:
        twice = second != held
        convicted = world.device_id.public.sign_pk in miner.evidence
        assert not twice and not convicted, f"second update on the held one's base: {twice}; evidence: {convicted}"
    finally:
        miner.store.close()


@pytest.mark.parametrize("garbage", [b"\xff\xfe not utf-8\n", b"[1, 2]\n"], ids=["non-utf8", "non-object"])
def test_a_damaged_signed_for_with_an_odd_timeline_line_starts_and_sits_out_the_round(world, tmp_path, garbage):
    """Was: With signed_for.bin damaged, Outbox.__init__ sets it aside BEFORE reading the
    timeline; Timeline.entries() raises on a non-UTF-8 byte (UnicodeDecodeError: exit 2) or a JSON
    line that is not an object (AttributeError: exit 1, systemd restarts it). The next start finds no
    signed_for.bin (only signed_for.bin.damaged), takes itself for a new device that never signed,
    and signs a second update on the base it already signed for."""
    device = world.device()
    first = train(device)
    base = device.outbox.base
    notice = sync.make_rejection(world.miner_ids[0], world.task, hashlib.sha256(first).digest(), Reason.REPLAY, base)
    device.dispatch(Incoming(device.topics.reply(device.me), notice))  # pooled: outcome, outbox dropped
    assert device.outbox.update is None and device.outbox.signed_for == base
    device.store.close()
    world.devices.remove(device)
    state = tmp_path / "state"
    (state / "signed_for.bin").write_bytes(b"")  # damaged
    with open(state / "timeline.jsonl", "ab") as f:
        f.write(garbage)
    first_start = "started"
    try:
        world.device()
    except Exception as exc:  # what systemd sees: exit 2 (ValueError), or exit 1 and a restart
        first_start = type(exc).__name__
    again = world.devices[-1] if first_start == "started" else world.device()
    forgot = again.outbox.signed_for is None
    second = train(again)
    miner = convicting_miner(world, tmp_path, [], first, second) if second else None
    convicted = miner is not None and world.device_id.public.sign_pk in miner.evidence
    if miner:
        miner.store.close()
    assert first_start == "started" and second is None, (
        f"first start: {first_start}; second start forgot it signed: {forgot}, signed again on the same "
        f"base: {second is not None}, evidence against it: {convicted}"
    )


def test_a_refusal_from_a_miner_that_is_behind_keeps_the_valid_update(world, tmp_path):
    """Was: Any rejection naming the digest ends delivery, whatever its reason. `stale_base`
    from a miner whose tip is an ANCESTOR of the device's (a miner restarted and not yet caught up:
    its persistent session hands it queued updates before its sync reply arrives) is transient, yet
    the device drops the update, and since signed_for holds that base it sits the round out, while
    a miner that has caught up would pool it. The audit counts it `refused`, so chaos.py never calls
    it silent or lost."""
    device = world.device()
    g = world.chain.tip
    x = world.block(g)  # an empty block: base stays G, so the device's update on G stays valid
    deliver_block(device, x)
    update = train(device)
    device.dispatch(Acked(device.outbox.in_flight or 0, 0))
    behind = g.hash  # the miner's tip: the device's tip's parent
    notice = sync.make_rejection(
        world.miner_ids[0], world.task, hashlib.sha256(update).digest(), Reason.STALE_BASE, behind
    )
    device.dispatch(Incoming(device.topics.reply(device.me), notice))
    retrained = train(device)
    caught_up = Miner(identity=world.miner_ids[0], genesis=world.genesis, db_path=tmp_path / "m.db", broker=NOWHERE)
    try:
        caught_up.dispatch(Incoming(caught_up.topics.block("someone"), x))
        topic = caught_up.topics.update(caught_up.me, world.device_id.public.node_id)
        caught_up.dispatch(Incoming(topic, envelope.seal(world.miner_ids[0].public.box_pk, update)))
        assert caught_up.counters["updates_accepted"] == 1  # it was valid all along
    finally:
        caught_up.store.close()
    kept = device.outbox.update == update
    assert kept or retrained is not None, "a valid update dropped on a transient refusal, and the round sat out"


def test_recovering_a_journal_reads_only_its_tail(tmp_path):
    """Was: recover_lines (run on timeline.jsonl, model_hashes.jsonl and delivered.jsonl at every
    start) reads the whole file to look at its last byte. These logs are never trimmed (a few lines per
    round), so after months a Pi with little RAM pays the whole file's size in memory at each start."""
    path = tmp_path / "timeline.jsonl"
    line = b'{"event": "block", "ms": 1763000000000, "block": "' + b"ab" * 32 + b'"}\n'
    with open(path, "wb") as f:
        for _ in range(16):
            f.write(line * (1_000_000 // len(line)))  # ~16 MB
    size = path.stat().st_size
    tracemalloc.start()
    try:
        recover_lines(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < size // 16, f"{peak / 1e6:.1f} MB peak to recover a {size / 1e6:.1f} MB journal"


def test_a_flapping_miner_costs_one_copy_of_the_update_not_one_per_flap(tmp_path, digits):
    """Was: Every presence change of the preferred miner is a change
    of miner and `send_now`, which forgets the copy still in flight: one 7-byte retained presence
    message (a miner may publish its own presence at will, or a miner whose connection flaps) costs
    every device that prefers it one full update, with no limit on the rate. An honest second miner's
    `replay` ends it, but only one round trip later; with Paillier updates this is ~100 KB a flap."""
    w = World(tmp_path, digits, miners=2)
    try:
        device = w.device()
        a, b = (m.public.node_id for m in w.miner_ids)
        presence = device.topics.presence
        device.dispatch(Incoming(presence(b), b"online"))
        device.dispatch(Incoming(presence(a), b"online"))
        update = train(device)
        sent, out = device.counters["updates_sent"], device.counters["bytes_out"]
        for _ in range(25):  # 50 presence messages, no acknowledgement or outcome in between
            device.dispatch(Incoming(presence(a), b"offline"))
            device.dispatch(Incoming(presence(a), b"online"))
        copies = device.counters["updates_sent"] - sent
        assert copies <= 2, (
            f"{copies} full copies ({(device.counters['bytes_out'] - out) // 1000} KB of a "
            f"{len(update)}-byte update) for 50 presence messages"
        )
    finally:
        w.close()
