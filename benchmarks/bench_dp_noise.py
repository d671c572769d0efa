"""The noise in one round's aggregate: local DP (`dp`) against distributed DP (`paillier+dp`), side
by side, measured through the real pipeline at the same epsilon.

Each of K devices clips a fixed delta to L2 norm C and adds its noise: `dp` adds the full
N(0, (sigma C)^2) per value and the aggregate is the sample-weighted mean (equal samples here);
`paillier+dp` adds sigma / sqrt(min_participants) of it, quantizes, packs, encrypts, and the
aggregate is opened by threshold decryption (2 of 3 shares) into the exact fixed-point mean.
The noise per value is the standard deviation of (aggregate - the noiseless mean of the clipped
deltas). With min_participants = K the ratio should be sqrt(K).

    .venv/bin/python benchmarks/bench_dp_noise.py [--devices 10 50] [--epsilon 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from coordinator.emulator.accountant import noise_for  # noqa: E402
from coordinator.task.dealer import deal  # noqa: E402
from edge_sdk.privacy import paillier, threshold  # noqa: E402
from edge_sdk.privacy.dp import clip_and_noise  # noqa: E402
from edge_sdk.protocol import packing as slots  # noqa: E402

VALUES = 2410  # mlp:64-32-10, the emulator's default model
FRAC_BITS = 24


def clipped(delta: np.ndarray, clip: float) -> np.ndarray:
    norm = float(np.linalg.norm(delta))
    return delta * min(1.0, clip / norm)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--epsilon", type=float, default=8.0)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--bits", type=int, default=1024, help="Paillier modulus (the noise does not depend on it)")
    args = parser.parse_args()
    sigma = noise_for(args.epsilon, args.delta, args.rounds)
    key, shares = deal(args.bits, 2, 3)
    rng = np.random.default_rng(0)
    print(f"epsilon {args.epsilon} at delta {args.delta} after {args.rounds} rounds: noise multiplier {sigma:.3f}")
    print(f"{VALUES} values per update, clip {args.clip}, equal sample counts")
    print("devices  dp noise/value  paillier+dp noise/value  ratio  sqrt(devices)")
    for k in args.devices:
        deltas = [clipped(rng.normal(0, 0.01, VALUES), args.clip) for _ in range(k)]
        clean = np.mean(deltas, axis=0)
        local = [clip_and_noise({"w": d}, args.clip, sigma)["w"].astype(np.float64) for d in deltas]
        local_noise = float(np.std(np.mean(local, axis=0) - clean))
        packing = slots.Packing(key.n, 16, 3, 1, 64)  # clip_exp 3: +-8 holds the noised values
        shares_noise = sigma / math.sqrt(k)  # min_participants = K: each device's share
        cts = []
        for d in deltas:
            noised = clip_and_noise({"w": d}, args.clip, shares_noise)
            cts.append(
                [int.from_bytes(c, "big") for c in paillier.encrypt_update(noised, 1, {"w": (VALUES,)}, packing)]
            )
        summed = paillier.aggregate(cts, packing)
        parts = {s.index: threshold.partial_decrypt(s, key, summed) for s in shares[:2]}
        sums = slots.checked_sums(threshold.combine(key, parts), VALUES, k, packing)
        mean = np.array(slots.mean_fixed(sums, k, packing, FRAC_BITS), dtype=np.float64) / 2**FRAC_BITS
        distributed_noise = float(np.std(mean - clean))
        print(
            f"{k:7d}  {local_noise:14.4f}  {distributed_noise:23.4f}  {local_noise / distributed_noise:5.2f}"
            f"  {math.sqrt(k):13.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
