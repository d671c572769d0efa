import pathlib

import numpy as np
import pytest

from coordinator.emulator.data import parse, partition

LABELS = np.repeat(np.arange(10), 50)


def test_iid_splits_everything_once_in_near_equal_parts():
    parts = partition(LABELS, 7, "iid", seed=1)
    joined = np.sort(np.concatenate(parts))
    assert np.array_equal(joined, np.arange(len(LABELS)))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_dirichlet_skews_labels_more_as_alpha_shrinks():
    def skew(alpha):
        parts = partition(LABELS, 5, f"dirichlet:{alpha}", seed=3)
        assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(LABELS)))
        assert min(map(len, parts)) >= 8
        # mean share of each device's most common label
        return np.mean([np.bincount(LABELS[p], minlength=10).max() / len(p) for p in parts])

    assert skew(0.3) > skew(100.0) + 0.15


@pytest.mark.parametrize("spec", ["dirichlet", "dirichlet:0", "dirichlet:x", "noniid", "dirichlet:-1"])
def test_bad_partition_specs_are_refused(spec):
    with pytest.raises(ValueError, match="partition"):
        parse(spec)


def test_too_few_samples_is_refused():
    with pytest.raises(ValueError, match="cannot give"):
        partition(LABELS[:20], 5, "iid", seed=0)


def test_generated_data_looks_like_digits_and_repeats_by_seed():
    from coordinator.emulator.data import load, shards

    x, y = load("generated:2000", seed=3)
    assert x.shape == (2000, 64) and x.dtype == np.float32 and set(np.unique(y)) == set(range(10))
    assert np.allclose(x.mean(axis=0), 0, atol=1e-4) and np.allclose(x.std(axis=0), 1, atol=1e-3)
    again, _ = load("generated:2000", seed=3)
    assert np.array_equal(x, again)
    parts, (x_test, _) = shards((x, y), 40, "dirichlet:0.5", seed=3)
    assert len(parts) == 40 and min(len(py) for _, py in parts) >= 8 and len(x_test) == 500


@pytest.mark.parametrize("spec", ["generated:10", "generated:x", "data.csv"])
def test_bad_data_specs_are_refused(spec):
    from coordinator.emulator.data import load

    with pytest.raises(ValueError, match="expected"):
        load(spec, seed=0)


def test_a_users_npz_is_checked_with_a_reason(tmp_path):
    from coordinator.emulator.data import load

    good_x, good_y = np.random.default_rng(0).random((50, 4)), np.arange(50) % 3
    cases = {
        "missing y": ({"x": good_x}, "needs arrays x and y"),
        "1-D x": ({"x": good_x[:, 0], "y": good_y}, "2-D numeric"),
        "short y": ({"x": good_x, "y": good_y[:10]}, "one label per row"),
        "float labels": ({"x": good_x, "y": good_y + 0.5}, "integer class labels"),
        "negative labels": ({"x": good_x, "y": good_y - 1}, "integer class labels"),
        "nan": ({"x": np.where(good_x > 0.9, np.nan, good_x), "y": good_y}, "NaN"),
    }
    for name, (arrays, reason) in cases.items():
        path = tmp_path / f"{name.replace(' ', '-')}.npz"
        np.savez(path, **arrays)
        with pytest.raises(ValueError, match=reason):
            load(str(path), seed=0)
    torn = tmp_path / "torn.npz"
    torn.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ValueError, match="torn.npz"):
        load(str(torn), seed=0)
    np.savez(tmp_path / "ok.npz", x=good_x, y=good_y)
    x, y = load(str(tmp_path / "ok.npz"), seed=0)
    assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape == (50, 4)


def test_emulate_refuses_data_the_model_cannot_take(tmp_path, capsys):
    from coordinator.cli import main

    np.savez(tmp_path / "five.npz", x=np.random.default_rng(0).random((400, 5)), y=np.arange(400) % 10)
    code = main(["emulate", "--data", str(tmp_path / "five.npz"), "--devices", "2", "--initial-hashes", "1000",
                 "--out", str(tmp_path / "out")])  # fmt: skip
    assert code != 0
    assert "5 features per sample" in capsys.readouterr().err


def test_a_terminated_emulation_leaves_no_process_behind(tmp_path):
    """SIGTERM (kill, timeout) stops every miner, device and the broker, as Ctrl-C does."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    emulate = subprocess.Popen(
        [sys.executable, "-m", "coordinator.cli", "emulate", "--devices", "3", "--miners", "2", "--rounds", "50",
         "--initial-hashes", "20000", "--out", str(out)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    for line in emulate.stdout:
        if line.startswith("round 1/") or time.monotonic() > deadline:
            break
    emulate.send_signal(signal.SIGTERM)
    assert emulate.wait(timeout=60) == 130

    def leftovers():
        found = []
        for proc in pathlib.Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and str(out) in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(proc.name)
            except OSError:
                continue
        return found

    assert leftovers() == []
