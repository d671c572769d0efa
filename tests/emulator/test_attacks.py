"""The emulator's attacks: each kind's local update on a real trained delta, and one real
clean-vs-attacked emulation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from coordinator.cli import main
from coordinator.emulator.attacks import KINDS, NOISE_SIGMAS, SIGN_FLIP_FACTOR, AttackerDevice, pick_attackers
from coordinator.task.setup import enroll_device, init_task
from edge_sdk.node.bundle import Bundle
from edge_sdk.node.device import Device
from edge_sdk.protocol.fixedpoint import to_float
from edge_sdk.protocol.identity import Identity
from edge_sdk.protocol.task import TrainingParams

HEIGHT = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory, digits):
    """A real task (model package from coordinator.models), one enrolled device and its data."""
    tmp = tmp_path_factory.mktemp("attacks")
    miner = Identity.from_seed(b"attacks-miner")
    init_task(tmp / "task", miners=[miner.public], training=TrainingParams(1, 16, 0.1))
    identity = Identity.from_seed(b"attacks-device")
    enroll_device(tmp / "task", identity.public, broker_url="mqtt://127.0.0.1:1", out=tmp / "bundle", quota=500)
    x, _, y, _ = digits
    return tmp, identity, (x[:120], y[:120])


def _update(setup, kind=None, labels=None):
    """(delta, claimed samples, device) for the genesis model; the same identity, so the same shuffle."""
    tmp, identity, (x, y) = setup
    args = dict(bundle=Bundle(tmp / "bundle"), identity=identity, data=(x, y if labels is None else labels),
                state_dir=tmp / f"state-{kind}-{labels is not None}", backend="portable")  # fmt: skip
    device = AttackerDevice(kind=kind, **args) if kind else Device(**args)
    try:
        params = to_float(device.task.initial_model, device.task.chain.frac_bits)
        return *device.local_update(params, HEIGHT), device
    finally:
        device.store.close()


@pytest.fixture(scope="module")
def honest(setup):
    return _update(setup)


def _flat(delta: dict) -> np.ndarray:
    return np.concatenate([v.ravel() for v in delta.values()])


def test_scale_boosts_the_honest_delta_to_just_under_the_range_limit(setup, honest):
    delta, samples, device = _update(setup, "scale")
    limit = 2.0**device.task.chain.delta_bits
    peak = np.abs(_flat(delta)).max()
    assert peak < limit and peak == np.nextafter(np.float32(limit), np.float32(0))
    factor = peak / np.abs(_flat(honest[0])).max()
    assert factor > 10
    np.testing.assert_allclose(_flat(delta), _flat(honest[0]) * factor, rtol=1e-5, atol=1e-6)
    assert samples == honest[1]


def test_sign_flip_sends_minus_the_factor_times_the_honest_delta(setup, honest):
    delta, samples, _ = _update(setup, "sign-flip")
    np.testing.assert_allclose(_flat(delta), -SIGN_FLIP_FACTOR * _flat(honest[0]), rtol=1e-6)
    assert samples == honest[1]


def test_noise_is_untrained_gaussian_noise_inside_the_range(setup, honest):
    delta, samples, device = _update(setup, "noise")
    limit = 2.0**device.task.chain.delta_bits
    values = _flat(delta)
    assert np.abs(values).max() < limit
    assert abs(values.std() / (limit / NOISE_SIGMAS) - 1) < 0.05 and abs(values.mean()) < 0.5
    assert abs(np.corrcoef(values, _flat(honest[0]))[0, 1]) < 0.1  # unrelated to training
    assert samples == honest[1]


def test_label_flip_trains_honestly_on_flipped_labels(setup, honest):
    _, _, (x, y) = setup
    delta, samples, device = _update(setup, "label-flip")
    assert np.array_equal(device.y, 9 - y)
    flipped, _, _ = _update(setup, labels=9 - y)  # an honest device given the flipped labels
    np.testing.assert_array_equal(_flat(delta), _flat(flipped))
    assert not np.allclose(_flat(delta), _flat(honest[0]))
    assert samples == honest[1] == len(x)


def test_inflate_samples_trains_honestly_and_claims_the_whole_quota(setup, honest):
    delta, samples, device = _update(setup, "inflate-samples")
    np.testing.assert_array_equal(_flat(delta), _flat(honest[0]))
    assert samples == device.bundle.cert.quota == 500 > honest[1]


def test_attackers_are_a_seeded_fraction_with_at_least_one():
    assert pick_attackers(10, 0.3, seed=1) == pick_attackers(10, 0.3, seed=1)
    assert len(pick_attackers(10, 0.3, seed=1)) == 3 and len(pick_attackers(10, 0.01, seed=1)) == 1
    assert pick_attackers(10, 0.0, seed=1) == []
    assert {tuple(pick_attackers(10, 0.3, seed=s)) for s in range(5)} != {tuple(pick_attackers(10, 0.3, seed=0))}
    with pytest.raises(ValueError):
        pick_attackers(10, 1.5, seed=0)
    with pytest.raises(ValueError, match="attack"):
        AttackerDevice(kind="nonsense")
    assert len(KINDS) == 6  # scale, sign-flip, noise, label-flip, inflate-samples, overflow (Paillier)


def test_emulate_with_an_attack_reports_clean_and_attacked_side_by_side(tmp_path):
    out = tmp_path / "run"
    argv = ["emulate", "--out", str(out), "--devices", "4", "--miners", "2", "--rounds", "2", "--max-wait-ms", "3000",
            "--attack", "scale", "--attackers", "0.25", "--timeout", "120"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    attacked = json.loads((out / "attacked" / "report.json").read_text())
    assert report["ok"] and report["aggregation"]["rule"] == "fedavg"
    assert len(report["attack"]["attackers"]) == 1 and report["attack"]["attackers"] == attacked["attackers"]
    assert report["attack"]["attacker_ids"] == [attacked["device_ids"][d] for d in attacked["attackers"]]
    assert [r["height"] for r in report["rounds"]] == [1, 2]
    assert all(r["clean_accuracy"] is not None and r["attacked_accuracy"] is not None for r in report["rounds"])
    assert report["final"]["attacked"] < report["final"]["clean"]  # a boosted update dominates plain fedavg
    assert set(report["rewards"]["attacked"]) == {"attackers", "honest"}
    assert (out / "accuracy_clean_vs_attacked.png").stat().st_size > 0
    summary = (out / "summary.md").read_text()
    assert report["attack"]["attackers"][0] in summary
    assert all(r["attacked_excluded"] is None or isinstance(r["attacked_excluded"], list) for r in report["rounds"])
    assert (out / "clean" / "report.json").exists() and attacked["attackers"]
