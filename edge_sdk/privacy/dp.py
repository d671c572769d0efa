"""Differential privacy on the device: clip the whole update, then add Gaussian noise."""

from __future__ import annotations

import secrets

import numpy as np


def clip_and_noise(
    delta: dict[str, np.ndarray], clip: float, noise_multiplier: float, rng: np.random.Generator | None = None
) -> dict[str, np.ndarray]:
    """Scale the whole update to L2 norm <= clip, then add N(0, (noise_multiplier * clip)^2) per value.

    The noise is drawn from the OS's entropy: a predictable seed would undo the privacy.
    """
    rng = rng or np.random.default_rng(secrets.randbits(128))
    norm = float(np.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in delta.values())))
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    sigma = noise_multiplier * clip
    return {name: (v * scale + rng.normal(0.0, sigma, v.shape)).astype(np.float32) for name, v in delta.items()}
