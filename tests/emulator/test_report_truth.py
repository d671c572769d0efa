"""The report tells the truth: after its last round the emulator stops the miners mining and lets
them settle, and report.json's final tip, each round's block and model hash, forks and rewards are
what `blockfl chain verify` / `chain balances` derive from every miner's own database."""

import json
import subprocess
import sys

import pytest

from edge_sdk.chain.store import StoredChain
from edge_sdk.protocol.block import Block


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "coordinator.cli", *args], capture_output=True, text=True, timeout=120)


def best_chain(db) -> tuple[list[str], set[str]]:
    """(hashes of the best chain from height 1, hashes of every stored block but genesis)."""
    with StoredChain(db) as stored:
        tip = stored.meta()["tip"]
        rows = {row.hash: row for row in stored.blocks()}
    chain, at = [], tip
    while rows[at].height > 0:
        chain.append(at.hex())
        at = Block.parse(rows[at].raw, len(rows[at].raw)).header.prev_hash
    return chain[::-1], {h.hex() for h, row in rows.items() if row.height > 0}


@pytest.mark.parametrize("seed", [5, 6])
def test_the_report_describes_the_chain_every_miner_settled_on(tmp_path, seed):
    out = tmp_path / "r"
    args = ["--initial-hashes", "20000", "--devices", "4", "--miners", "3", "--rounds", "3", "--max-wait-ms", "3000"]
    result = cli("emulate", *args, "--seed", str(seed), "--out", str(out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    rounds = [r["hash"] for r in report["rounds"]]
    assert rounds[-1] == report["tip"] and len(rounds) >= 3
    assert all(r["model_hash"] for r in report["rounds"])
    assert not any(m["details"]["mining"] for m in report["miners"].values()), "miners still mining at the end"
    assert set(report["miner_tips"].values()) == {report["tip"]}
    assert report["genesis_retained"]  # published retained, as `blockfl coordinator publish` does
    every_block = set()
    for i in range(3):
        db = out / "miners" / f"m{i}" / "chain.db"
        assert cli("chain", "verify", str(db)).returncode == 0
        chain, stored = best_chain(db)
        assert chain == rounds, f"m{i}'s best chain differs from the report's"
        every_block |= stored
        printed = cli("chain", "balances", str(db)).stdout.split("\n")
        ledger = {line.split()[0]: int(line.split()[1]) for line in printed if line.strip()}
        assert ledger == report["rewards"], f"m{i}'s ledger differs from the report's rewards"
    assert report["forks"] == len(every_block - set(rounds))
