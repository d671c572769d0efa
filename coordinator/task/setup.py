"""Creating a task and enrolling nodes: what `blockfl coordinator init / enroll / revoke` do.

A task directory (`TaskDir` knows its files) holds:
    coordinator/      the coordinator's identity and broker password (private files 0600)
    shares/           Paillier modes: each miner's key share, sealed to that miner (the dealer keeps no key)
    model/            the model package (see docs/training.md)
    genesis.block     the genesis block, which carries the task manifest
    registry.json     enrolled nodes and their broker password hashes (0600)
    broker/           passwd and acl rendered for Mosquitto; regional/ holds a regional broker's (bridge.py)
    revocations.bin   the signed revocation list, once a device is revoked
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from coordinator.models.optimizers import Optimizer
from coordinator.models.package_writer import build_package
from coordinator.models.zoo import build_forward
from coordinator.task.calibrate import initial_difficulty
from coordinator.task.dealer import deal
from coordinator.task.registry import Registry
from edge_sdk.chain.rules import validate_genesis
from edge_sdk.clock import now_ms
from edge_sdk.files import write_atomic, write_private
from edge_sdk.node.bundle import write_bundle
from edge_sdk.privacy.sealed_share import seal_share
from edge_sdk.protocol.aggregation_rule import AggregationRule
from edge_sdk.protocol.block import make_genesis
from edge_sdk.protocol.cert import issue_certificate
from edge_sdk.protocol.decryption import DecryptionRules
from edge_sdk.protocol.fixedpoint import to_fixed
from edge_sdk.protocol.identity import Identity, PublicIdentity
from edge_sdk.protocol.packing import Packing
from edge_sdk.protocol.revocations import make_revocations
from edge_sdk.protocol.task import (
    PRIVACY_MODES,
    ChainParams,
    MinerInfo,
    Privacy,
    RewardRules,
    RoundRules,
    Task,
    TrainingParams,
)
from edge_sdk.training.package import PACKAGE_FILES
from edge_sdk.transport.mqtt import BrokerConfig

DAY_MS = 86_400_000


class TaskDir:
    """The files of a task directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.coordinator = self.path / "coordinator"
        self.model = self.path / "model"
        self.genesis = self.path / "genesis.block"
        self.broker = self.path / "broker"
        self.revocations = self.path / "revocations.bin"
        self.broker_password = self.coordinator / "broker-password"
        self.shares = self.path / "shares"

    def share(self, miner_id: str) -> Path:
        """A miner's key share, sealed to it (Paillier modes)."""
        return self.shares / f"{miner_id}.sealed"

    def load(self) -> tuple[Task, Identity, bytes]:
        """The task, the coordinator's identity and the genesis block."""
        genesis = self.genesis.read_bytes()
        _, task = validate_genesis(genesis)
        return task, Identity.load(self.coordinator), genesis

    def registry(self, task: Task) -> Registry:
        return Registry(self.path, task.id)

    def save_registry(self, registry: Registry) -> None:
        """Keep the registry and re-render the broker's passwd and acl (reload the broker afterwards)."""
        registry.save()
        registry.render(self.broker)


def init_task(
    task_dir: str | Path,
    *,
    miners: list[PublicIdentity],
    name: str = "task",
    model: str = "mlp:64-32-10",
    loss: str = "cross-entropy",
    optimizer: str = "sgd",
    seed: int = 0,
    training: TrainingParams = TrainingParams(),
    rounds: RoundRules = RoundRules(),
    rewards: RewardRules = RewardRules(),
    target_interval_ms: int = 10_000,
    initial_hashes: int | None = None,
    hash_rate: float | None = None,
    retarget_window: int = 4,
    privacy: str = "plain",
    dp_clip: float = 1.0,
    dp_noise: float = 0.0,
    paillier_bits: int = 2048,
    paillier_precision: int = 16,
    paillier_clip_exp: int = 0,
    paillier_threshold: int | None = None,
    min_participants: int = 2,
    max_quota: int = 4096,
    aggregation: AggregationRule = AggregationRule(),
    max_reorg_depth: int = ChainParams.max_reorg_depth,
    snapshot_quorum: int = ChainParams.snapshot_quorum,
    max_updates: int = ChainParams.max_updates,
) -> Task:
    """Create the task. Its initial difficulty is `initial_hashes` expected hashes per block if given,
    else calibrated (coordinator/task/calibrate.py): the miner set at `hash_rate` per miner, or at
    the rate measured on this machine, finds one block per target interval.

    Paillier modes: the coordinator deals the decryption key into one share per miner, any
    `paillier_threshold` of which decrypt (default: a majority), seals each share to its miner
    under shares/, and forgets the primes; `min_participants` is the fewest updates a block may
    aggregate (and, in paillier+dp, the number of noise shares that add up to the full noise)."""
    d = TaskDir(task_dir)
    if d.genesis.exists():
        raise FileExistsError(f"{d.path} already holds a task")
    if not miners:
        raise ValueError("a task needs at least one miner")
    if privacy not in PRIVACY_MODES:
        raise ValueError(f"privacy {privacy!r}: expected one of {', '.join(PRIVACY_MODES)}")
    difficulty = initial_difficulty(
        miners=len(miners), interval_ms=target_interval_ms, initial_hashes=initial_hashes, hash_rate=hash_rate
    )
    d.path.mkdir(parents=True, exist_ok=True)
    coordinator = Identity.generate()
    coordinator.save(d.coordinator)
    forward, params = build_forward(model, seed=seed)
    build_package(d.model, forward, params, loss=loss, optimizer=Optimizer.parse(optimizer), model_name=model)
    files = {f: hashlib.sha256((d.model / f).read_bytes()).digest() for f in PACKAGE_FILES}
    packing = rules = None
    if Privacy(privacy).encrypted and aggregation == AggregationRule():
        aggregation = AggregationRule(weight_cap=0)  # miners cannot see claims to compare them
    if Privacy(privacy).encrypted:
        t = paillier_threshold if paillier_threshold is not None else len(miners) // 2 + 1
        key, shares = deal(paillier_bits, t, len(miners))
        packing = Packing(key.n, paillier_precision, paillier_clip_exp, max_quota, max_updates=64)
        packing.check()
        rules = DecryptionRules(key, min_participants)
        d.shares.mkdir(mode=0o700)
        for miner, share in zip(miners, shares, strict=True):
            write_private(d.share(miner.node_id), seal_share(share, miner.box_pk))
    chain = ChainParams(
        initial_target=difficulty.initial_target,
        pow_limit=difficulty.pow_limit,
        target_interval_ms=target_interval_ms,
        retarget_window=retarget_window,
        max_updates=min(max_updates, packing.max_updates) if packing else max_updates,
        max_reorg_depth=max_reorg_depth,
        snapshot_quorum=snapshot_quorum,
    )
    task = Task(
        name,
        coordinator.public.sign_pk,
        chain,
        to_fixed(params, chain.frac_bits),
        now_ms(),
        miners=tuple(MinerInfo(m.sign_pk, m.box_pk) for m in miners),
        training=training,
        rounds=rounds,
        rewards=rewards,
        model_files=files,
        privacy=Privacy(privacy, dp_clip, dp_noise, packing, rules),
        aggregation=aggregation,
    )
    Task.from_wire(task.to_wire())  # the rules every node will check, checked here first
    write_atomic(d.genesis, make_genesis(coordinator, task))
    registry = d.registry(task)
    _, password = registry.add("coordinator", coordinator.public.sign_pk)
    write_private(d.broker_password, password + "\n")
    d.save_registry(registry)
    return task


def coordinator_broker(task_dir: str | Path, url: str, ca_file: str | None = None) -> BrokerConfig:
    """The coordinator's own broker settings (it publishes genesis and revocations)."""
    d = TaskDir(task_dir)
    username = Identity.load(d.coordinator).public.node_id
    return BrokerConfig(url, username, d.broker_password.read_text().strip(), ca_file)


def enroll_miner(task_dir: str | Path, miner: PublicIdentity, *, broker_url: str, out: str | Path) -> Path:
    """Broker credentials for a miner of the task's miner set: a bundle of genesis and broker settings
    (and, in Paillier modes, its sealed key share)."""
    d = TaskDir(task_dir)
    task, _, genesis = d.load()
    if task.miner(miner.sign_pk) is None:
        raise ValueError("this miner is not in the task's miner set (it is fixed at genesis)")
    registry = d.registry(task)
    username, password = registry.add("miner", miner.sign_pk)
    d.save_registry(registry)
    share = d.share(miner.node_id).read_bytes() if task.privacy.encrypted else None
    return write_bundle(out, genesis=genesis, broker=BrokerConfig(broker_url, username, password), sealed_share=share)


def enroll_device(
    task_dir: str | Path,
    device: PublicIdentity,
    *,
    broker_url: str,
    out: str | Path,
    quota: int = 2000,
    days: float = 365,
    name: str = "",
) -> Path:
    """A device bundle (see edge_sdk/node/bundle.py): genesis, certificate, model, broker settings."""
    return enroll_devices(task_dir, [Enrolment(device, out, quota, name)], broker_url=broker_url, days=days)[0]


@dataclass(frozen=True)
class Enrolment:
    device: PublicIdentity
    out: str | Path  # where its bundle goes
    quota: int = 2000
    name: str = ""


def enroll_devices(task_dir: str | Path, devices: list[Enrolment], *, broker_url: str, days: float = 365) -> list[Path]:
    """Enrol many devices with one registry write (the broker's password and ACL files are
    rewritten once, not once per device: a thousand devices take seconds, not minutes)."""
    d = TaskDir(task_dir)
    task, coordinator, genesis = d.load()
    packing = task.privacy.packing
    for e in devices:
        if task.privacy.encrypted and e.quota > packing.max_quota:
            raise ValueError(
                f"quota {e.quota} exceeds the task's Paillier max_quota {packing.max_quota} (its sums could overflow)"
            )
    registry = d.registry(task)
    expires = now_ms() + int(days * DAY_MS)
    bundles = []
    for e in devices:
        username, password = registry.add("device", e.device.sign_pk, name=e.name, quota=e.quota)
        cert = issue_certificate(coordinator, task, e.device, quota=e.quota, expires_ms=expires, name=e.name)
        broker = BrokerConfig(broker_url, username, password)
        bundles.append(write_bundle(e.out, genesis=genesis, broker=broker, cert=cert, model_dir=d.model))
    d.save_registry(registry)
    return bundles


def add_observer(task_dir: str | Path) -> tuple[str, str]:
    """Read-only broker credentials (the emulator's progress display, monitoring)."""
    d = TaskDir(task_dir)
    task, _, _ = d.load()
    registry = d.registry(task)
    username, password = registry.add("observer", b"\0" * 32)
    d.save_registry(registry)
    return username, password


def revoke_device(task_dir: str | Path, device_id: str) -> bytes:
    """Drop the device's broker access and sign the new revocation list (publish it retained)."""
    d = TaskDir(task_dir)
    task, coordinator, _ = d.load()
    registry = d.registry(task)
    registry.revoke(device_id)
    d.save_registry(registry)
    notice = make_revocations(coordinator, task, registry.revoked_keys(), now_ms())
    write_atomic(d.revocations, notice)
    return notice
