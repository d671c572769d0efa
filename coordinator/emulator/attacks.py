"""Poisoning attacks for the emulator: well-formed, signed updates with harmful contents.

An attacker holds a valid certificate and follows the protocol; only what it trains (or claims)
is malicious, so only the task's rules can stop it. Each kind overrides the one step
`Device.local_update` (`overflow`: `Device.encrypt`); the device then clips to the task's range
and signs as usual.
"""

from __future__ import annotations

import hashlib

import numpy as np

from edge_sdk.node.device import Device
from edge_sdk.privacy import paillier
from edge_sdk.protocol.packing import pack

KINDS = ("scale", "sign-flip", "noise", "label-flip", "inflate-samples", "overflow")
SIGN_FLIP_FACTOR = 4.0  # sign-flip sends -4x the honest delta: pulls the model back harder than one device pushes
NOISE_SIGMAS = 8  # noise has std 2^delta_bits / 8: the range limit is 8 standard deviations, so it is rarely clipped


def pick_attackers(devices: int, fraction: float, seed: int) -> list[int]:
    """Which device indexes attack: round(fraction * devices), at least one when fraction > 0, chosen by `seed`."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"attacker fraction {fraction}: expected a number in [0, 1]")
    if fraction == 0:
        return []
    count = min(devices, max(1, round(fraction * devices)))
    return sorted(int(i) for i in np.random.default_rng(seed).choice(devices, count, replace=False))


class AttackerDevice(Device):
    """A device whose local update is one of KINDS; everything else is the honest device's code."""

    def __init__(self, *, kind: str, **device_args):
        if kind not in KINDS:
            raise ValueError(f"attack {kind!r}: expected one of {', '.join(KINDS)}")
        super().__init__(**device_args)
        self.kind = kind
        if kind == "overflow" and not self.task.privacy.encrypted:
            raise ValueError("the overflow attack needs a Paillier mode (it breaks packing slots)")
        if kind == "label-flip":  # y -> C-1-y, every label wrong yet the class histogram looks plausible
            self.y = self.bundle.package.manifest["num_outputs"] - 1 - np.asarray(self.y)

    def local_update(self, params: dict, height: int) -> tuple[dict, int]:
        limit = 2.0**self.task.chain.delta_bits
        if self.kind == "noise":  # no training at all
            seed = hashlib.sha256(b"noise" + self.identity.public.sign_pk + height.to_bytes(8, "big")).digest()
            rng = np.random.default_rng(int.from_bytes(seed[:8], "big"))
            noise = {p: rng.normal(0.0, limit / NOISE_SIGMAS, v.shape).astype(np.float32) for p, v in params.items()}
            return noise, len(self.x)
        delta, samples = super().local_update(params, height)
        if self.kind == "scale":  # the largest update the range rule lets through, pointing the honest way
            top = np.nextafter(np.float32(limit), np.float32(0))
            peak = max(float(np.max(np.abs(v))) for v in delta.values())
            factor = top / peak if peak > 0 else 0.0
            return {p: np.clip(v * factor, -top, top).astype(np.float32) for p, v in delta.items()}, samples
        if self.kind == "sign-flip":
            return {p: (-SIGN_FLIP_FACTOR * v).astype(np.float32) for p, v in delta.items()}, samples
        if self.kind == "inflate-samples":  # the most its certificate allows: a bigger weight and reward
            return delta, self.bundle.cert.quota
        return delta, samples  # label-flip: honest training on flipped labels

    def encrypt(self, delta: dict, weight: int) -> list[bytes]:
        if self.kind != "overflow":
            return super().encrypt(delta, weight)
        # every slot filled to the top: no carry into a neighbour, but far beyond what weight * 2^p can make
        packing = self.task.privacy.packing
        values = sum(v.size for v in delta.values())
        slot_top = (1 << packing.slot_bits) - 1
        plaintexts = pack([slot_top] * values, packing)
        width = packing.ciphertext_bytes
        return [c.to_bytes(width, "big") for c in paillier.encrypt(plaintexts, packing.n, self.masks)]


def describe(kind: str, delta_bits: int) -> str:
    """One line for reports: what the attackers of `kind` send."""
    limit = 2.0**delta_bits
    return {
        "scale": f"the honest delta scaled so its largest |value| is just under 2^{delta_bits} = {limit:g}",
        "sign-flip": f"minus {SIGN_FLIP_FACTOR:g} times the honest delta",
        "noise": f"Gaussian noise of std {limit / NOISE_SIGMAS:g} (2^{delta_bits}/{NOISE_SIGMAS}), no training",
        "label-flip": "honest training on labels y -> C-1-y",
        "inflate-samples": "honest training, claiming the certificate's whole quota as its sample count",
        "overflow": "Paillier ciphertexts whose every slot holds its largest value, far above any honest slot",
    }[kind]
