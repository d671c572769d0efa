"""Conv nets in a federation: a 1-D conv net with BatchNormalization and dropout trains on sensor
windows across devices; its running statistics (buffers) travel in every update and block model
like the parameters, and every node derives the same model from each block."""

import json
import subprocess
import sys

import numpy as np

from edge_sdk.chain.store import ChainStore
from edge_sdk.protocol.fixedpoint import to_float


def sensor_windows(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Three noisy sine channels of 32 steps; the class is the frequency (1, 2, 3 or 5 cycles)."""
    y = rng.integers(0, 4, n)
    t = np.arange(32) / 32
    phase = rng.uniform(0, 2 * np.pi, (n, 3, 1))
    amplitude = rng.uniform(0.5, 2.0, (n, 3, 1))
    x = amplitude * np.sin(2 * np.pi * np.array([1, 2, 3, 5])[y][:, None, None] * t + phase)
    return (x + rng.normal(0, 0.3, x.shape)).reshape(n, -1).astype(np.float32), y


def test_a_batchnorm_conv_net_federates_and_its_running_statistics_are_averaged(tmp_path):
    x, y = sensor_windows(800, np.random.default_rng(0))
    np.savez(tmp_path / "windows.npz", x=x, y=y)
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "emulate", "--model", "cnn1d:3x32-4", "--data",
         str(tmp_path / "windows.npz"), "--initial-hashes", "20000", "--devices", "4", "--miners", "2",
         "--rounds", "2", "--seed", "1", "--max-wait-ms", "4000", "--out", str(out)],
        capture_output=True, text=True, timeout=200,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["ok"] and report["model_hash_agreement"]["ok"]
    assert all(v["ok"] for v in report["chain_verify"].values())
    assert report["rounds"][-1]["accuracy"] > report["initial"]["accuracy"] + 0.3
    store = ChainStore(out / "miners" / "m0" / "chain.db")
    try:
        model = to_float(store.tip.model, store.task.chain.frac_bits)
        assert set(store.task.shapes) >= {"bn0.running_mean", "bn0.running_var"}
    finally:
        store.close()
    # moved from their initial zeros and ones by the averaged updates (zero-mean windows and a
    # convolution without bias keep the mean small)
    assert np.count_nonzero(model["bn0.running_mean"]) == 16
    assert np.abs(model["bn0.running_var"] - 1).min() > 0.05, model["bn0.running_var"]
