"""Differential-privacy accounting for `dp` modes, with Google's dp-accounting (RDP).

Every device clips its update to L2 norm C and adds N(0, (sigma C)^2) noise to each value, each
round: for that device's data, one round is a Gaussian mechanism with noise multiplier sigma, and
R rounds compose. Epsilon is reported for the chosen delta.
"""

from __future__ import annotations

import dp_accounting
from dp_accounting.rdp import RdpAccountant


def epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    if rounds == 0:
        return 0.0
    if noise_multiplier <= 0:
        return float("inf")
    accountant = RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(noise_multiplier), rounds)
    return float(accountant.get_epsilon(delta))


def noise_for(target_epsilon: float, delta: float, rounds: int) -> float:
    """The smallest noise multiplier whose epsilon after `rounds` rounds is <= target (bisection)."""
    if target_epsilon <= 0:
        raise ValueError("target epsilon must be > 0")
    low, high = 0.01, 1.0
    while epsilon(high, rounds, delta) > target_epsilon:
        high *= 2
        if high > 1e6:
            raise ValueError("no noise multiplier reaches that epsilon")
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if epsilon(mid, rounds, delta) > target_epsilon else (low, mid)
    return high
