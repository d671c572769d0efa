"""Shared fixtures: a small task with real keys, and helpers that build valid (or deliberately broken) blocks."""

from __future__ import annotations

import dataclasses
import pathlib
import subprocess

import numpy as np
import pytest

from coordinator.miner.assembly import build_block, search_nonce
from edge_sdk.chain.block_model import apply_updates
from edge_sdk.chain.memory import MemoryChain
from edge_sdk.chain.rules import expected_target
from edge_sdk.clock import now_ms
from edge_sdk.protocol.aggregation_rule import AggregationRule
from edge_sdk.protocol.block import Update, block_template, make_genesis, make_update, seal_block
from edge_sdk.protocol.cert import issue_certificate
from edge_sdk.protocol.errors import ProtocolError
from edge_sdk.protocol.extras import Extras
from edge_sdk.protocol.fixedpoint import model_hash, to_fixed
from edge_sdk.protocol.identity import Identity
from edge_sdk.protocol.task import ChainParams, MinerInfo, RoundRules, Task
from edge_sdk.protocol.work import target_for_hashes


@dataclasses.dataclass
class Federation:
    coordinator: Identity
    miner: Identity
    devices: list
    task: Task
    genesis: bytes
    certs: list

    def chain(self) -> MemoryChain:
        return MemoryChain(self.genesis)

    def delta(self, seed: int, scale: float = 0.01) -> dict:
        rng = np.random.default_rng(seed)
        return {
            name: (rng.standard_normal(shape) * scale).astype(np.float32) for name, shape in self.task.shapes.items()
        }

    def update(
        self,
        device: int,
        base: bytes,
        *,
        samples: int = 100,
        seed: int | None = None,
        ts: int | None = None,
        delta=None,
    ) -> bytes:
        delta = self.delta(device if seed is None else seed) if delta is None else delta
        return make_update(
            self.devices[device], self.task, self.certs[device], base, samples, delta, now_ms() if ts is None else ts
        )

    def block(self, chain, parent=None, updates=(), miner=None) -> bytes:
        parent = chain.tip if parent is None else parent
        return build_block(
            identity=miner or self.miner,
            task=self.task,
            chain=chain,
            parent=parent,
            updates=list(updates),
            now_ms=now_ms(),
        )

    def forged(
        self, chain, parent=None, updates=(), *, mine: bool = True, signer=None, model=None, extras=None, **fields
    ) -> bytes:
        """A block whose header fields are overridden, then (re)mined so only the chosen rule breaks."""
        parent = chain.tip if parent is None else parent
        excluded = ()
        try:
            parsed = [Update.parse(u, self.task) for u in updates]
            commitment, _, excluded, _ = apply_updates(self.task, parent.model if model is None else model, parsed)
            if model is not None:
                commitment = model_hash(model, self.task.chain.frac_bits)
        except ProtocolError:  # a deliberately bad update: the model is never reached
            commitment = bytes(32)
        extras = Extras(excluded) if extras is None else extras
        header = block_template(
            parent=parent.header,
            task=self.task,
            miner=self.miner.public.sign_pk,
            update_bytes=list(updates),
            extras=extras,
            commitment=commitment,
            timestamp_ms=max(now_ms(), parent.header.timestamp_ms),
            target=expected_target(self.task, parent.header, chain),
        )
        header = dataclasses.replace(header, **fields)
        if mine:
            header = search_nonce(header)
        return seal_block(signer or self.miner, header, list(updates), extras)


def make_federation(
    devices: int = 4,
    seed: int = 0,
    quota: int = 10_000,
    *,
    peers: int = 0,
    rounds: RoundRules | None = None,
    aggregation: AggregationRule | None = None,
    **chain_overrides,
) -> Federation:
    """A task with real keys: one miner (`miner`) plus `peers` other miners in its miner set."""
    coordinator = Identity.from_seed(b"coordinator-%d" % seed)
    miner = Identity.from_seed(b"miner-%d" % seed)
    others = [Identity.from_seed(b"peer-%d-%d" % (seed, i)) for i in range(peers)]
    params = dict(
        pow_limit=target_for_hashes(2), initial_target=target_for_hashes(8), target_interval_ms=1000, retarget_window=2
    )
    params.update(chain_overrides)
    chain = ChainParams(**params)
    initial = {"W": np.zeros((6, 3), np.float32), "b": np.full((3,), 0.5, np.float32)}
    task = Task(
        "test",
        coordinator.public.sign_pk,
        chain,
        to_fixed(initial, chain.frac_bits),
        now_ms() - 60_000,
        miners=tuple(MinerInfo(m.public.sign_pk, m.public.box_pk) for m in [miner, *others]),
        rounds=rounds or RoundRules(),
        aggregation=aggregation or AggregationRule(),
    )
    members = [Identity.from_seed(b"device-%d-%d" % (seed, i)) for i in range(devices)]
    return Federation(
        coordinator=coordinator,
        miner=miner,
        devices=members,
        task=task,
        genesis=make_genesis(coordinator, task),
        certs=[
            issue_certificate(coordinator, task, d.public, quota=quota, expires_ms=now_ms() + 3_600_000)
            for d in members
        ],
    )


@pytest.fixture
def fed() -> Federation:
    return make_federation()


# --- environments and model packages for the training tests ---
REPO = pathlib.Path(__file__).resolve().parents[1]


def _extra_env(name: str) -> pathlib.Path:
    """A second virtual environment built by deploy/dev/setup-test-envs.sh (built here if missing)."""
    if not (REPO / name / ".complete").exists():
        subprocess.run(["bash", str(REPO / "deploy/dev/setup-test-envs.sh")], check=True, timeout=900)
    return REPO / name / "bin" / "python"


@pytest.fixture(scope="session")
def sdk_python() -> pathlib.Path:
    return _extra_env(".venv-sdk")


@pytest.fixture(scope="session")
def ort_python() -> pathlib.Path:
    return _extra_env(".venv-ort")


@pytest.fixture(scope="session")
def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    return train_test_split(x, data.target, test_size=0.25, random_state=0, stratify=data.target)


def build_package(directory, spec="mlp:64-32-10", loss="cross-entropy", optimizer="sgd", seed=0):
    from coordinator.models.optimizers import Optimizer
    from coordinator.models.package_writer import build_package as build
    from coordinator.models.zoo import build_forward
    from edge_sdk.training.package import ModelPackage

    forward, params = build_forward(spec, seed=seed)
    build(directory, forward, params, loss=loss, optimizer=Optimizer.parse(optimizer), model_name=spec)
    return ModelPackage.load(directory)
