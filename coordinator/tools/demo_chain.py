"""A synthetic chain: real keys, signatures, proof-of-work and SQLite, random deltas.

Used to try the chain tools before a federation exists, and by the crash tests as a real
writer process.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import numpy as np

from coordinator.miner.assembly import build_block
from coordinator.task.calibrate import Difficulty
from edge_sdk.chain.store import ChainStore
from edge_sdk.clock import now_ms
from edge_sdk.protocol.block import Header, make_genesis, make_update
from edge_sdk.protocol.cert import issue_certificate
from edge_sdk.protocol.fixedpoint import to_fixed
from edge_sdk.protocol.identity import Identity
from edge_sdk.protocol.task import ChainParams, MinerInfo, Task
from edge_sdk.protocol.work import work

DEMO_DIFFICULTY = Difficulty(1024)


def demo_task(
    coordinator: Identity,
    miner: Identity,
    *,
    features: int = 64,
    classes: int = 10,
    interval_ms: int = 50,
    difficulty: Difficulty = DEMO_DIFFICULTY,
) -> Task:
    chain = ChainParams(
        pow_limit=difficulty.pow_limit,
        initial_target=difficulty.initial_target,
        target_interval_ms=interval_ms,
        retarget_window=4,
    )
    initial = {"W": np.zeros((features, classes), np.float32), "b": np.zeros((classes,), np.float32)}
    return Task(
        "demo",
        coordinator.public.sign_pk,
        chain,
        to_fixed(initial, chain.frac_bits),
        now_ms() - 1000,
        miners=(MinerInfo(miner.public.sign_pk, miner.public.box_pk),),
    )


def build_demo_chain(
    db_path,
    *,
    blocks: int,
    devices: int = 4,
    seed: int = 0,
    interval_ms: int = 50,
    difficulty: Difficulty | None = None,
    on_block: Callable[[Header, Header], None] = lambda header, parent: None,
) -> ChainStore:
    """Start (or extend) a demo chain in db_path with `blocks` more blocks (a new chain's task
    aims at `interval_ms` per block, starting at `difficulty`, by default a cheap one)."""
    coordinator = Identity.from_seed(b"demo-coordinator-%d" % seed)
    miner = Identity.from_seed(b"demo-miner-%d" % seed)
    members = [Identity.from_seed(b"demo-device-%d-%d" % (seed, i)) for i in range(devices)]
    try:
        store = ChainStore(db_path)
    except ValueError:
        task = demo_task(coordinator, miner, interval_ms=interval_ms, difficulty=difficulty or DEMO_DIFFICULTY)
        store = ChainStore(db_path, make_genesis(coordinator, task))
    task = store.task
    certs = [
        issue_certificate(coordinator, task, d.public, quota=1000, expires_ms=now_ms() + 86_400_000) for d in members
    ]
    rng = np.random.default_rng(seed + store.tip.header.height)
    for _ in range(blocks):
        tip = store.tip
        updates = [
            make_update(
                device,
                task,
                cert,
                tip.base,
                int(rng.integers(50, 500)),
                {name: (rng.standard_normal(shape) * 0.01).astype(np.float32) for name, shape in task.shapes.items()},
                now_ms(),
            )
            for device, cert in zip(members, certs, strict=True)
        ]
        raw = build_block(identity=miner, task=task, chain=store, parent=tip, updates=updates, now_ms=now_ms())
        state, _ = store.add(raw)
        on_block(state.header, tip.header)
        time.sleep(0)  # let a killer signal land between commits too
    return store


def block_line(header: Header, parent: Header) -> str:
    """`committed HEIGHT HASH ...`: its interval since the parent (none after genesis) and difficulty."""
    interval = f"{header.timestamp_ms - parent.timestamp_ms} ms" if header.height > 1 else "-"
    return f"committed {header.height} {header.hash.hex()} interval {interval}, {work(header.target):,} expected hashes"


def period_lines(headers: list[Header], interval_ms: int) -> list[str]:
    """The mean interval of each run of blocks sharing a target (a retarget period) against the target."""
    lines = []
    for target, group in itertools.groupby(headers, key=lambda h: h.target):
        group = list(group)
        if len(group) > 1:
            mean = (group[-1].timestamp_ms - group[0].timestamp_ms) / (len(group) - 1)
            lines.append(
                f"heights {group[0].height}-{group[-1].height}: {work(target):,} expected hashes, "
                f"mean interval {mean:.0f} ms (target {interval_ms} ms)"
            )
    return lines
