"""Fault campaign (issues 10 and 17): a real federation on 127.0.0.1 (3 miners, 6 devices, one Mosquitto
with auth and ACL, scikit-learn digits split as `blockfl emulate` splits them) in which a random victim
(a miner, the broker or a device) is SIGKILLed mid-round, --kills times, and restarted after a short
random pause with the same arguments (the broker on the same port, config and persistence directory).
Every fourth kill is aimed instead: a miner is restarted holding each device update in its handler
(BLOCKFL_FAULT_HOLD_UPDATE_MS, coordinator/miner/faults.py) and SIGKILLed while it holds one, i.e.
after the broker acknowledged the update to its device and before the pool commit, then restarted
normally.

Then the federation settles: at a moment every node holds the same tip the devices are frozen (SIGSTOP,
so no new update starts a round), the miners stop (SIGTERM) once every delivered update has reached one
and no block can come, then the devices (SIGTERM, SIGCONT). Every update a device got a PUBACK for (its
delivered.jsonl) is accounted for from the miners' audit tables (chaos_accounting.py): admitted,
refused (by reason), SILENT (acknowledged by the broker, then neither admitted nor refused by any
miner) or LOST (admitted in time by the miner that closed its round, and left out). Admitted ones
are on the final best chain, superseded (their round closed without them), orphaned (their base
left the best chain) or open (their base is the final tip). Every chain is replayed with `chain
verify`. Exit status 1 if anything was SILENT or LOST, the chains diverge or one fails.

    .venv/bin/python benchmarks/chaos.py --kills 20 --seed 1
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from chaos_accounting import Audit, account, describe, kill_summary, print_summary

from coordinator.emulator.data import load, shards
from coordinator.emulator.layout import Layout
from coordinator.emulator.processes import Federation, Process, miner_args
from coordinator.miner.faults import HOLD_UPDATE_ENV
from coordinator.miner.pool import read_audit
from coordinator.task import broker as local_broker
from coordinator.task.setup import enroll_device, enroll_miner, init_task
from coordinator.tools.chainverify import verify_database
from edge_sdk.chain.store import ChainStore, StoredChain
from edge_sdk.clock import now_ms
from edge_sdk.node.device import CHAIN_FILE
from edge_sdk.node.status import DeliveryLog
from edge_sdk.protocol.identity import Identity
from edge_sdk.protocol.task import RoundRules, TrainingParams

MINERS, DEVICES = 3, 6
MAX_WAIT_MS = 5000  # a round short of one device's update closes after this
FIRST_ROUND_S = 90  # for the processes to start and the first round to begin
ROUND_WAIT_S = 30  # the longest wait for a new round in progress before a kill
ACCOUNT_S = 15  # how long a delivered update may take to reach a miner once the kills are over
SETTLE_S = 180  # reserved at the end of --max-seconds for settling
POLL_S = 0.2
IN_HANDLER_EVERY = 4  # every fourth kill is aimed between the broker's acknowledgement and the pool commit
HOLD_MS = 30_000  # how long the aimed miner holds an update in its handler (it dies long before)
HELD = "fault injection: holding an update"


def device_args(layout: Layout, i: int, miner_index: int) -> list[str]:
    """`blockfl-device run` as a process of its own (the emulator's worker processes hold many agents;
    here each device must be killed alone)."""
    d = layout.device(i)
    return ["-m", "edge_sdk.cli", "run", "--bundle", str(d / "bundle"), "--identity", str(d / "identity"),
            "--data", str(d / "data.npz"), "--state", str(layout.device_state(i)), "--miner-index", str(miner_index),
            "--backend", "portable"]  # fmt: skip


class Campaign:
    def __init__(self, out: Path, seed: int):
        self.layout = Layout(out)
        self.fed = Federation(self.layout)
        self.seed = seed
        self.rng = random.Random(seed)
        self.port = local_broker.free_port()
        self.args: dict[str, list[str]] = {}  # name -> arguments, the same on every restart
        self.lives: Counter = Counter()
        self.kills: list[dict] = []
        self.crashes: list[str] = []
        self.miner_keys: list[bytes] = []
        self.last_tip: str | None = None  # the miners' tip at the last kill
        self.started, self.started_ms = time.monotonic(), now_ms()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    def at(self, ms: int) -> float:
        return round((ms - self.started_ms) / 1000, 1)

    # --- the federation ---
    def setup(self) -> None:
        layout, seed = self.layout, self.seed
        device_data, _ = shards(load("digits", seed), DEVICES, "iid", seed)
        miner_ids = [Identity.from_seed(b"chaos-%d-miner-%d" % (seed, i)) for i in range(MINERS)]
        for i, identity in enumerate(miner_ids):
            identity.save(layout.miner(i) / "identity")
        self.miner_keys = [m.public.sign_pk for m in miner_ids]
        task = init_task(
            layout.task.path,
            miners=[m.public for m in miner_ids],
            name="chaos-digits",
            seed=seed,
            training=TrainingParams(5, 16, 0.1),
            rounds=RoundRules(DEVICES, MAX_WAIT_MS),
            initial_hashes=2_000_000,
            target_interval_ms=3000,
        )
        url = f"mqtt://127.0.0.1:{self.port}"
        for i, identity in enumerate(miner_ids):
            enroll_miner(layout.task.path, identity.public, broker_url=url, out=layout.miner(i))
            self.args[f"miner{i}"] = [*miner_args(layout, i), "--verbose"]
        for i, (x, y) in enumerate(device_data):
            d = layout.device(i)
            identity = Identity.from_seed(b"chaos-%d-device-%d" % (seed, i))
            identity.save(d / "identity")
            np.savez(d / "data.npz", x=x, y=y)
            enroll_device(layout.task.path, identity.public, broker_url=url, out=d / "bundle", quota=1000, name=f"d{i}")
            self.args[f"device{i}"] = [*device_args(layout, i, i % MINERS), "--verbose"]
        self.start("broker")
        for name in self.args:
            self.start(name)
        self.say(f"task {task.id.hex()[:16]}: {MINERS} miners, {DEVICES} devices, mosquitto on 127.0.0.1:{self.port}")
        self.say(f"files and logs in {layout.out}")

    def proc(self, name: str) -> Process | None:
        return next((p for p in self.fed.processes if p.name == name), None)

    def start(self, name: str, env: dict[str, str] | None = None) -> None:
        """Start (or restart) one node or the broker; a node's earlier logs are kept as NAME.lifeN.log."""
        self.lives[name] += 1
        if name == "broker":
            for _ in range(10):  # the port is ours; a restart only has to wait for the old socket to go
                try:
                    self.fed.broker, _ = local_broker.start(self.layout.broker, self.layout.task.broker, port=self.port)
                    return
                except (RuntimeError, TimeoutError) as exc:
                    self.say(f"mosquitto did not start ({str(exc)[-120:]}); trying again")
                    time.sleep(1)
            raise RuntimeError(f"mosquitto would not start on port {self.port}")
        old = self.proc(name)
        if old is not None:
            self.fed.processes.remove(old)
            old.log.rename(old.log.with_name(f"{name}.life{self.lives[name] - 1}.log"))
        self.fed.spawn(name, self.args[name], env)

    def kill(self, name: str) -> None:
        popen = self.fed.broker if name == "broker" else self.proc(name).popen
        popen.kill()  # SIGKILL
        popen.wait()

    def stop(self, prefix: str) -> None:
        """SIGTERM every running node whose name starts with `prefix` (the emulator's stop, on a subset)."""
        Federation(self.layout, [p for p in self.fed.processes if p.name.startswith(prefix)]).stop()

    def restart_crashed(self) -> None:
        """A process that exited without being killed here is a finding: record it, start it again."""
        dead = [p.name for p in self.fed.processes if p.popen.poll() is not None]
        if self.fed.broker.poll() is not None:
            dead.append("broker")
        for name in dead:
            self.crashes.append(name)
            self.say(f"CRASH: {name} exited on its own; restarting it")
            self.start(name)

    # --- what the nodes wrote ---
    def audit(self) -> Audit:
        """What every miner admitted and refused (its audit tables), over every miner."""
        audit = Audit()
        for i in range(MINERS):
            try:
                audit.add(i, *read_audit(self.layout.miner_db(i)))
            except (sqlite3.Error, OSError):
                continue  # not created yet
        return audit

    def delivered(self) -> dict[bytes, dict]:
        """Every update a device got a PUBACK for: digest -> device, base, ms (the first acknowledgement)."""
        out: dict[bytes, dict] = {}
        for i in range(DEVICES):
            for e in DeliveryLog(self.layout.device_state(i)).read():
                out.setdefault(
                    bytes.fromhex(e["digest"]), {"device": i, "base": bytes.fromhex(e["base"]), "ms": e["ms"]}
                )
        return out

    def unaccounted(self, since_ms: int) -> list[bytes]:
        """Delivered, neither admitted nor refused yet, and younger than ACCOUNT_S (counted from `since_ms`)."""
        now = now_ms()
        return [d for d, e in self.unhandled().items() if now - max(e["ms"], since_ms) < ACCOUNT_S * 1000]

    def unhandled(self) -> dict[bytes, dict]:
        """Updates the broker acknowledged that no miner has admitted or refused yet."""
        audit = self.audit()
        return {d: e for d, e in self.delivered().items() if not audit.handled(d)}

    # --- the campaign ---
    def wait_round(self, last_tip: str | None, until: float) -> tuple[str | None, int, int]:
        """A round in progress on a tip other than `last_tip`: (tip, height, updates admitted on it)."""
        tip, height, pooled = None, -1, 0
        while time.monotonic() < until:
            statuses = [s for s in (self.layout.miner_status(i) for i in range(MINERS)) if s]
            best = max(statuses, key=lambda s: s.tip_height, default=None)
            if best and best.tip != last_tip:
                tip, height = best.tip, best.tip_height
                pooled = sum(a["base"].hex() == tip for a in self.audit().admitted.values())
                if pooled:
                    return tip, height, pooled
            time.sleep(POLL_S)
        return tip, height, 0

    def run_kills(self, kills: int, deadline: float) -> None:
        first = True
        for n in range(1, kills + 1):
            if time.monotonic() >= deadline:
                self.say(f"out of time after {n - 1} kills")
                return
            wait = FIRST_ROUND_S if first else ROUND_WAIT_S
            tip, height, pooled = self.wait_round(self.last_tip, min(deadline, time.monotonic() + wait))
            first = False
            where = f"round on height {height}, {pooled} updates admitted" if pooled else "NO round in progress"
            if n % IN_HANDLER_EVERY == 0:
                self.kill_in_handler(n, kills, f"miner{self.rng.randrange(MINERS)}", deadline)
            else:
                time.sleep(self.rng.uniform(0, 0.5))  # into the round
                kind = self.rng.choice(["miner", "broker", "device"])
                size = MINERS if kind == "miner" else DEVICES
                victim = kind if kind == "broker" else f"{kind}{self.rng.randrange(size)}"
                pause = self.rng.uniform(0.5, 3.0)
                self.kill(victim)
                ms = now_ms()
                time.sleep(pause)
                self.start(victim)
                self.kills.append(
                    {"n": n, "victim": victim, "t": self.at(ms), "ms": ms, "height": height, "pooled": pooled}
                )
                self.say(f"kill {n}/{kills}: SIGKILL {victim} ({where}); restarted after {pause:.1f}s")
            self.restart_crashed()
            self.last_tip = tip

    def kill_in_handler(self, n: int, kills: int, victim: str, deadline: float) -> None:
        """SIGKILL `victim` (a miner) between the broker's acknowledgement of an update and its pool
        commit: restart it holding every device update in its handler, wait until it holds one and an
        update the broker acknowledged is handled by no miner (the next round's, queued behind the
        held one), let a few more queue up, SIGKILL it, restart it normally."""
        self.kill(victim)
        self.start(victim, env={HOLD_UPDATE_ENV: str(HOLD_MS)})
        log = self.proc(victim).log
        until = min(deadline, time.monotonic() + ROUND_WAIT_S)
        held, waiting = False, []
        while not (held and waiting) and time.monotonic() < until:
            time.sleep(POLL_S)
            held = HELD in log.read_text(errors="replace")
            waiting = self.unhandled()
        time.sleep(self.rng.uniform(0.2, 1.0))  # more updates arrive behind the held one
        waiting = self.unhandled()
        self.kill(victim)
        ms = now_ms()
        self.start(victim)
        self.kills.append(
            {"n": n, "victim": victim, "t": self.at(ms), "ms": ms, "in_handler": True, "held": held,
             "acknowledged_unhandled": len(waiting)}
        )  # fmt: skip
        what = f"holding an update, {len(waiting)} acknowledged and unhandled" if held else "NOTHING held in time"
        self.say(f"kill {n}/{kills}: SIGKILL {victim} in its update handler ({what}); restarted")

    def db_tips(self) -> list[bytes | None]:
        """Every node's tip as its chain database holds it now: the miners', then the devices'."""
        paths = [self.layout.miner_db(i) for i in range(MINERS)]
        paths += [self.layout.device_state(i) / CHAIN_FILE for i in range(DEVICES)]
        tips = []
        for path in paths:
            try:
                with StoredChain(path) as stored:
                    tips.append(stored.meta().get("tip"))
            except (sqlite3.Error, OSError):
                tips.append(None)
        return tips

    def settle(self, since_ms: int, until: float) -> bool:
        """Freeze the devices (SIGSTOP) at a moment every node has the same tip, then stop the miners
        once every delivered update has reached one (ACCOUNT_S at most, counted from `since_ms`) and no
        block can come before they are gone: the round is not full and its wait is not nearly over.
        The devices then get SIGTERM (and SIGCONT): they hold the miners' final tip. False on timeout."""
        devices = [self.proc(f"device{i}").popen for i in range(DEVICES)]
        failed = bytes.fromhex(self.last_tip) if self.last_tip else None  # one block after the last kill, at least
        while time.monotonic() < until:
            tips = self.db_tips()  # a round fills within ~0.1 s of its tip: look often, and once per tip
            if None in tips or len(set(tips)) != 1 or tips[0] == failed:
                time.sleep(0.01)
                continue
            for d in devices:
                d.send_signal(signal.SIGSTOP)
            if self.quiet(tips[0].hex(), since_ms, until):
                self.stop("miner")
                if set(self.db_tips()[:MINERS]) == {tips[0]}:
                    break
                self.say("a block came while the miners stopped; again")
                for i in range(MINERS):
                    self.start(f"miner{i}")
            failed = tips[0]
            for d in devices:
                d.send_signal(signal.SIGCONT)
        else:
            return False
        for d in devices:
            d.send_signal(signal.SIGTERM)
            d.send_signal(signal.SIGCONT)
        self.stop("device")
        return True

    def quiet(self, tip: str, since_ms: int, until: float) -> bool:
        """Devices frozen, all nodes on `tip`: wait for delivered updates to reach a miner; then whether the
        miners may stop now (nobody moved on, the round on `tip` is not full, its wait has > 1.5 s left)."""
        deadline = min(until, time.monotonic() + ACCOUNT_S)
        while self.unaccounted(since_ms) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        on_tip = [a for a in self.audit().admitted.values() if a["base"].hex() == tip]
        first = min((min(a["by"].values()) for a in on_tip), default=now_ms())
        moved = {t.hex() if t else None for t in self.db_tips()} != {tip}
        full = len({a["device"] for a in on_tip}) >= DEVICES
        late = now_ms() - first >= MAX_WAIT_MS - 1500
        checks = {"a node moved on": moved, "the round is full": full, "the round's wait is nearly over": late}
        why = [w for w, bad in checks.items() if bad] + ["updates on their way"] * bool(self.unaccounted(since_ms))
        self.say(f"settle: all nodes on {tip[:16]}, devices frozen; {'; '.join(why) or 'stopping the miners'}")
        return not why

    # --- the report ---
    def report(self, settled: bool) -> tuple[dict, int]:
        delivered, audit = self.delivered(), self.audit()
        verify = {}
        for name, path in [(f"m{i}", self.layout.miner_db(i)) for i in range(MINERS)] + [
            (f"d{i}", self.layout.device_state(i) / CHAIN_FILE) for i in range(DEVICES)
        ]:
            r = verify_database(path)
            verify[name] = {"ok": r.ok, "blocks": r.blocks, "failure": str(r.failure) if r.failure else None}
            with StoredChain(path) as stored:
                verify[name]["tip"] = stored.meta()["tip"].hex()
        miner_tips = {verify[f"m{i}"]["tip"] for i in range(MINERS)}
        device_tips = {verify[f"d{i}"]["tip"] for i in range(DEVICES)}
        converged = len(miner_tips) == 1 and device_tips == miner_tips
        stores = [ChainStore(self.layout.miner_db(i)) for i in range(MINERS)]
        store = max(stores, key=lambda s: (s.tip.cumwork, s.tip.header.height))
        fates = account(delivered, audit, store, self.miner_keys)
        around = (stores, self.kills, self.started_ms)
        summary = {
            **{k: v for k, v in fates.items() if not k.endswith("_digests")},
            "silent_updates": [describe(d, delivered[d], *around) for d in fates["silent_digests"]],
            "lost_updates": [describe(d, delivered[d], *around) for d in fates["lost_digests"]],
            "settled": settled,
            "converged": converged,
            "miner_tips": sorted(t[:16] for t in miner_tips),
            "device_tips": sorted(t[:16] for t in device_tips),
            "verify": verify,
            "kills": self.kills,
            **kill_summary(self.kills),
            "crashes": self.crashes,
            "seconds": round(time.monotonic() - self.started, 1),
        }
        for store in stores:
            store.close()
        ok = not fates["silent"] and not fates["lost"] and converged and all(v["ok"] for v in verify.values())
        return summary, 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="how many SIGKILLs (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="victims, pauses, identities and data split")
    parser.add_argument("--max-seconds", type=float, default=600, help="bound on the whole run (default 600)")
    parser.add_argument("--out", type=Path, help="a new directory for the run (default: a fresh temporary one)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="blockfl-chaos-"))
    if out.exists() and any(out.iterdir()):
        parser.error(f"{out} is not empty")
    campaign = Campaign(out, args.seed)
    end = campaign.started + args.max_seconds
    try:
        campaign.setup()
        campaign.run_kills(args.kills, end - min(SETTLE_S, args.max_seconds / 3))
        settled = campaign.settle(now_ms(), end)
        campaign.say("stopping everything (SIGTERM)")
        campaign.stop("")  # whatever still runs (everything, if settling timed out)
        local_broker.stop(campaign.fed.broker)
        summary, status = campaign.report(settled)
    except KeyboardInterrupt:
        print("interrupted: stopping every process", flush=True)
        return 130
    finally:
        campaign.fed.stop()
    (out / "chaos.json").write_text(json.dumps(summary, indent=2))
    print_summary(summary)
    print(f"report: {out / 'chaos.json'}; exit status {status}")
    return status


if __name__ == "__main__":
    sys.exit(main())
