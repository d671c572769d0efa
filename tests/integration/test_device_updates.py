"""What a device process publishes, read off the wire by a client holding the miner's credentials
(no miner runs): under a dp task the update is clipped to the task's norm and carries noise of the
task's sigma; a device killed with an update it could not send yet sends that update after a restart."""

import time

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from testbed import Client, Testbed

from edge_sdk.chain.memory import MemoryChain
from edge_sdk.clock import now_ms
from edge_sdk.node.bundle import Bundle
from edge_sdk.node.device import Device
from edge_sdk.protocol import envelope
from edge_sdk.protocol.block import Update
from edge_sdk.protocol.fixedpoint import to_float

pytestmark = pytest.mark.timeout(120)
CLIP = 0.01  # far below the norm of two epochs' delta (about 1 here): clipping scales it down a lot
NOISE = 0.5  # sigma = NOISE * CLIP per value


class MinerTap:
    """A client with the miner's credentials: receives the updates sealed to it and, on `online`, the
    retained presence a device waits for before it sends."""

    def __init__(self, bed: Testbed):
        self.bed, self.miner = bed, bed.task.miners[0]
        self.updates = bed.topics.update(self.miner.node_id, "+")
        self.client = Client(bed.port, *bed.credentials("m0"))
        self.client.subscribe(self.updates)

    def is_update(self, topic: str, _payload: bytes = b"") -> bool:
        return mqtt.topic_matches_sub(self.updates, topic)

    def online(self) -> None:
        assert self.client.publish(self.bed.topics.presence(self.miner.node_id), b"online", retain=True) in (0, 0x10)

    def nothing_yet(self) -> bool:
        """No update so far: decided by a marker the tap sends itself, which arrives after anything
        the broker routed to it before."""
        marker = self.bed.topics.reply(self.miner.node_id)
        self.client.subscribe(marker)
        assert self.client.publish(marker, b"marker") == 0
        assert self.client.wait_for(lambda topic, _: topic == marker, 10)
        return not any(self.is_update(topic) for topic, _ in self.client.messages)

    def update(self, timeout: float = 60) -> Update:
        """The first update that arrives, unsealed and parsed as a miner would."""
        deadline = time.monotonic() + timeout
        while not self.client.wait_for(self.is_update, 0.2):
            assert time.monotonic() < deadline, "no update arrived"
            for name, p in self.bed.processes.items():
                assert p.poll() is None, f"{name} exited: {(self.bed.root / f'{name}.log').read_text()[-2000:]}"
        sealed = next(payload for topic, payload in self.client.messages if self.is_update(topic))
        raw = envelope.unseal(self.bed.miner_ids[0].box_key, sealed)
        return Update.parse(raw, self.bed.task)

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def bed(tmp_path):
    bed = Testbed(tmp_path, miners=1, devices=1, privacy="dp", dp_clip=CLIP, dp_noise=NOISE)
    yield bed
    for name in list(bed.processes):
        bed.kill(name)  # SIGKILL: an idle device would take seconds to notice a SIGTERM
    bed.close()


def unprotected_delta(bed: Testbed, tmp_path) -> np.ndarray:
    """The delta d0's local training gives on genesis, before clipping and noise: the same device's
    own training step (seeded by device and height), run here in-process with its bundle and data."""
    d0 = bed.root / "d0"
    data = np.load(d0 / "data.npz")
    device = Device(
        bundle=Bundle(d0 / "bundle"),
        identity=bed.device_ids[0],
        data=(data["x"], data["y"]),
        state_dir=tmp_path / "reference",
        backend="portable",
    )
    params = to_float(bed.task.initial_model, bed.task.chain.frac_bits)
    delta, _ = device.local_update(params, 0)
    device.store.close()
    return np.concatenate([delta[k].reshape(-1) for k in sorted(delta)]).astype(np.float64)


def test_a_dp_device_publishes_its_update_clipped_to_the_task_norm_with_the_task_noise(bed, tmp_path):
    tap = MinerTap(bed)
    tap.online()
    bed.start_device(0)
    update = tap.update()
    tap.close()
    bed.kill("d0")
    assert update.base == MemoryChain(bed.genesis).tip.hash
    published = np.concatenate([update.delta[k].reshape(-1) for k in sorted(update.delta)]).astype(np.float64)
    raw = unprotected_delta(bed, tmp_path)
    norm, sigma, n = float(np.linalg.norm(raw)), NOISE * CLIP, raw.size
    assert norm > 20 * CLIP, f"the test needs a delta far above the clip norm: {norm}"
    # published = raw * CLIP / norm + N(0, sigma^2) per value: split it along raw and across it
    direction = raw / norm
    along = float(published @ direction)  # CLIP + N(0, sigma^2); unclipped it would be `norm`
    residual = published - along * direction  # the noise, less its one component along `direction`
    assert abs(along - CLIP) < 6 * sigma, f"not clipped to {CLIP}: {along:.4f} along the update"
    spread = float(np.sqrt(residual @ residual / (n - 1)))  # estimates sigma within ~2% at n ~ 2400
    assert 0.8 * sigma < spread < 1.2 * sigma, f"noise of sigma {spread:.5f}, expected {sigma:.5f}"


def test_a_device_killed_with_an_unsent_update_sends_it_after_a_restart(bed):
    tap = MinerTap(bed)  # subscribed, but the miner is not online: the device keeps its update
    bed.start_device(0)
    bed.wait(lambda: "train_seconds" in bed.device_status(0).get("counters", {}), 60, "d0 to train")
    killed_ms = now_ms()
    bed.kill("d0")
    assert tap.nothing_yet()  # the miner was never online: the device kept its update
    bed.start_device(0)
    tap.online()
    update = tap.update(timeout=30)
    tap.close()
    # the update made before the kill (a device never signs a second update on one base)
    assert update.timestamp_ms < killed_ms
    assert update.device == bed.device_ids[0].public.sign_pk
    assert update.base == MemoryChain(bed.genesis).tip.hash
