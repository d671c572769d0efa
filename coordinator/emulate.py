"""`blockfl emulate`: a whole federation on one machine, each node its own process.

Starts Mosquitto (auth + ACL from the registry) on a free loopback port, creates a task whose
miners and devices get fresh identities and credentials, partitions scikit-learn's digits among
the devices, runs the miners and devices as separate processes, follows the chain as a read-only
observer (evaluating each new global model on a held-out test set), then stops everything,
re-verifies every miner's chain from genesis, checks that every device computed the same model
hash for every block, and writes report.json, PNG plots and summary.md.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_sdk.block import Block
from edge_sdk.chain import MemoryChain
from edge_sdk.errors import ProtocolError
from edge_sdk.keys import Identity, node_id
from edge_sdk.ledger import balances
from edge_sdk.mqtt import BrokerConfig, Connection, Incoming
from edge_sdk.params import to_float
from edge_sdk.task import RoundRules, TrainingParams
from edge_sdk.topics import Topics
from edge_sdk.training import ModelPackage, PortableTrainer

from . import broker as local_broker
from .chainverify import verify_database
from .partition import partition
from .task_setup import add_observer, enroll_device, enroll_miner, init_task


@dataclass
class Options:
    out: Path
    devices: int = 10
    miners: int = 3
    rounds: int = 5
    seed: int = 0
    partition: str = "iid"
    model: str = "mlp:64-32-10"
    optimizer: str = "sgd"
    epochs: int = 5
    batch_size: int = 16
    learning_rate: float = 0.1
    min_updates: int | None = None      # default: every device
    max_wait_ms: int = 8000
    initial_hashes: int = 20_000
    timeout: float = 600.0
    broker_url: str | None = None       # use a running broker instead of starting one
    quiet: bool = False
    privacy: str = "plain"              # plain | dp | paillier | paillier+dp
    dp_clip: float = 1.0
    dp_noise: float | None = None       # noise multiplier; default: calibrated from dp_epsilon
    dp_epsilon: float = 8.0
    dp_delta: float = 1e-5

    def noise_multiplier(self) -> float:
        if self.privacy not in ("dp", "paillier+dp"):
            return 0.0
        if self.dp_noise is not None:
            return self.dp_noise
        from .accountant import noise_for

        return noise_for(self.dp_epsilon, self.dp_delta, self.rounds)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path


@dataclass
class Federation:
    options: Options
    processes: list[Process] = field(default_factory=list)
    broker: subprocess.Popen | None = None

    def spawn(self, name: str, args: list[str]) -> Process:
        log = self.options.out / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        handle = open(log, "wb")
        popen = subprocess.Popen([sys.executable, *args], stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for p in self.processes:
            if p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for p in self.processes:
            try:
                p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.popen.pid, signal.SIGKILL)
                p.popen.wait()
        if self.broker is not None:
            local_broker.stop(self.broker)


def say(options: Options, text: str) -> None:
    if not options.quiet:
        print(text, flush=True)


def run(options: Options) -> int:
    out = options.out
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    fed = Federation(options)
    started = time.monotonic()
    try:
        return _run(fed, started)
    except KeyboardInterrupt:
        say(options, "interrupted: stopping every process")
        return 130
    finally:
        fed.stop()


def _prepare_data(options: Options):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=0.25, random_state=options.seed, stratify=digits.target)
    parts = partition(y_train, options.devices, options.partition, options.seed)
    return [(x_train[p], y_train[p]) for p in parts], (x_test, y_test)


def _run(fed: Federation, started: float) -> int:
    o = fed.options
    out = o.out
    shards, (x_test, y_test) = _prepare_data(o)
    # identities follow --seed so that runs repeat (an emulation; never derive real keys from a seed)
    miner_ids = [Identity.from_seed(b"emulate-%d-miner-%d" % (o.seed, i)) for i in range(o.miners)]
    for i, identity in enumerate(miner_ids):
        identity.save(out / "miners" / f"m{i}" / "identity")
    task = init_task(
        out / "task", miners=[m.public for m in miner_ids], name="emulated-digits", model=o.model, optimizer=o.optimizer, seed=o.seed,
        training=TrainingParams(o.epochs, o.batch_size, o.learning_rate),
        rounds=RoundRules(o.min_updates or o.devices, o.max_wait_ms), initial_hashes=o.initial_hashes,
        target_interval_ms=5000, privacy=o.privacy, dp_clip=o.dp_clip, dp_noise=o.noise_multiplier(),
    )
    say(o, f"task {task.id.hex()[:16]}: {o.model}, {o.devices} devices ({o.partition}), {o.miners} miners, {o.rounds} rounds, "
           f"privacy {o.privacy}" + (f" (noise multiplier {task.privacy.dp_noise:.3f}, clip {o.dp_clip})" if task.privacy.dp else ""))
    port = local_broker.free_port() if o.broker_url is None else None
    url = o.broker_url or f"mqtt://127.0.0.1:{port}"
    for i, identity in enumerate(miner_ids):
        enroll_miner(out / "task", identity.public, broker_url=url, out=out / "miners" / f"m{i}")
    for i, (x, y) in enumerate(shards):
        d = out / "devices" / f"d{i}"
        identity = Identity.from_seed(b"emulate-%d-device-%d" % (o.seed, i))
        identity.save(d / "identity")
        np.savez(d / "data.npz", x=x, y=y)
        enroll_device(out / "task", identity.public, broker_url=url, out=d / "bundle", quota=max(1000, len(x)), name=f"d{i}")
    observer_user, observer_password = add_observer(out / "task")
    if o.broker_url is None:
        fed.broker, _ = local_broker.start(out / "broker", out / "task" / "broker", port=port)
        say(o, f"mosquitto on 127.0.0.1:{port} (auth + ACL)")
    genesis = (out / "task" / "genesis.block").read_bytes()
    for i in range(o.miners):
        m = out / "miners" / f"m{i}"
        fed.spawn(f"miner{i}", ["-m", "coordinator.cli", "miner", "run", "--identity", str(m / "identity"), "--genesis", str(m / "genesis.block"),
                                "--broker-config", str(m / "broker.json"), "--db", str(m / "chain.db")])
    for i in range(o.devices):
        d = out / "devices" / f"d{i}"
        fed.spawn(f"device{i}", ["-m", "edge_sdk.cli", "run", "--bundle", str(d / "bundle"), "--identity", str(d / "identity"),
                                 "--data", str(d / "data.npz"), "--state", str(d / "state"), "--miner-index", str(i % o.miners),
                                 "--backend", "portable"])
    say(o, f"started {o.miners} miners and {o.devices} devices")
    observer = Observer(o, genesis, BrokerConfig(url, observer_user, observer_password), (x_test, y_test), out / "task" / "model")
    reached = observer.follow(fed, started)
    if reached:
        _wait_for_devices(o, task.id, observer.chain.tip.header.height, deadline=time.monotonic() + 20)
    fed.stop()
    return _finish(o, observer, reached, started)


class Observer:
    """Follows the best chain read-only; evaluates each new global model on the test set."""

    def __init__(self, options: Options, genesis: bytes, broker: BrokerConfig, test_set, package_dir: Path):
        self.options = options
        task = MemoryChain(genesis).task
        decryptor = None
        if task.privacy.encrypted:  # the emulator evaluates models as a device would: with the task's key
            from edge_sdk.paillier import Decryptor

            from .task_setup import paillier_private_key

            decryptor = Decryptor(paillier_private_key(options.out / "task", task), task.privacy.packing)
        self.chain = MemoryChain(genesis, decryptor)
        self.task = self.chain.task
        self.topics = Topics(self.task.id)
        self.conn = Connection(broker, client_id=f"observer-{os.getpid()}", subscriptions=[self.topics.all("block")])
        self.evaluator = PortableTrainer(ModelPackage.load(package_dir))
        self.x_test, self.y_test = test_set
        self.rounds: dict[str, dict] = {}
        self._last_totals = {"bytes": 0, "rejections": {}, "aggregate_ms": 0, "crypto_s": 0.0}
        self.initial = self.evaluator.evaluate(to_float(self.task.initial_model, self.task.chain.frac_bits), self.x_test, self.y_test)

    def follow(self, fed: Federation, started: float) -> bool:
        o = self.options
        self.conn.start()
        deadline = started + o.timeout
        last = None
        try:
            while time.monotonic() < deadline:
                dead = [p.name for p in fed.processes if p.popen.poll() is not None]
                if dead:
                    say(o, f"process(es) exited early: {', '.join(dead)}; see {o.out / 'logs'}")
                    return False
                try:
                    item = self.conn.inbox.get(timeout=0.5)
                except Exception:
                    continue
                if not isinstance(item, Incoming):
                    continue
                try:
                    state = self.chain.add(item.payload)
                except ProtocolError:
                    continue
                self._record(state, item.payload, started)
                tip = self.chain.tip
                if tip.hash != last:
                    switched = last is not None and self.chain.get(last).header.height >= tip.header.height
                    last = tip.hash
                    r = self.rounds[tip.hash.hex()]
                    extra = f"  epsilon {r['epsilon']:.2f}" if "epsilon" in r else ""
                    say(o, f"round {tip.header.height}/{o.rounds}{' (fork switch)' if switched else ''}  accuracy {r['accuracy']:.3f}  loss {r['loss']:.3f}  "
                           f"block interval {r['block_interval_s']:.1f}s  updates {r['updates']}  miner {r['miner_id'][:8]}{extra}  "
                           f"[{time.monotonic() - started:.0f}s]")
                if tip.header.height >= o.rounds:
                    return True
            say(o, f"timed out after {o.timeout:.0f}s at height {self.chain.tip.header.height}")
            return False
        finally:
            self.conn.stop()

    def _record(self, state, raw: bytes, started: float) -> None:
        block = Block.parse(raw, self.task.chain.max_block_bytes)
        parent = self.chain.get(state.header.prev_hash)
        evaluation = self.evaluator.evaluate(to_float(state.model, self.task.chain.frac_bits), self.x_test, self.y_test)
        self.rounds[state.hash.hex()] = {
            "height": state.header.height, "hash": state.hash.hex(), "miner": state.header.miner.hex(),
            "miner_id": node_id(state.header.miner),
            "updates": len(block.update_bytes), "accuracy": evaluation.accuracy, "loss": evaluation.loss,
            "block_interval_s": (state.header.timestamp_ms - parent.header.timestamp_ms) / 1000,
            "block_bytes": len(raw), "update_bytes": sum(len(u) for u in block.update_bytes),
            "seen_at_s": round(time.monotonic() - started, 3),
        }
        if self.chain.tip.hash == state.hash:  # the traffic and rejections since the previous tip
            totals = self._miner_totals()
            self.rounds[state.hash.hex()]["wire_bytes"] = totals["bytes"] - self._last_totals["bytes"]
            self.rounds[state.hash.hex()]["rejections"] = {
                k: v - self._last_totals["rejections"].get(k, 0) for k, v in totals["rejections"].items()
                if v != self._last_totals["rejections"].get(k, 0)}
            if self.task.privacy.encrypted:
                self.rounds[state.hash.hex()]["miner_aggregate_ms"] = round(totals["aggregate_ms"] - self._last_totals["aggregate_ms"], 1)
                self.rounds[state.hash.hex()]["device_encrypt_s"] = round(totals["crypto_s"] - self._last_totals["crypto_s"], 3)
            if self.task.privacy.dp:
                from .accountant import epsilon

                self.rounds[state.hash.hex()]["epsilon"] = epsilon(self.task.privacy.dp_noise, state.header.height, self.options.dp_delta)
            self._last_totals = totals

    def _miner_totals(self) -> dict:
        """Bytes miners sent and received, and rejections by reason, so far (from their metrics files)."""
        total, rejections, aggregate_ms, crypto_s = 0, {}, 0.0, 0.0
        for i in range(self.options.miners):
            try:
                metrics = json.loads((self.options.out / "miners" / f"m{i}" / "chain.db.metrics.json").read_text())
            except (OSError, ValueError):
                continue
            total += metrics["counters"].get("bytes_in", 0) + metrics["counters"].get("bytes_out", 0)
            aggregate_ms += metrics["counters"].get("aggregate_ms", 0)
            for k, v in metrics.get("rejections", {}).items():
                rejections[k] = rejections.get(k, 0) + v
        for i in range(self.options.devices):
            try:
                crypto_s += json.loads((self.options.out / "devices" / f"d{i}" / "state" / "status.json").read_text())["crypto_seconds"]
            except (OSError, ValueError, KeyError):
                pass
        return {"bytes": total, "rejections": rejections, "aggregate_ms": aggregate_ms, "crypto_s": crypto_s}


def _wait_for_devices(o: Options, task_id: bytes, height: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        heights = []
        for i in range(o.devices):
            status = o.out / "devices" / f"d{i}" / "state" / "status.json"
            try:
                heights.append(json.loads(status.read_text())["tip_height"])
            except (OSError, ValueError, KeyError):
                heights.append(-1)
        if min(heights) >= height:
            return
        time.sleep(0.3)


def _finish(o: Options, observer: Observer, reached: bool, started: float) -> int:
    from .report import write_report

    chain = observer.chain
    best = []
    state = chain.tip
    while state.header.height > 0:
        best.append(state)
        state = chain.get(state.header.prev_hash)
    best.reverse()
    best_raws = [chain.raw[s.hash] for s in best]
    rounds = [observer.rounds[s.hash.hex()] for s in best]
    verify = {}
    for i in range(o.miners):
        db = o.out / "miners" / f"m{i}" / "chain.db"
        report = verify_database(db)
        verify[f"m{i}"] = {"ok": report.ok, "blocks": report.blocks, "failure": str(report.failure) if report.failure else None}
    agreement = _model_hash_agreement(o, best, chain.task.chain.frac_bits)
    metrics = {}
    for i in range(o.miners):
        path = o.out / "miners" / f"m{i}" / "chain.db.metrics.json"
        metrics[f"m{i}"] = json.loads(path.read_text()) if path.exists() else {}
    device_stats = {}
    for i in range(o.devices):
        path = o.out / "devices" / f"d{i}" / "state" / "status.json"
        device_stats[f"d{i}"] = json.loads(path.read_text()) if path.exists() else {}
    ledger = balances(chain.task, best_raws)
    ok = reached and all(v["ok"] for v in verify.values()) and agreement["ok"]
    report = {
        "ok": ok, "reached_rounds": reached, "seconds": round(time.monotonic() - started, 1),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in o.__dict__.items()},
        "task_id": chain.task.id.hex(), "initial": {"accuracy": observer.initial.accuracy, "loss": observer.initial.loss},
        "privacy": chain.task.privacy.mode, "dp": {"noise_multiplier": chain.task.privacy.dp_noise, "clip": chain.task.privacy.dp_clip,
                                                   "delta": o.dp_delta} if chain.task.privacy.dp else None,
        "rounds": rounds, "chain_verify": verify, "model_hash_agreement": agreement,
        "rejections": _sum_counters(m.get("rejections", {}) for m in metrics.values()),
        "miners": metrics, "devices": device_stats, "rewards": ledger,
        "forks": len(chain.raw) - 1 - len(best),
    }
    write_report(o.out, report)
    final = rounds[-1] if rounds else None
    say(o, f"{'OK' if ok else 'FAILED'}: {len(rounds)} rounds in {report['seconds']}s; "
           f"final accuracy {final['accuracy']:.3f}" if final else "no blocks")
    say(o, f"report: {o.out / 'report.json'}, {o.out / 'summary.md'}, plots in {o.out}")
    return 0 if ok else 1


def _model_hash_agreement(o: Options, best, frac_bits: int) -> dict:
    """Every device must have computed, for every block of the best chain, the same model as the
    observer (in plain and dp modes the header's model hash; with Paillier, the decrypted model)."""
    from edge_sdk.params import model_hash

    problems = []
    for i in range(o.devices):
        path = o.out / "devices" / f"d{i}" / "state" / "model_hashes.jsonl"
        seen = {}
        if path.exists():
            for line in path.read_text().splitlines():
                entry = json.loads(line)
                seen[entry["block"]] = entry["model_hash"]
        for state in best:
            got = seen.get(state.hash.hex())
            if got != model_hash(state.model, frac_bits).hex():
                problems.append(f"d{i} height {state.header.height}: {'missing' if got is None else 'differs'}")
    return {"ok": not problems, "devices": o.devices, "blocks": len(best), "problems": problems[:20]}


def _sum_counters(counters) -> dict:
    total: dict = {}
    for c in counters:
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
    return total
