"""Device-side privacy: DP clipping and noise, and the sealed Paillier private key."""
from __future__ import annotations

import secrets

import numpy as np

from . import codec, envelope


def clip_and_noise(delta: dict[str, np.ndarray], clip: float, noise_multiplier: float, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """Scale the whole update to L2 norm <= clip, then add N(0, (noise_multiplier * clip)^2) per value.

    The noise is drawn from the OS's entropy: a predictable seed would undo the privacy.
    """
    rng = rng or np.random.default_rng(secrets.randbits(128))
    norm = float(np.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in delta.values())))
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    sigma = noise_multiplier * clip
    return {name: (v * scale + rng.normal(0.0, sigma, v.shape)).astype(np.float32) for name, v in delta.items()}


def seal_private_key(private_key, device_box_pk: bytes) -> bytes:
    """The task's Paillier private key, readable only by one device."""
    p, q = int(private_key.p), int(private_key.q)
    return envelope.seal(device_box_pk, codec.encode({"p": p.to_bytes((p.bit_length() + 7) // 8, "big"),
                                                      "q": q.to_bytes((q.bit_length() + 7) // 8, "big")}))


def open_private_key(sealed: bytes, box_key, n: int):
    from phe import paillier

    value = codec.decode(envelope.unseal(box_key, sealed))
    p, q = int.from_bytes(value["p"], "big"), int.from_bytes(value["q"], "big")
    if p * q != n:
        raise ValueError("the sealed Paillier key does not belong to this task")
    return paillier.PaillierPrivateKey(paillier.PaillierPublicKey(n), p, q)
