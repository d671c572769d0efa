"""Creating a task and enrolling nodes: what `blockfl coordinator init / enroll / revoke` do.

A task directory holds:
    coordinator/      the coordinator's identity (private keys 0600)
    model/            the model package (see docs/training.md)
    genesis.block     the genesis block, which carries the task manifest
    registry.json     enrolled nodes and their broker password hashes (0600)
    broker/           passwd and acl rendered for Mosquitto
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from phe import paillier

from edge_sdk import envelope
from edge_sdk.block import make_genesis
from edge_sdk.cert import issue_certificate
from edge_sdk.chain import now_ms
from edge_sdk.keys import Identity, PublicIdentity
from edge_sdk.params import to_fixed
from edge_sdk.paillier import Packing
from edge_sdk.privacy import seal_private_key
from edge_sdk.task import PRIVACY_MODES, ChainParams, MinerInfo, Privacy, RewardRules, RoundRules, Task, TrainingParams
from edge_sdk.validation import validate_genesis
from edge_sdk.work import target_for_hashes

from .compiler import Optimizer
from .model_package import build_package
from .model_zoo import build_forward
from .registry import Registry, write_private

PACKAGE_FILES = ("forward.onnx", "train_step.onnx", "train_epoch.onnx", "params.npz", "manifest.json")


def init_task(task_dir: str | Path, *, miners: list[PublicIdentity], name: str = "task", model: str = "mlp:64-32-10",
              loss: str = "cross-entropy", optimizer: str = "sgd", seed: int = 0, training: TrainingParams = TrainingParams(),
              rounds: RoundRules = RoundRules(), rewards: RewardRules = RewardRules(), target_interval_ms: int = 10_000,
              initial_hashes: int = 20_000, retarget_window: int = 4, privacy: str = "plain", dp_clip: float = 1.0,
              dp_noise: float = 0.0, paillier_bits: int = 2048, paillier_precision: int = 16, paillier_clip_exp: int = 0,
              max_quota: int = 4096) -> Task:
    task_dir = Path(task_dir)
    if (task_dir / "genesis.block").exists():
        raise FileExistsError(f"{task_dir} already holds a task")
    if not miners:
        raise ValueError("a task needs at least one miner")
    if privacy not in PRIVACY_MODES:
        raise ValueError(f"privacy {privacy!r}: expected one of {', '.join(PRIVACY_MODES)}")
    task_dir.mkdir(parents=True, exist_ok=True)
    coordinator = Identity.generate()
    coordinator.save(task_dir / "coordinator")
    forward, params = build_forward(model, seed=seed)
    build_package(task_dir / "model", forward, params, loss=loss, optimizer=Optimizer.parse(optimizer), model_name=model)
    files = {f: hashlib.sha256((task_dir / "model" / f).read_bytes()).digest() for f in PACKAGE_FILES}
    packing = None
    if privacy in ("paillier", "paillier+dp"):
        public, private = paillier.generate_paillier_keypair(n_length=paillier_bits)
        packing = Packing(public.n, paillier_precision, paillier_clip_exp, max_quota, max_updates=64)
        packing.check()
        key = {"p": str(private.p), "q": str(private.q)}
        write_private(task_dir / "coordinator" / "paillier.key", json.dumps(key))
    chain = ChainParams(initial_target=target_for_hashes(initial_hashes), pow_limit=target_for_hashes(max(1, initial_hashes // 64)),
                        target_interval_ms=target_interval_ms, retarget_window=retarget_window,
                        max_updates=packing.max_updates if packing else ChainParams.max_updates)
    task = Task(name, coordinator.public.sign_pk, chain, to_fixed(params, chain.frac_bits), now_ms(),
                miners=tuple(MinerInfo(m.sign_pk, m.box_pk) for m in miners), training=training, rounds=rounds, rewards=rewards,
                model_files=files, privacy=Privacy(privacy, dp_clip, dp_noise, packing))
    (task_dir / "genesis.block").write_bytes(make_genesis(coordinator, task))
    registry = Registry(task_dir, task.id)
    _, password = registry.add("coordinator", coordinator.public.sign_pk)
    write_private(task_dir / "coordinator" / "broker-password", password + "\n")
    registry.save()
    registry.render(task_dir / "broker")
    return task


def coordinator_credentials(task_dir: str | Path) -> tuple[str, str]:
    """The coordinator's broker username and password (it publishes genesis and revocations)."""
    task_dir = Path(task_dir)
    identity = Identity.load(task_dir / "coordinator")
    return identity.public.node_id, (task_dir / "coordinator" / "broker-password").read_text().strip()


def load_task(task_dir: str | Path) -> tuple[Task, Identity, bytes]:
    task_dir = Path(task_dir)
    genesis = (task_dir / "genesis.block").read_bytes()
    _, task = validate_genesis(genesis)
    return task, Identity.load(task_dir / "coordinator"), genesis


def broker_config(url: str, username: str, password: str, ca_file: str | None = None) -> dict:
    config = {"url": url, "username": username, "password": password}
    if ca_file:
        config["ca_file"] = ca_file
    return config


def enroll_miner(task_dir: str | Path, miner: PublicIdentity, *, broker_url: str, out: str | Path) -> Path:
    """Broker credentials for a miner of the task's miner set; writes OUT/broker.json and OUT/genesis.block."""
    task, _, genesis = load_task(task_dir)
    if task.miner(miner.sign_pk) is None:
        raise ValueError("this miner is not in the task's miner set (it is fixed at genesis)")
    registry = Registry(task_dir, task.id)
    username, password = registry.add("miner", miner.sign_pk)
    registry.save()
    registry.render(Path(task_dir) / "broker")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "genesis.block").write_bytes(genesis)
    write_private(out / "broker.json", json.dumps(broker_config(broker_url, username, password), indent=2))
    return out


def enroll_device(task_dir: str | Path, device: PublicIdentity, *, broker_url: str, out: str | Path, quota: int = 100_000,
                  days: float = 365, name: str = "") -> Path:
    """A device bundle: genesis.block, cert.bin, model/, broker.json (0600)."""
    task, coordinator, genesis = load_task(task_dir)
    if task.privacy.encrypted and quota > task.privacy.packing.max_quota:
        raise ValueError(f"quota {quota} exceeds the task's Paillier max_quota {task.privacy.packing.max_quota} (its sums could overflow)")
    registry = Registry(task_dir, task.id)
    username, password = registry.add("device", device.sign_pk, name=name, quota=quota)
    cert = issue_certificate(coordinator, task, device, quota=quota, expires_ms=now_ms() + int(days * 86_400_000), name=name)
    registry.save()
    registry.render(Path(task_dir) / "broker")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "genesis.block").write_bytes(genesis)
    (out / "cert.bin").write_bytes(cert)
    shutil.copytree(Path(task_dir) / "model", out / "model", dirs_exist_ok=True)
    write_private(out / "broker.json", json.dumps(broker_config(broker_url, username, password), indent=2))
    if task.privacy.encrypted:  # the private key, sealed so only this device can read it
        (out / "paillier.key.sealed").write_bytes(seal_private_key(paillier_private_key(task_dir, task), device.box_pk))
    return out


def paillier_private_key(task_dir: str | Path, task: Task):
    """The task's Paillier private key (kept by the coordinator to enrol devices; never given to miners)."""
    key = json.loads((Path(task_dir) / "coordinator" / "paillier.key").read_text())
    return paillier.PaillierPrivateKey(paillier.PaillierPublicKey(task.privacy.packing.n), int(key["p"]), int(key["q"]))


def add_observer(task_dir: str | Path) -> tuple[str, str]:
    """Read-only broker credentials (the emulator's progress display, monitoring)."""
    task, _, _ = load_task(task_dir)
    registry = Registry(task_dir, task.id)
    username, password = registry.add("observer", b"\0" * 32)
    registry.save()
    registry.render(Path(task_dir) / "broker")
    return username, password


def revoke_device(task_dir: str | Path, device_id: str) -> bytes:
    """Drop the device's broker access and sign the new revocation list (publish it retained)."""
    task, coordinator, _ = load_task(task_dir)
    registry = Registry(task_dir, task.id)
    registry.revoke(device_id)
    registry.save()
    registry.render(Path(task_dir) / "broker")
    notice = envelope.sign(coordinator, "revocations", {"task": task.id, "devices": registry.revoked_keys(), "ts": now_ms()})
    (Path(task_dir) / "revocations.bin").write_bytes(notice)
    return notice


def publish_retained(task_dir: str | Path, broker_url: str, ca_file: str | None = None, timeout: float = 10.0) -> list[str]:
    """Publish the genesis block and (if any) the revocation list, retained, as the coordinator."""
    import paho.mqtt.client as mqtt
    from urllib.parse import urlparse

    from edge_sdk.topics import Topics

    task, _, genesis = load_task(task_dir)
    topics = Topics(task.id)
    messages = [(topics.genesis, genesis)]
    revocations = Path(task_dir) / "revocations.bin"
    if revocations.exists():
        messages.append((topics.revocations, revocations.read_bytes()))
    username, password = coordinator_credentials(task_dir)
    url = urlparse(broker_url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"coordinator-{username}", protocol=mqtt.MQTTv5)
    client.username_pw_set(username, password)
    if url.scheme == "mqtts":
        client.tls_set(ca_certs=ca_file)
    client.connect(url.hostname or "127.0.0.1", url.port or (8883 if url.scheme == "mqtts" else 1883))
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1, retain=True).wait_for_publish(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return [t for t, _ in messages]
