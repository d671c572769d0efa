"""Issue 17 for real (Mosquitto, miner and device processes, SIGKILL): an update the broker
acknowledged survives its miner's death between the acknowledgement and the pool commit, and a
device whose state files were torn starts, reports them and takes part in the next round."""

import json
import sqlite3

import numpy as np
import pytest
from test_federation import bed_factory, tip_of_miner  # noqa: F401 (bed_factory is a fixture)

from coordinator.miner.faults import HOLD_UPDATE_ENV
from coordinator.miner.pool import read_audit
from coordinator.tools.chainverify import verify_database
from edge_sdk.chain.store import ChainStore
from edge_sdk.clock import now_ms
from edge_sdk.node.status import DeliveryLog
from edge_sdk.protocol import codec
from edge_sdk.protocol.block import make_update

pytestmark = pytest.mark.timeout(240)


def acknowledged(bed, i):
    """Digests of device i's updates the broker acknowledged (its delivered.jsonl)."""
    return {bytes.fromhex(e["digest"]) for e in DeliveryLog(bed.root / f"d{i}" / "state").read()}


def outcomes(bed, miners):
    """Digests some miner admitted or refused (the audit tables of coordinator/miner/pool.py)."""
    seen = set()
    for i in range(miners):
        admitted, refused = read_audit(bed.root / f"m{i}" / "chain.db")
        seen |= {row[0] for row in admitted} | {row[0] for row in refused}
    return seen


def signers(bed, miner, since_ms=0):
    """Who signed the updates on miner `miner`'s best chain, of those signed at `since_ms` or later."""
    store = ChainStore(bed.root / f"m{miner}" / "chain.db")
    try:
        updates = [
            codec.decode(u) for h in store.best_chain()[1:] for u in codec.decode(store.raw_block(h.hash))[3]["updates"]
        ]
        return {u[2] for u in updates if u[3]["ts"] >= since_ms}
    finally:
        store.close()


def test_updates_acknowledged_to_a_miner_killed_before_pooling_them_are_accepted_after_its_restart(bed_factory):  # noqa: F811
    """The issue's reproduction: 2 miners, 3 devices all on m0; m0 holds the first update in its
    handler (a fault-injection knob) while the others queue behind it, and is SIGKILLed once the
    broker has acknowledged all three; before the fix they were gone and no block came again."""
    bed = bed_factory(miners=2, devices=3, max_wait_ms=3000)
    bed.start_miner(0, env={HOLD_UPDATE_ENV: "120000"})
    bed.start_miner(1)
    online = lambda i: bed.metrics(i).get("counters", {}).get("connects")  # else devices would take the other
    bed.wait(lambda: online(0) and online(1), 30, "both miners online")
    for i in range(3):
        bed.start_device(i, miner_index=0)
    held = lambda: "fault injection: holding an update" in (bed.root / "m0.log").read_text()
    acked = lambda: set().union(*(acknowledged(bed, i) for i in range(3)))
    bed.wait(lambda: held() and all(acknowledged(bed, i) for i in range(3)), 90, "three acknowledged updates")
    sent = acked()
    assert not sent & outcomes(bed, 2)  # acknowledged to the devices, pooled or refused by no miner
    bed.kill("m0")
    bed.start_miner(0)
    bed.wait(lambda: acked() <= outcomes(bed, 2), 60, "every acknowledged update accepted or refused")
    bed.wait(lambda: min(tip_of_miner(bed, 0), tip_of_miner(bed, 1)) >= 2, 90, "blocks again, on both miners")
    assert not any("duplicate_device" in bed.metrics(i)["rejections"] for i in range(2))  # sent again, not re-signed
    bed.close()
    for i in range(2):
        report = verify_database(bed.root / f"m{i}" / "chain.db")
        assert report.ok, report.failure
    admitted = {row[0] for i in range(2) for row in read_audit(bed.root / f"m{i}" / "chain.db")[0]}
    assert sent <= admitted  # the three held ones were pooled, not refused
    devices = {d.public.sign_pk for d in bed.device_ids}
    assert signers(bed, 0) == devices


def tear(path, keep):
    """What a kill between open and write (or a card losing a page) leaves: the first `keep` of the bytes."""
    data = path.read_bytes() if path.exists() else b""
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_device_with_torn_state_files_starts_reports_them_and_takes_part_in_the_next_round(bed_factory):  # noqa: F811
    bed = bed_factory(miners=1, devices=2, max_wait_ms=2500)
    bed.start_miner(0)
    for i in range(2):
        bed.start_device(i)
    bed.wait(lambda: all(bed.device_status(i).get("tip_height", 0) >= 1 for i in range(2)), 90, "the first round")
    for i in range(2):
        bed.kill(f"d{i}")
    d0, d1 = bed.root / "d0" / "state", bed.root / "d1" / "state"
    (d0 / "outbox.bin").write_bytes(b"")  # empty: the crash loop of the issue
    (d0 / "signed_for.bin").write_bytes(b"")
    (d0 / "status.json").write_bytes(b"")
    for log in ("model_hashes.jsonl", "timeline.jsonl", "delivered.jsonl"):
        with open(d0 / log, "a") as f:
            f.write('{"height": 9, "blo')  # a line torn mid-append
    cert = (bed.root / "d1" / "bundle" / "cert.bin").read_bytes()
    zeros = {name: np.zeros(shape, np.float32) for name, shape in bed.task.shapes.items()}
    update = make_update(bed.device_ids[1], bed.task, cert, bytes(32), 60, zeros, now_ms())
    (d1 / "outbox.bin").write_bytes(update[: len(update) // 2])  # truncated mid-update
    tear(d1 / "status.json", 0.5)
    with sqlite3.connect(d1 / "chain.db") as db:  # everything into the main file, then cut it
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    tear(d1 / "chain.db", 0.5)
    restart = now_ms()
    for i in range(2):
        bed.start_device(i)
    devices = {d.public.sign_pk for d in bed.device_ids}
    bed.wait(
        lambda: signers(bed, 0, restart) == devices, 90, "blocks with an update each device signed after its restart"
    )
    assert "duplicate_device" not in bed.metrics(0)["rejections"]  # recovering, no device signed twice on a base
    journals = {"model_hashes.jsonl", "timeline.jsonl", "delivered.jsonl"}
    expected = {
        "d0": {"outbox.bin", "signed_for.bin", "status.json", *journals},
        "d1": {"outbox.bin", "status.json", "chain.db"},
    }
    for name, files in expected.items():
        state = bed.root / name / "state"
        assert {p.name.removesuffix(".damaged") for p in state.glob("*.damaged")} == files, name
        reports = [json.loads(line) for line in (bed.root / f"{name}.log").read_text().splitlines() if '"file"' in line]
        reported = {r["file"].rsplit("/", 1)[-1] for r in reports if r["msg"] == "damaged state file set aside"}
        assert reported == files, name
        assert "Traceback" not in (bed.root / f"{name}.log").read_text()
    for log in journals:  # every line whole again
        lines = (d0 / log).read_text().splitlines()
        assert lines and all(json.loads(line) for line in lines), log
