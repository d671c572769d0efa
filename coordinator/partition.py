"""Split a dataset among devices: iid, or label-skewed with a Dirichlet prior (non-iid)."""
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
            for part, chunk in zip(shares, np.split(idx, cuts)):
                part.extend(chunk.tolist())
        if min(len(s) for s in shares) >= min_size:
            return [np.sort(np.array(s, dtype=np.int64)) for s in shares]
    raise ValueError(f"dirichlet:{alpha} left a device with fewer than {min_size} samples 100 times; raise ALPHA")
