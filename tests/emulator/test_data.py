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
