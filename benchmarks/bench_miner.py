"""Miner CPU per accepted update and per mined block, and what validating the miner's own block costs.

The same workload as the baseline for the old single-module miner: K devices (default 64), MLP 64-32-10
zero model, two miners (so each accepted update is forwarded once), one-hash proof-of-work, a round that
mines when all K updates are in. Each repetition uses a fresh temp dir, SQLite database and Miner, never
connected to a broker (paho queues publishes locally). CPU is time.process_time(), wall is perf_counter().

  update   miner.on_update for each sealed update (admission, pool, forward to the other miner), per update
  block    miner.after_event (assemble, start the nonce search) until the _Done item is dispatched
           (seal, store.add, new tip), per block
  parse    Update.parse of one update (median over the K); apply_updates over the K parsed updates
  validate validate_block of an equivalent block with known_updates=pool.parsed (what the miner does now)
           and without (full re-verification of every update, as before)

Before and after in one run: with --baseline REV (default 3e63d8f, the last commit before the node
runtime), the tree of REV is extracted with `git archive` and the same workload runs against its
miner in a subprocess (benchmarks/_miner_v0.py); the table then shows both and their ratio.

    .venv/bin/python benchmarks/bench_miner.py [--reps 5] [--devices 64] [--baseline REV | --no-baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from coordinator.miner.assembly import build_block
from coordinator.miner.node import Miner
from edge_sdk.chain.block_model import apply_updates
from edge_sdk.chain.memory import MemoryChain
from edge_sdk.chain.rules import validate_block
from edge_sdk.clock import now_ms
from edge_sdk.node.runtime import _Done
from edge_sdk.protocol import envelope
from edge_sdk.protocol.block import Update, make_genesis, make_update
from edge_sdk.protocol.cert import issue_certificate
from edge_sdk.protocol.fixedpoint import to_fixed
from edge_sdk.protocol.identity import Identity
from edge_sdk.protocol.task import ChainParams, MinerInfo, RoundRules, Task
from edge_sdk.protocol.work import target_for_hashes
from edge_sdk.transport.mqtt import BrokerConfig, Incoming

SHAPES = {"W1": (64, 32), "b1": (32,), "W2": (32, 10), "b2": (10,)}
SAMPLES = 100


class Setup:
    """Identities, task, genesis and certificates, as in the baseline (same seeds)."""

    def __init__(self, k: int):
        self.k = k
        self.coord = Identity.from_seed(b"bench-coordinator")
        self.miners = [Identity.from_seed(b"bench-miner-0"), Identity.from_seed(b"bench-miner-1")]
        self.devices = [Identity.from_seed(b"bench-device-%d" % i) for i in range(k)]
        chain = ChainParams(
            pow_limit=target_for_hashes(1),
            initial_target=target_for_hashes(1),
            target_interval_ms=1000,
            retarget_window=4,
            max_updates=256,
        )
        initial = to_fixed({n: np.zeros(s, np.float32) for n, s in SHAPES.items()}, chain.frac_bits)
        self.task = Task(
            "bench",
            self.coord.public.sign_pk,
            chain,
            initial,
            now_ms() - 60_000,
            miners=tuple(MinerInfo(m.public.sign_pk, m.public.box_pk) for m in self.miners),
            rounds=RoundRules(min_updates=k, max_wait_ms=60_000),
        )
        self.genesis = make_genesis(self.coord, self.task)
        expires = now_ms() + 3_600_000
        self.certs = [
            issue_certificate(self.coord, self.task, d.public, quota=10_000, expires_ms=expires) for d in self.devices
        ]

    def delta(self, seed: int, scale: float = 0.01) -> dict:
        rng = np.random.default_rng(seed)
        return {
            name: (rng.standard_normal(shape) * scale).astype(np.float32) for name, shape in self.task.shapes.items()
        }


def timed(fn):
    """(result, cpu ms, wall ms) of fn()."""
    c0, w0 = time.process_time(), time.perf_counter()
    result = fn()
    return result, (time.process_time() - c0) * 1000, (time.perf_counter() - w0) * 1000


def mine_one(miner: Miner) -> None:
    """What the runtime loop does: after_event starts the search; dispatch the _Done when it arrives."""
    miner.after_event()
    while True:
        item = miner.inbox.get(timeout=60)
        if isinstance(item, _Done):
            miner.dispatch(item)
            return


def one_rep(s: Setup) -> dict:
    k, task = s.k, s.task
    with tempfile.TemporaryDirectory() as tmp:
        miner = Miner(
            identity=s.miners[0],
            genesis=s.genesis,
            db_path=Path(tmp) / "miner.db",
            broker=BrokerConfig("mqtt://127.0.0.1:1"),
        )
        base = miner.store.tip.hash
        raws = [make_update(s.devices[i], task, s.certs[i], base, SAMPLES, s.delta(i), now_ms()) for i in range(k)]
        sealed = [envelope.seal(s.miners[0].public.box_pk, r) for r in raws]
        msgs = [Incoming(miner.topics.update(miner.me, s.devices[i].public.node_id), sealed[i]) for i in range(k)]

        # (a) accepted updates
        _, update_cpu, update_wall = timed(lambda: [miner.on_update(m) for m in msgs])
        assert miner.counters["updates_accepted"] == k, (dict(miner.counters), dict(miner.rejections))
        assert not miner.rejections, dict(miner.rejections)
        known = dict(miner.pool.parsed)  # the pool is emptied once the block is the new tip
        pooled = miner.pool.on_base(base, task.chain.max_updates)

        # (b) one mined block
        assert miner.store.tip.header.height == 0
        _, block_cpu, block_wall = timed(lambda: mine_one(miner))
        assert miner.store.tip.header.height == 1, miner.store.tip.header.height
        assert miner.counters["blocks_mined"] == 1, dict(miner.counters)
        miner.store.close()

    # context: Update.parse per update, apply_updates over the K parsed updates
    parse_cpu = [timed(lambda r=r: Update.parse(r, task))[1] for r in raws]
    parsed = [Update.parse(r, task) for r in raws]
    _, apply_cpu, _ = timed(lambda: apply_updates(task, task.initial_model, parsed))

    # an equivalent block (same genesis, same K updates), validated with and without the pool's parses
    builder = MemoryChain(s.genesis)
    raw = build_block(
        identity=s.miners[0], task=task, chain=builder, parent=builder.tip, updates=pooled, now_ms=now_ms()
    )
    verifier = MemoryChain(s.genesis)

    def validate(known_updates):
        return validate_block(raw, task=task, chain=verifier, now_ms=now_ms(), known_updates=known_updates)

    (_, checked, _), known_cpu, _ = timed(lambda: validate(known))
    (_, full_updates, _), full_cpu, _ = timed(lambda: validate(None))
    assert len(checked) == len(full_updates) == k

    return {
        "update_cpu_ms": update_cpu / k,
        "update_wall_ms": update_wall / k,
        "block_cpu_ms": block_cpu,
        "block_wall_ms": block_wall,
        "parse_cpu_ms_median": statistics.median(parse_cpu),
        "apply_updates_cpu_ms": apply_cpu,
        "validate_known_cpu_ms": known_cpu,
        "validate_full_cpu_ms": full_cpu,
    }


def baseline(rev: str, k: int, reps: int) -> list[dict] | None:
    """Per-repetition figures of the miner at git revision `rev` (None where git or the tree is missing)."""
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", rev, "edge_sdk", "coordinator"], capture_output=True
        )
        if archive.returncode != 0:
            print(f"no baseline: git archive {rev} failed: {archive.stderr.decode()[:200]}")
            return None
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        worker = Path(__file__).with_name("_miner_v0.py")
        env = {**os.environ, "PYTHONPATH": tmp}
        out = subprocess.run(
            [sys.executable, str(worker), str(k), str(reps)], capture_output=True, text=True, env=env, cwd=tmp
        )
        if out.returncode != 0:
            print(f"no baseline: the worker failed: {out.stderr[-500:]}")
            return None
        return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--devices", type=int, default=64)
    ap.add_argument(
        "--baseline", default="3e63d8f", help="git revision to compare with (default: before the node runtime)"
    )
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()
    k = args.devices
    before = None if args.no_baseline else baseline(args.baseline, k, args.reps)
    setup = Setup(k)
    runs = [one_rep(setup) for _ in range(args.reps)]
    for r in [*runs, *(before or [])]:  # the miner's whole CPU for a round, per accepted update
        r["round_cpu_ms_per_update"] = r["update_cpu_ms"] + r["block_cpu_ms"] / k

    print(f"miner ({Miner.__module__}), K={k}, {args.reps} reps; CPU = process time, medians (min)")
    head = f"{'figure':<28}{'now':>18}"
    print(head + (f"{'at ' + args.baseline:>18}{'before/now':>12}" if before else ""))
    for key in runs[0]:
        now = [r[key] for r in runs]
        line = f"{key:<28}{statistics.median(now):>10.3f} ({min(now):.3f})"
        if before and key in before[0]:
            old = [r[key] for r in before]
            ratio = statistics.median(old) / statistics.median(now)
            line += f"{statistics.median(old):>10.3f} ({min(old):.3f}){ratio:>11.1f}x"
        print(line)
    full = statistics.median(r["validate_full_cpu_ms"] for r in runs)
    known = statistics.median(r["validate_known_cpu_ms"] for r in runs)
    print(f"validate_block CPU, full re-verification / with pool's known_updates: {full / known:.1f}x (medians)")


if __name__ == "__main__":
    main()
