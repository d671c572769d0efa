"""`blockfl emulate`: a whole federation on one machine, each node its own process.

Starts Mosquitto (auth + ACL from the registry) on a free loopback port, creates a task whose
miners and devices get fresh identities and credentials, partitions the data (scikit-learn's
digits unless --data says otherwise) among the devices, runs the miners and devices as separate
processes (devices as agents in a few worker processes; miners start once the devices are
online), follows the chain as a read-only observer (evaluating each new global model on a
held-out test set), then stops everything,
re-verifies every miner's chain from genesis, checks that every device computed the same model
hash for every block, and writes report.json, PNG plots and summary.md.

With an attack, it runs the same federation (seed, data split, identities) twice, clean and with
attackers, each into its own directory, and compares the two (see compare.py).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from coordinator.emulator import lifeline
from coordinator.emulator.anatomy import round_anatomy
from coordinator.emulator.attacks import KINDS, pick_attackers
from coordinator.emulator.data import load, shards
from coordinator.emulator.guarantee import guarantee
from coordinator.emulator.layout import Layout
from coordinator.emulator.observer import Observer
from coordinator.emulator.processes import Federation, agent_spec, miner_args
from coordinator.emulator.startup import (
    START_PER_DEVICE_S,
    START_S,
    memory,
    probe_model,
    round_wait_ms,
    wait_for_models,
    wait_online,
)
from coordinator.task import broker as local_broker
from coordinator.task.calibrate import initial_difficulty
from coordinator.task.publish import publish_retained
from coordinator.task.setup import Enrolment, add_observer, enroll_devices, enroll_miner, init_task
from coordinator.tools.chainverify import verify_database
from edge_sdk.chain.ledger import balances
from edge_sdk.node.status import ModelHashLog
from edge_sdk.protocol.aggregation_rule import AggregationRule
from edge_sdk.protocol.fixedpoint import model_hash
from edge_sdk.protocol.identity import Identity
from edge_sdk.protocol.task import ChainParams, Privacy, RoundRules, TrainingParams
from edge_sdk.protocol.work import work
from edge_sdk.transport.mqtt import BrokerConfig

SETTLE_S = 20  # how long devices get to reach the observer's final tip
TARGET_INTERVAL_MS = 5000
LIGHT_ABOVE = 50  # --verify auto: devices verify in full up to this many devices, light above
# paho's network loop uses select(), which cannot watch descriptors above 1023; an agent holds
# ~6 (its socket, paho's wake-up socket pair, SQLite's database, WAL and shared memory)
MAX_AGENTS_PER_WORKER = 120


@dataclass
class Options:
    out: Path
    devices: int = 10
    miners: int = 3
    rounds: int = 5
    seed: int = 0
    partition: str = "iid"
    data: str = "digits"  # digits | generated[:N] | FILE.npz (arrays x, y)
    model: str = "mlp:64-32-10"
    optimizer: str = "sgd"
    epochs: int = 5
    batch_size: int = 16
    learning_rate: float = 0.1
    min_updates: int | None = None  # default: every device
    max_wait_ms: int | None = None  # default: BASE_WAIT_MS + WAIT_FACTOR x the time to train every device once
    verify: str = "auto"  # full | light | auto (full up to LIGHT_ABOVE devices)
    processes: int | None = None  # device worker processes (default: one per core)
    start_fraction: float = 1.0  # miners start once this fraction of the devices is online
    initial_hashes: int | None = None  # default: calibrated to the local miners' hash rate
    hash_rate: float | None = None  # hashes/s per miner instead of measuring it
    timeout: float = 600.0
    broker_url: str | None = None  # use a running broker instead of starting one
    ray: str | None = None  # a Ray cluster's address: run the device workers as actors there (ray_workers.py)
    quiet: bool = False
    privacy: str = "plain"  # one of edge_sdk.protocol.task.PRIVACY_MODES
    dp_clip: float = 1.0
    dp_noise: float | None = None  # noise multiplier; default: calibrated from dp_epsilon
    dp_epsilon: float = 8.0
    dp_delta: float = 1e-5
    threshold: int | None = None  # Paillier: partial decryptions needed (default: a majority of miners)
    min_participants: int | None = None  # Paillier: default half the devices (paillier), all of them (paillier+dp)
    paillier_bits: int = 2048
    attack: str | None = None  # one of attacks.KINDS: run clean and attacked, then compare
    attackers: float = 0.1  # the fraction of devices that attack
    aggregation: str = "fedavg"  # fedavg | median | trimmed-mean:BETA | multi-krum:F
    norm_factor: float = 0.0
    weight_cap: int = 2

    def rule(self) -> AggregationRule:
        return AggregationRule.parse(self.aggregation, norm_factor=self.norm_factor, weight_cap=self.weight_cap)

    def noise_multiplier(self) -> float:
        if not Privacy(self.privacy).dp:
            return 0.0
        if self.dp_noise is not None:
            return self.dp_noise
        from coordinator.emulator.accountant import noise_for

        return noise_for(self.dp_epsilon, self.dp_delta, self.rounds)

    def least_participants(self) -> int:
        if self.min_participants is not None:
            return self.min_participants
        return max(2, self.devices if self.privacy == "paillier+dp" else self.devices // 2)

    def verify_mode(self) -> str:
        if self.verify not in ("full", "light", "auto"):
            raise ValueError(f"verify {self.verify!r}: expected full, light or auto")
        if self.verify == "auto":
            return "full" if self.devices <= LIGHT_ABOVE else "light"
        return self.verify

    def worker_count(self, cores: int | None = None) -> int:
        """One per core (here, or in the Ray cluster), and enough that none runs over MAX_AGENTS_PER_WORKER devices."""
        least = -(-self.devices // MAX_AGENTS_PER_WORKER)
        return max(1, least, min(self.devices, self.processes or cores or os.cpu_count() or 1))

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)


def run(options: Options) -> int:
    """0 when every run reached its rounds and checked out, 1 otherwise, 130 when interrupted."""
    out = options.out
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose a new --out")
    options.rule()  # bad settings fail before anything starts
    options.verify_mode()
    if not 0.0 < options.start_fraction <= 1.0:
        raise ValueError(f"start fraction {options.start_fraction}: expected a number in (0, 1]")
    if options.attack and options.attack not in KINDS:
        raise ValueError(f"attack {options.attack!r}: expected one of {', '.join(KINDS)}")
    signal.signal(signal.SIGTERM, _interrupt)  # `kill`, `timeout`: stop the federation as Ctrl-C does
    # Ctrl-C too, even when started from a shell's background job (which starts it with SIGINT ignored,
    # and Python then never installs its KeyboardInterrupt handler)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        if not options.attack:
            return 0 if federation(options)["ok"] else 1
        from coordinator.emulator.compare import write_comparison

        options.say(f"clean run (no attackers) into {out / 'clean'}")
        clean = federation(replace(options, out=out / "clean", attack=None))
        options.say(f"attacked run ({options.attack}, fraction {options.attackers}) into {out / 'attacked'}")
        attacked = federation(replace(options, out=out / "attacked"))
        return 0 if write_comparison(out, clean, attacked, say=options.say)["ok"] else 1
    except KeyboardInterrupt:
        options.say("interrupted: stopping every process")
        return 130


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def federation(options: Options) -> dict:
    """One emulated federation into options.out: its report."""
    options.out.mkdir(parents=True, exist_ok=True)
    fed = Federation(Layout(options.out))
    try:
        return _run(options, fed, time.monotonic())
    finally:
        fed.stop()


def _run(o: Options, fed: Federation, started: float) -> dict:
    layout = fed.layout
    device_data, test_set = shards(load(o.data, o.seed), o.devices, o.partition, o.seed)
    # identities follow --seed so that runs repeat (an emulation; never derive real keys from a seed)
    miner_ids = [Identity.from_seed(b"emulate-%d-miner-%d" % (o.seed, i)) for i in range(o.miners)]
    for i, identity in enumerate(miner_ids):
        identity.save(layout.miner(i) / "identity")
    # every miner shares this machine's cores, so at most one miner per core adds hash rate
    difficulty = initial_difficulty(
        miners=min(o.miners, os.cpu_count() or 1),
        interval_ms=TARGET_INTERVAL_MS,
        initial_hashes=o.initial_hashes,
        hash_rate=o.hash_rate,
    )
    o.say(difficulty.describe())
    wait_ms = round_wait_ms(o, probe_model(o, test_set, device_data[0]))
    task = init_task(
        layout.task.path,
        miners=[m.public for m in miner_ids],
        name="emulated-digits",
        model=o.model,
        optimizer=o.optimizer,
        seed=o.seed,
        training=TrainingParams(o.epochs, o.batch_size, o.learning_rate),
        rounds=RoundRules(o.min_updates or o.devices, wait_ms),
        max_updates=max(ChainParams.max_updates, o.devices),
        initial_hashes=difficulty.expected_hashes,
        target_interval_ms=TARGET_INTERVAL_MS,
        privacy=o.privacy,
        dp_clip=o.dp_clip,
        dp_noise=o.noise_multiplier(),
        paillier_bits=o.paillier_bits,
        paillier_threshold=o.threshold,
        min_participants=o.least_participants(),
        aggregation=o.rule(),
    )
    noise = f" (noise multiplier {task.privacy.dp_noise:.3f}, clip {o.dp_clip})" if task.privacy.dp else ""
    o.say(
        f"task {task.id.hex()[:16]}: {o.model}, {o.devices} devices ({o.data}, {o.partition}), {o.miners} miners, "
        f"{o.rounds} rounds, privacy {o.privacy}{noise}, aggregation {o.aggregation}"
    )
    port = local_broker.free_port() if o.broker_url is None else None
    url = o.broker_url or f"mqtt://127.0.0.1:{port}"
    for i, identity in enumerate(miner_ids):
        enroll_miner(layout.task.path, identity.public, broker_url=url, out=layout.miner(i))
    enrolments = []
    for i, (x, y) in enumerate(device_data):
        d = layout.device(i)
        identity = Identity.from_seed(b"emulate-%d-device-%d" % (o.seed, i))
        identity.save(d / "identity")
        np.savez(d / "data.npz", x=x, y=y)
        quota = -(-2 * len(x) // 100) * 100  # as a real task would: twice the data, rounded up to hundreds
        enrolments.append(Enrolment(identity.public, d / "bundle", quota, f"d{i}"))
    enroll_devices(layout.task.path, enrolments, broker_url=url)
    observer_user, observer_password = add_observer(layout.task.path)
    if o.broker_url is None:
        fed.broker, _ = local_broker.start(
            layout.broker, layout.task.broker, port=port, preexec_fn=lifeline.die_with_parent
        )
        o.say(f"mosquitto on 127.0.0.1:{port} (auth + ACL)")
    publish_retained(layout.task.path, url)  # the retained genesis (and revocations), as the coordinator would
    genesis = layout.task.genesis.read_bytes()
    attackers = pick_attackers(o.devices, o.attackers, o.seed) if o.attack else []
    verify = o.verify_mode()
    agents = [
        agent_spec(layout, i, i % o.miners, verify, o.attack if i in attackers else None) for i in range(o.devices)
    ]
    workers = fed.start_workers(agents, o.worker_count, o.ray)
    against = f" ({len(attackers)} attacking: {o.attack})" if attackers else ""
    o.say(f"started {o.devices} devices ({verify} verification) in {workers}{against}")
    # the first round starts when the federation is there, not on a timer that runs out during start-up
    online = wait_online(o, fed, deadline=time.monotonic() + START_S + START_PER_DEVICE_S * o.devices)
    if online < o.devices:
        o.say(f"{online} of {o.devices} devices online; starting the miners anyway")
    for i in range(o.miners):
        fed.spawn(f"miner{i}", miner_args(layout, i))
    wait = task.rounds.max_wait_ms / 1000
    o.say(f"started {o.miners} miners; a round waits up to {wait:.1f}s for {task.rounds.min_updates} updates")
    broker = BrokerConfig(url, observer_user, observer_password)
    observer = Observer(
        layout, genesis, broker, test_set, miners=o.miners, devices=o.devices, dp_delta=o.dp_delta, say=o.say
    )
    reached = observer.follow(fed, started, o.rounds, o.timeout)
    if reached:  # the miners mine no more; the report describes the chain they settle on
        fed.signal_miners(signal.SIGUSR1)
        if not observer.settle(deadline=time.monotonic() + SETTLE_S):
            o.say("the miners did not settle on one tip; the report describes the observer's best chain")
        wait_for_models(layout, o.devices, observer.chain.tip.hash, deadline=time.monotonic() + SETTLE_S)
    observer.close()
    peaks, placement = memory(fed), fed.workers()
    fed.stop()
    return _finish(o, layout, observer, reached, started, attackers, peaks, placement)


def _finish(
    o: Options, layout: Layout, observer: Observer, reached: bool, started: float, attackers: list, memory: dict,
    workers: dict,
) -> dict:  # fmt: skip
    from coordinator.emulator.report import write_report

    chain = observer.chain
    best = [chain.get(h.hash) for h in chain.branch(chain.tip.hash)[1:]]
    rounds = [observer.rounds[s.hash.hex()] for s in best]
    frac = chain.task.chain.frac_bits
    for state, entry in zip(best, rounds, strict=True):  # what every device must have computed
        entry["model_hash"] = None if state.model is None else model_hash(state.model, frac).hex()
    verify = {}
    for i in range(o.miners):
        report = verify_database(layout.miner_db(i))
        failure = str(report.failure) if report.failure else None
        verify[f"m{i}"] = {"ok": report.ok, "blocks": report.blocks, "failure": failure}
    agreement = _model_hash_agreement(o, layout, best, chain.task.chain.frac_bits)
    miners = {f"m{i}": _status_dict(layout.miner_status(i)) for i in range(o.miners)}
    devices = {f"d{i}": _status_dict(layout.device_status(i)) for i in range(o.devices)}
    privacy = chain.task.privacy
    ok = reached and all(v["ok"] for v in verify.values()) and agreement["ok"]
    report = {
        "ok": ok,
        "reached_rounds": reached,
        "genesis_retained": observer.genesis_retained,  # the broker holds the genesis, as a coordinator leaves it
        "tip": chain.tip.hash.hex(),  # the final best chain's: miners stop mining after the last round
        "miner_tips": {f"m{i}": getattr(layout.miner_status(i), "tip", None) for i in range(o.miners)},
        "seconds": round(time.monotonic() - started, 1),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in o.__dict__.items()},
        "task_id": chain.task.id.hex(),
        "aggregation": chain.task.aggregation.to_wire(),
        "delta_bits": chain.task.chain.delta_bits,
        "device_ids": {f"d{i}": Identity.load(layout.device(i) / "identity").public.node_id for i in range(o.devices)},
        "attackers": [f"d{i}" for i in attackers],
        "initial": {"accuracy": observer.initial.accuracy, "loss": observer.initial.loss},
        "privacy": privacy.mode,
        "dp": {"noise_multiplier": privacy.dp_noise, "clip": privacy.dp_clip, "delta": o.dp_delta}
        if privacy.dp
        else None,
        "guarantee": guarantee(chain.task, o.rounds, o.dp_delta),
        "rounds": rounds,
        "anatomy": round_anatomy(layout, chain, best, miners=o.miners, devices=o.devices),
        "overflowed_rounds": [r["height"] for r in rounds if r.get("overflow")],
        "chain_verify": verify,
        "model_hash_agreement": agreement,
        "rejections": _sum_counters(m.get("rejections", {}) for m in miners.values()),
        "miners": miners,
        "devices": devices,
        "rewards": balances(chain.task, [chain.raw[s.hash] for s in best]),
        "forks": len(chain.raw) - 1 - len(best),
        "memory": {**memory, "per_device_mb": round(memory["workers_peak_mb"] / o.devices, 2)},
        "workers": workers,
        "verify": o.verify_mode(),
        "difficulty": {
            "target_interval_s": chain.task.chain.target_interval_ms / 1000,
            "easiest_block_hashes": work(chain.task.chain.pow_limit),
            "expected_hashes": [work(s.header.target) for s in best],
        },
    }
    write_report(o.out, report)
    final = rounds[-1] if rounds else None
    summary = f"final accuracy {final['accuracy']:.3f}" if final else "no blocks"
    o.say(f"{'OK' if ok else 'FAILED'}: {len(rounds)} rounds in {report['seconds']}s; {summary}")
    o.say(f"report: {o.out / 'report.json'}, {o.out / 'summary.md'}, plots in {o.out}")
    return report


def _status_dict(status) -> dict:
    return asdict(status) if status else {}


def _model_hash_agreement(o: Options, layout: Layout, best, frac_bits: int) -> dict:
    """Every device must have computed, for every block of the best chain, the same model as the
    observer (in plain and dp modes the header's model hash; with Paillier, the decrypted model)."""
    problems = []
    for i in range(o.devices):
        seen = ModelHashLog(layout.device_state(i)).read()
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
