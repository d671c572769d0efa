"""Worker for bench_miner.py: the same workload against the miner as it was before the node-runtime
redesign (commit 3e63d8f, old module layout). bench_miner.py extracts that tree and runs this file
with it on PYTHONPATH; it prints one JSON object of per-repetition figures."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from coordinator.miner import Mined, Miner  # the old single-module miner
from edge_sdk import envelope
from edge_sdk.block import make_genesis, make_update
from edge_sdk.cert import issue_certificate
from edge_sdk.chain import now_ms
from edge_sdk.keys import Identity
from edge_sdk.mqtt import BrokerConfig, Incoming
from edge_sdk.params import to_fixed
from edge_sdk.task import ChainParams, MinerInfo, RoundRules, Task
from edge_sdk.work import target_for_hashes

SHAPES = {"W1": (64, 32), "b1": (32,), "W2": (32, 10), "b2": (10,)}


def main(k: int, reps: int) -> None:
    coord = Identity.from_seed(b"bench-coordinator")
    miners = [Identity.from_seed(b"bench-miner-0"), Identity.from_seed(b"bench-miner-1")]
    devices = [Identity.from_seed(b"bench-device-%d" % i) for i in range(k)]
    chain = ChainParams(
        pow_limit=target_for_hashes(1),
        initial_target=target_for_hashes(1),
        target_interval_ms=1000,
        retarget_window=4,
        max_updates=256,
    )
    initial = to_fixed({n: np.zeros(s, np.float32) for n, s in SHAPES.items()}, chain.frac_bits)
    task = Task(
        "bench",
        coord.public.sign_pk,
        chain,
        initial,
        now_ms() - 60_000,
        miners=tuple(MinerInfo(m.public.sign_pk, m.public.box_pk) for m in miners),
        rounds=RoundRules(min_updates=k, max_wait_ms=60_000),
    )
    genesis = make_genesis(coord, task)
    certs = [issue_certificate(coord, task, d.public, quota=10_000, expires_ms=now_ms() + 3_600_000) for d in devices]

    def delta(seed: int) -> dict:
        rng = np.random.default_rng(seed)
        return {n: (rng.standard_normal(s) * 0.01).astype(np.float32) for n, s in task.shapes.items()}

    runs = []
    for _ in range(reps):
        with tempfile.TemporaryDirectory() as tmp:
            m = Miner(
                identity=miners[0],
                genesis=genesis,
                db_path=Path(tmp) / "m.db",
                broker=BrokerConfig("mqtt://127.0.0.1:1"),
            )
            base = m.store.tip.hash
            sealed = [
                envelope.seal(
                    miners[0].public.box_pk, make_update(devices[i], task, certs[i], base, 100, delta(i), now_ms())
                )
                for i in range(k)
            ]
            msgs = [Incoming(m.topics.update(m.me, devices[i].public.node_id), sealed[i]) for i in range(k)]
            c0 = time.process_time()
            for msg in msgs:
                m._on_update(msg)
            c1 = time.process_time()
            assert m.counters["updates_accepted"] == k and not m.rejections
            m._maybe_mine()
            item = m.inbox.get(timeout=60)
            while not isinstance(item, Mined):
                item = m.inbox.get(timeout=60)
            m._handle(item)
            c2 = time.process_time()
            assert m.store.tip.header.height == 1
            m.store.close()
        runs.append({"update_cpu_ms": (c1 - c0) * 1000 / k, "block_cpu_ms": (c2 - c1) * 1000})
    print(json.dumps(runs))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
