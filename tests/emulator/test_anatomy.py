"""The round anatomy: a real emulation's rows hold together, and the critical path is followed
through gossip on hand-written timelines."""

from __future__ import annotations

import json

import pytest

from coordinator.cli import main
from coordinator.emulator.anatomy import PHASES, _bytes, _Log, _timing
from coordinator.emulator.layout import Layout
from coordinator.miner.pool import read_audit
from edge_sdk.node.status import Timeline, miner_status_path, timeline_path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("anatomy") / "run"
    argv = ["emulate", "--out", str(out), "--devices", "4", "--miners", "2", "--rounds", "2", "--seed", "3",
            "--max-wait-ms", "3000", "--initial-hashes", "20000", "--timeout", "120"]  # fmt: skip
    assert main(argv) == 0
    return out, json.loads((out / "report.json").read_text())


def test_every_round_has_non_negative_phases_within_its_wall_time(run):
    out, report = run
    rows = report["anatomy"]["rounds"]
    assert [r["height"] for r in rows] == [r["height"] for r in report["rounds"]] == [1, 2]
    for row in rows:
        assert "missing" not in row, row
        phases = row["phases_ms"]
        assert set(phases) == set(PHASES)
        assert all(v >= 0 for v in phases.values()), phases
        assert all(v >= 0 for v in row["detail_ms"].values()), row["detail_ms"]
        assert phases["training"] > 0  # real training on the critical device
        assert sum(phases.values()) <= row["wall_ms"]
        assert row["wall_ms"] - sum(phases.values()) == row["detail_ms"]["before_training"]
        assert row["critical"]["devices_seen"] == 4
    medians = report["anatomy"]["medians"]
    assert medians["rounds"] == 2 and 0 <= medians["wall_minus_pow_ms"] <= medians["wall_ms"]
    assert (out / "round_anatomy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Round anatomy" in (out / "summary.md").read_text()


def test_the_winner_is_the_blocks_miner_and_its_times_match_the_pool_audit(run):
    out, report = run
    layout = Layout(out)
    names = {m["node"]: k for k, m in report["miners"].items()}
    for row, block in zip(report["anatomy"]["rounds"], report["rounds"], strict=True):
        assert row["critical"]["winner"] == names[block["miner_id"]]
    for i in range(2):  # every pooled mark is an update the pool's audit trail admitted, at the same moment
        admitted = {digest.hex(): ms for digest, _, _, ms in read_audit(layout.miner_db(i))[0]}
        timeline = Timeline(timeline_path(miner_status_path(layout.miner_db(i)))).entries()
        pooled = [e for e in timeline if e["event"] == "pooled"]
        assert pooled and all(0 <= e["ms"] - admitted[e["digest"]] <= 500 for e in pooled)


def test_bytes_per_round_cover_at_least_the_block_and_the_update(run):
    _, report = run
    for row, block in zip(report["anatomy"]["rounds"], report["rounds"], strict=True):
        b = row["bytes"]
        assert b["nodes_counted"] == b["nodes"] == 6
        assert b["device_down"] >= block["block_bytes"]  # every device downloads the block at least once
        assert b["device_up"] >= block["update_bytes"] / block["updates"]  # and uploads its update
        assert b["broker"] >= 4 * block["block_bytes"] + block["update_bytes"]  # 4 devices down, their updates up


def _write(path, entries):
    for e in entries:
        Timeline(path).add(e)
    return _Log(path.stem, path)


def test_the_critical_path_follows_the_last_pooled_update_through_gossip(tmp_path):
    """m0 wins; d1's update reached m1 first and m0 by gossip last: the gossip hop is on the path."""
    block, base, u0, u1 = "bb", "aa", "d0d0", "d1d1"
    m0 = _write(tmp_path / "m0", [
        {"event": "block", "ms": 985, "block": base, "received": 984, "bytes_in": 400, "bytes_out": 20},
        {"event": "pooled", "ms": 1030, "digest": u0, "via": "device", "received": 1025},
        {"event": "pooled", "ms": 1080, "digest": u1, "via": "gossip", "received": 1075},
        {"event": "block", "ms": 1200, "block": block, "received": 1190, "bytes_in": 900, "bytes_out": 50},
        {"event": "mined", "ms": 1210, "block": block, "found": 1190, "round_started": 1030, "ready": 1081,
         "aggregated": 1083, "ready_by": "min_updates", "bytes_in": 900, "bytes_out": 1500},
    ])  # fmt: skip
    m1 = _write(tmp_path / "m1", [
        {"event": "pooled", "ms": 1060, "digest": u1, "via": "device", "received": 1052},
        {"event": "block", "ms": 1230, "block": block, "received": 1220, "bytes_in": 2000, "bytes_out": 300},
    ])  # fmt: skip
    devices = [
        _write(tmp_path / f"d{i}", [
            {"event": "block", "ms": 990, "block": base, "received": 980, "bytes_in": 100, "bytes_out": 0},
            {"event": "train", "ms": 992 + i, "base": base, "height": 1},
            {"event": "trained", "ms": 1010 + 30 * i, "base": base, "digest": [u0, u1][i]},
            {"event": "sent", "ms": 1012 + 30 * i, "digest": [u0, u1][i]},
            {"event": "block", "ms": 1250 + 20 * i, "block": block, "received": 1230 + 20 * i,
             "bytes_in": 1100 + i, "bytes_out": 200},
        ])
        for i in range(2)
    ]  # fmt: skip
    row = _timing(block, [u0, u1], [m0, m1], devices, encrypted=False)
    assert row["critical"] == {"device": "d1", "first_miner": "m1", "winner": "m0", "via_gossip": True,
                               "ready_by": "min_updates", "devices_seen": 2}  # fmt: skip
    assert row["phases_ms"] == {"training": 1040 - 993, "upload_admission": 1060 - 1040, "gossip": 20,
                                "pool_wait": 1, "aggregation": 2, "proof_of_work": 107,
                                "propagation": 1240 - 1190, "verification": 20}  # fmt: skip
    assert row["wall_ms"] == 1260 - 990 and row["detail_ms"]["before_training"] == 3
    assert row["detail_ms"]["transit"] == 1052 - 1042 and row["detail_ms"]["seal_and_publish"] == 20
    traffic = _bytes(block, base, [m0, m1], devices)
    assert traffic["device_down"] == 1000.5 and traffic["device_up"] == 200
    # the winner's boundary is after it published the block (out 1500, not 50); m1 never accepted the base
    assert traffic["nodes_counted"] == 3 and traffic["broker"] == (1000 + 200) + (1001 + 200) + (500 + 1480)
