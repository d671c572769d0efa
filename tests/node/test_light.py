"""Light verification driven by hand: a real Device (real keys, SQLite, ONNX package) with
verify = "light", fed light blocks and alerts that a real miner identity signs; blocks are mined
for real (low difficulty). The device's MQTT client is never connected."""

import dataclasses

import numpy as np
import pytest

from coordinator.miner.assembly import build_block, search_nonce
from coordinator.task.setup import enroll_device, init_task
from edge_sdk.chain.block_model import apply_updates
from edge_sdk.chain.memory import MemoryChain
from edge_sdk.chain.rules import expected_target
from edge_sdk.clock import now_ms
from edge_sdk.node.bundle import Bundle
from edge_sdk.node.device import Device
from edge_sdk.node.status import ModelHashLog
from edge_sdk.protocol.block import Update, block_template, make_update, seal_block
from edge_sdk.protocol.extras import Extras
from edge_sdk.protocol.fixedpoint import model_hash
from edge_sdk.protocol.identity import Identity
from edge_sdk.protocol.light import make_alert, make_light, max_light_bytes
from edge_sdk.protocol.task import TrainingParams
from edge_sdk.transport.mqtt import Incoming


@dataclasses.dataclass
class Setup:
    miner: Identity
    devices: list  # (identity, cert bytes)
    honest: MemoryChain  # what a full node sees
    light: Device
    full: Device

    @property
    def task(self):
        return self.honest.task

    def updates(self, base: bytes, count: int, scale: float = 0.01) -> list[bytes]:
        out = []
        for i, (identity, cert) in enumerate(self.devices[:count]):
            rng = np.random.default_rng(i)
            delta = {n: (rng.standard_normal(s) * scale).astype(np.float32) for n, s in self.task.shapes.items()}
            out.append(make_update(identity, self.task, cert, base, 40, delta, now_ms()))
        return out

    def block(self, parent=None, updates=()) -> bytes:
        parent = parent or self.honest.tip
        return build_block(
            identity=self.miner, task=self.task, chain=self.honest, parent=parent, updates=list(updates),
            now_ms=max(now_ms(), parent.header.timestamp_ms),
        )  # fmt: skip

    def forged(self, updates, model) -> bytes:
        """A block with a valid header (proof-of-work and all) whose model is not its updates' aggregate."""
        parent = self.honest.tip
        header = block_template(
            parent=parent.header, task=self.task, miner=self.miner.public.sign_pk, update_bytes=list(updates),
            extras=Extras(), commitment=model_hash(model, self.task.chain.frac_bits),
            timestamp_ms=max(now_ms(), parent.header.timestamp_ms),
            target=expected_target(self.task, parent.header, self.honest),
        )  # fmt: skip
        return seal_block(self.miner, search_nonce(header), list(updates), Extras())

    def light_of(self, raw: bytes, model=None, changed=True) -> bytes:
        state = self.honest.get(self._hash(raw))
        header = state.header if state else _header(raw)
        return make_light(
            self.miner, self.task, header, model=model if model is not None else state.model,
            changed=changed, revocations=None,
        )  # fmt: skip

    @staticmethod
    def _hash(raw: bytes) -> bytes:
        return _header(raw).hash


def _header(raw: bytes):
    from edge_sdk.protocol.block import Block

    return Block.parse(raw, len(raw)).header


def _model_of(task, parent_model, updates):
    return apply_updates(task, parent_model, [Update.parse(u, task) for u in updates])[1]


@pytest.fixture
def setup(tmp_path, digits):
    miner = Identity.from_seed(b"light-miner")
    init_task(tmp_path / "task", miners=[miner.public], training=TrainingParams(1, 16, 0.1), initial_hashes=2_000)
    x, _, y, _ = digits
    devices, nodes = [], {}
    for i in range(4):
        identity = Identity.from_seed(b"light-device-%d" % i)
        out = tmp_path / f"d{i}"
        enroll_device(tmp_path / "task", identity.public, broker_url="mqtt://127.0.0.1:1", out=out, quota=1000)
        devices.append((identity, Bundle(out).cert_raw))
    for verify, i in (("light", 0), ("full", 1)):
        identity = devices[i][0]
        nodes[verify] = Device(
            bundle=Bundle(tmp_path / f"d{i}"), identity=identity, data=(x[:40], y[:40]),
            state_dir=tmp_path / f"state-{verify}", verify=verify,
        )  # fmt: skip
    honest = MemoryChain((tmp_path / "task" / "genesis.block").read_bytes())
    yield Setup(miner, devices, honest, nodes["light"], nodes["full"])
    for node in nodes.values():
        node.store.close()


def deliver(node, topic, payload):
    node.dispatch(Incoming(topic, payload))


def test_a_light_device_follows_light_blocks_of_a_size_independent_of_the_updates(setup):
    s, t = setup, setup.light.topics
    raw = s.block(updates=s.updates(s.honest.tip.hash, 4))
    state = s.honest.add(raw)
    light = s.light_of(raw)
    deliver(s.light, t.light("m"), light)
    tip = s.light.store.tip
    assert tip.hash == state.hash and tip.base == state.hash
    assert model_hash(tip.model, s.task.chain.frac_bits) == state.header.model_hash
    assert ModelHashLog(s.light.state).read()[state.hash.hex()] == state.header.model_hash.hex()
    assert s.light.counters["light_blocks"] == 1 and not s.light.rejections
    # a block with one update and one with four make light blocks of the same size; the block grows
    one = s.block(updates=s.updates(state.hash, 1))
    s.honest.add(one)
    assert len(s.light_of(one)) == len(light) < max_light_bytes(s.task)
    assert len(one) < len(raw)


def test_a_light_block_whose_model_is_not_its_header_commitment_is_refused(setup):
    s, t = setup, setup.light.topics
    raw = s.block(updates=s.updates(s.honest.tip.hash, 2))
    state = s.honest.add(raw)
    tampered = {k: v.copy() for k, v in state.model.items()}
    next(iter(tampered.values())).flat[0] += 1
    deliver(s.light, t.light("m"), s.light_of(raw, model=tampered))
    assert s.light.rejections == {"bad_model_hash": 1}
    assert s.light.store.tip.header.height == 0


def test_a_light_block_from_a_node_outside_the_miner_set_is_refused(setup):
    s, t = setup, setup.light.topics
    raw = s.block()
    state = s.honest.add(raw)
    outsider = make_light(s.devices[2][0], s.task, state.header, model=state.model, changed=False, revocations=None)
    deliver(s.light, t.light("m"), outsider)
    assert s.light.rejections == {"bad_miner": 1} and s.light.store.tip.header.height == 0


def test_an_alert_makes_the_light_device_drop_an_invalid_block_and_what_was_built_on_it(setup):
    s, t = setup, setup.light.topics
    updates = s.updates(s.honest.tip.hash, 3)
    honest_model = _model_of(s.task, s.honest.tip.model, updates)
    inflated = {k: v * 4 for k, v in honest_model.items()}  # the miner lies about the aggregate
    bad = s.forged(updates, inflated)
    deliver(s.light, t.light("m"), s.light_of(bad, model=inflated))
    assert s.light.store.tip.hash == _header(bad).hash  # the header and its commitment are all it can check
    # a child on the bad block, also followed
    child = make_light(
        s.miner, s.task, _child_header(s, bad, inflated), model=inflated, changed=False, revocations=None
    )
    deliver(s.light, t.light("m"), child)
    assert s.light.store.tip.header.height == 2

    # the full device refuses the block and alerts (it is never connected: the alert is counted)
    deliver(s.full, s.full.topics.block("m"), bad)
    assert s.full.rejections == {"bad_model_hash": 1} and s.full.counters["alerts_sent"] == 1
    alert = make_alert(s.devices[1][0], s.task, bad, s.devices[1][1])
    deliver(s.light, t.alert("d1"), alert)
    assert s.light.counters["alerts_confirmed"] == 1
    assert s.light.store.tip.header.height == 0 and s.light.store.count() == 1
    deliver(s.light, t.light("m"), s.light_of(bad, model=inflated))  # never again
    assert s.light.rejections.get("known_invalid") == 1 and s.light.store.tip.header.height == 0


def _child_header(s, parent_raw, model):
    """A mined header on a block the honest chain does not have (computed against the light store)."""
    parent = s.light.store.get(_header(parent_raw).hash)
    header = block_template(
        parent=parent.header, task=s.task, miner=s.miner.public.sign_pk, update_bytes=[], extras=Extras(),
        commitment=model_hash(model, s.task.chain.frac_bits), timestamp_ms=max(now_ms(), parent.header.timestamp_ms),
        target=expected_target(s.task, parent.header, s.light.store),
    )  # fmt: skip
    return search_nonce(header)


def test_a_false_alert_mutes_its_sender_and_changes_nothing(setup):
    s, t = setup, setup.light.topics
    raw = s.block(updates=s.updates(s.honest.tip.hash, 2))
    s.honest.add(raw)
    deliver(s.light, t.light("m"), s.light_of(raw))
    liar = s.devices[2]
    deliver(s.light, t.alert("d2"), make_alert(liar[0], s.task, raw, liar[1]))
    assert s.light.counters["alerts_false"] == 1 and s.light.store.tip.hash == _header(raw).hash
    deliver(s.light, t.alert("d2"), make_alert(liar[0], s.task, raw, liar[1]))
    assert s.light.counters["alerts_ignored"] == 1


def test_an_alert_without_a_certificate_from_a_device_is_refused(setup):
    s, t = setup, setup.light.topics
    raw = s.block()
    deliver(s.light, t.alert("d2"), make_alert(s.devices[2][0], s.task, raw, None))
    assert s.light.rejections == {"bad_cert": 1}


def test_a_full_node_does_not_alert_on_a_block_a_light_device_refuses_by_its_header(setup):
    s = setup
    parent = s.honest.tip
    header = block_template(
        parent=parent.header, task=s.task, miner=s.miner.public.sign_pk, update_bytes=[], extras=Extras(),
        commitment=parent.header.model_hash, timestamp_ms=max(now_ms(), parent.header.timestamp_ms),
        target=expected_target(s.task, parent.header, s.honest),
    )  # fmt: skip
    unmined = seal_block(s.miner, header.with_nonce(_failing_nonce(header)), [], Extras())
    deliver(s.full, s.full.topics.block("m"), unmined)
    assert s.full.rejections == {"insufficient_work": 1} and s.full.counters["alerts_sent"] == 0


def _failing_nonce(header) -> int:
    from edge_sdk.protocol.work import meets_target

    return next(n for n in range(1000) if not meets_target(header.with_nonce(n).hash, header.target))
