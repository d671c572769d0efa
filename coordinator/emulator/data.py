"""Emulation data: scikit-learn's digits split among devices, iid or label-skewed (Dirichlet, non-iid)."""

from __future__ import annotations

import numpy as np


def parse(spec: str) -> tuple[str, float]:
    if spec == "iid":
        return "iid", 0.0
    kind, _, alpha = spec.partition(":")
    try:
        value = float(alpha)
    except ValueError:
        value = -1.0
    if kind != "dirichlet" or not value > 0:
        raise ValueError(f"partition {spec!r}: expected iid or dirichlet:ALPHA with ALPHA > 0")
    return kind, value


def partition(labels: np.ndarray, parts: int, spec: str, seed: int, min_size: int = 8) -> list[np.ndarray]:
    """Index arrays, one per device; every device gets at least `min_size` samples."""
    kind, alpha = parse(spec)
    rng = np.random.default_rng(seed)
    if len(labels) < parts * min_size:
        raise ValueError(f"{len(labels)} samples cannot give {parts} devices {min_size} each")
    if kind == "iid":
        return [np.sort(p) for p in np.array_split(rng.permutation(len(labels)), parts)]
    for _ in range(100):
        shares = [[] for _ in range(parts)]
        for cls in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == cls))
            cuts = (np.cumsum(rng.dirichlet([alpha] * parts)) * len(idx)).astype(int)[:-1]
            for part, chunk in zip(shares, np.split(idx, cuts), strict=True):
                part.extend(chunk.tolist())
        if min(len(s) for s in shares) >= min_size:
            return [np.sort(np.array(s, dtype=np.int64)) for s in shares]
    raise ValueError(f"dirichlet:{alpha} left a device with fewer than {min_size} samples 100 times; raise ALPHA")


def digits_shards(devices: int, spec: str, seed: int, test_size: float = 0.25):
    """scikit-learn's digits (ships with the package: no download), a stratified test split, and one
    training shard per device: ([(x, y) per device], (x_test, y_test))."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=test_size, random_state=seed, stratify=digits.target
    )
    parts = partition(y_train, devices, spec, seed)
    return [(x_train[p], y_train[p]) for p in parts], (x_test, y_test)
