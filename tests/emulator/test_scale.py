"""The emulator at scale's small end: light devices multiplexed in worker processes, against real
Mosquitto, miner processes and ONNX Runtime."""

import json
import subprocess
import sys

import pytest

from edge_sdk.chain.rules import validate_genesis


def emulate(out, *extra) -> tuple[dict, str]:
    args = ["--initial-hashes", "20000", "--miners", "2", "--seed", "4", "--max-wait-ms", "4000", "--out", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "emulate", *args, *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "report.json").read_text()), result.stdout


@pytest.mark.parametrize("verify", ["light", "full"])
def test_devices_in_worker_processes_agree_on_every_model_light_or_full(tmp_path, verify):
    report, stdout = emulate(tmp_path / "r", "--devices", "6", "--rounds", "2", "--verify", verify, "--processes", "2")
    assert report["ok"] and report["model_hash_agreement"]["ok"] and report["verify"] == verify
    assert "in 2 worker processes" in stdout and "devices online: 6/6" in stdout
    assert all(s["details"]["verify"] == verify for s in report["devices"].values())
    # the first round waited for everyone; a later one closes at --max-wait-ms with whoever was in time
    assert report["rounds"][0]["updates"] == 6 and all(r["updates"] >= 1 for r in report["rounds"])
    light_blocks = [s["counters"].get("light_blocks", 0) for s in report["devices"].values()]
    assert all(n >= 2 for n in light_blocks) if verify == "light" else not any(light_blocks)
    assert set(report["memory"]["peak_mb"]) >= {"worker0", "worker1", "miner0", "miner1", "broker"}


def test_a_light_devices_download_per_round_is_a_few_models_whatever_the_updates(tmp_path):
    """At 8 devices a full device downloads every update of every block; a light one about two models
    (the model travels as 64-bit fixed point) and the headers."""
    report, _ = emulate(tmp_path / "r", "--devices", "8", "--rounds", "3", "--verify", "light")
    _, task = validate_genesis((tmp_path / "r" / "task" / "genesis.block").read_bytes())
    model_bytes = 4 * sum(v.size for v in task.initial_model.values())  # float32
    for name, status in report["devices"].items():
        counters = status["counters"]  # (miners go on mining after the last round: count what was followed)
        per_block = counters["bytes_in"] / counters["light_blocks"]
        assert per_block <= 3 * model_bytes + 2048, (name, per_block, model_bytes)
