"""Packed Paillier versus phe's per-value encryption, side by side on one core.

A 10,000-value update, 2048-bit key, gmpy2. Per-value `encrypt` is timed on a sample and
extrapolated (the whole would take minutes). Packed encryption is timed twice: with the r^n
masks computed inline ("cold") and with masks precomputed, as a device does while idle (the
update path). Also: ciphertext bytes per value, aggregating 10 updates, and opening the aggregate:
with one private key (what devices did before threshold decryption, for scale) and by threshold
decryption, 2 of 3 shares, as the federation does it: each share holder's partial decryption and
its proof, every node's verification of one partial, and combining two into the exact sums.

    .venv/bin/python benchmarks/bench_paillier.py [--values 10000] [--sample 20]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from phe import paillier as phe  # noqa: E402

from coordinator.task.dealer import deal  # noqa: E402
from edge_sdk.privacy import paillier, threshold  # noqa: E402
from edge_sdk.protocol import packing as slots  # noqa: E402


def timed(fn, repeats=3):
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--values", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=20, help="per-value encryptions actually timed")
    parser.add_argument("--bits", type=int, default=2048)
    args = parser.parse_args()
    import gmpy2  # noqa: F401  (phe uses it when present; without it everything is ~10x slower)

    public, private = phe.generate_paillier_keypair(n_length=args.bits)
    dealt_s, (key, shares) = timed(lambda: deal(args.bits, 2, 3), repeats=1)
    rng = np.random.default_rng(0)
    shapes = {"w": (args.values,)}
    deltas = [{"w": rng.uniform(-1, 1, args.values).astype(np.float32)} for _ in range(10)]
    values = deltas[0]["w"]

    sample = [float(v) for v in values[: args.sample]]
    per_value_s, _ = timed(lambda: [public.encrypt(v) for v in sample], repeats=1)
    per_value_total = per_value_s / len(sample) * args.values
    per_value_bytes = (2 * public.n.bit_length() + 7) // 8

    print(f"{args.values} values, {args.bits}-bit Paillier (phe + gmpy2), one core")
    print(
        f"phe per-value encrypt: {per_value_s / len(sample) * 1000:.1f} ms/value on {len(sample)} values "
        f"-> {per_value_total:.1f} s "
        f"for {args.values} (extrapolated), {per_value_bytes} bytes/value"
    )
    configs = [
        ("16-bit values + 8 headroom bits (<= 241 samples per round)", slots.Packing(public.n, 16, 0, 15, 16)),
        (
            "16-bit values, headroom for 64 updates x 4096 samples (task default)",
            slots.Packing(public.n, 16, 0, 4096, 64),
        ),
    ]
    for name, packing in configs:
        packing.check()
        updates = [(int(rng.integers(1, packing.max_quota + 1)), d) for d in deltas]  # within the headroom's quota
        count = packing.ciphertext_count(args.values)
        cold_s, _ = timed(
            lambda updates=updates, packing=packing: paillier.encrypt_update(
                updates[0][1], updates[0][0], shapes, packing
            ),
            repeats=1,
        )
        masks = _Precomputed(packing.n, count * 3)
        online_s, _ = timed(
            lambda updates=updates, packing=packing, masks=masks: paillier.encrypt_update(
                updates[0][1], updates[0][0], shapes, packing, masks
            )
        )
        cts = [
            [
                int.from_bytes(c, "big")
                for c in paillier.encrypt_update(d, n, shapes, packing, _Precomputed(packing.n, count))
            ]
            for n, d in updates
        ]
        agg_s, summed = timed(lambda cts=cts, packing=packing: paillier.aggregate(cts, packing))
        total = sum(n for n, _ in updates)
        dec_s, sums = timed(
            lambda summed=summed, total=total, packing=packing: slots.checked_sums(
                [private.raw_decrypt(c) for c in summed], args.values, total, packing
            )
        )
        mean_s, _ = timed(lambda sums=sums, total=total, packing=packing: slots.mean_fixed(sums, total, packing, 24))
        exact = sum(n * np.array(slots.quantize(d["w"].astype(np.float64), packing), dtype=object) for n, d in updates)
        assert list(exact) == sums, "decrypted sums differ from the exact weighted sums"
        bytes_per_value = count * packing.ciphertext_bytes / args.values
        print(f"\npacked, {name}: {packing.slots} values per ciphertext, {count} ciphertexts")
        print(
            f"  encrypt, masks inline        {cold_s:8.3f} s   {per_value_total / cold_s:9.0f}x faster than per-value"
        )
        print(
            f"  encrypt, masks precomputed   {online_s:8.3f} s   "
            f"{per_value_total / online_s:9.0f}x faster than per-value (the update path)"
        )
        print(
            f"  ciphertext bytes per value   {bytes_per_value:8.2f}     "
            f"{per_value_bytes / bytes_per_value:9.0f}x smaller"
        )
        print(f"  aggregate 10 updates         {agg_s * 1000:8.1f} ms")
        print(
            f"  one-key decrypt + check      {dec_s:8.3f} s   (+ fixed-point mean {mean_s * 1000:.1f} ms); sums exact"
        )
        _threshold(key, shares, packing, updates, shapes, count, args.values)
    print(f"\n(dealing the 2-of-3 threshold key, safe primes included: {dealt_s:.1f} s, once per task)")
    return 0


def _threshold(key, shares, packing, updates, shapes, count, values) -> None:
    """The same aggregate under the dealt threshold key: what share holders and every node pay."""
    tpacking = slots.Packing(key.n, packing.precision, packing.clip_exp, packing.max_quota, packing.max_updates)
    cts = [
        [int.from_bytes(c, "big") for c in paillier.encrypt_update(d, n, shapes, tpacking, _Precomputed(key.n, count))]
        for n, d in updates
    ]
    summed = paillier.aggregate(cts, tpacking)
    partial_s, parts = timed(lambda: {s.index: threshold.partial_decrypt(s, key, summed) for s in shares[:2]}, 1)
    prove_s, proof = timed(lambda: threshold.prove(shares[0], key, summed, parts[1]), 1)
    verify_s, ok = timed(lambda: threshold.verify(key, 1, summed, parts[1], proof))
    assert ok, "a correct partial decryption failed verification"
    combine_s, plaintexts = timed(lambda: threshold.combine(key, parts))
    total = sum(n for n, _ in updates)
    sums = slots.checked_sums(plaintexts, values, total, tpacking)
    exact = sum(n * np.array(slots.quantize(d["w"].astype(np.float64), tpacking), dtype=object) for n, d in updates)
    assert sums == list(exact), "threshold decryption differs from the exact weighted sums"
    print("  threshold decryption, 2 of 3 shares:")
    print(f"    partial decryption, one share  {partial_s / 2:8.3f} s   (each share holder, per block)")
    print(f"    its proof                      {prove_s:8.3f} s")
    print(f"    verify one partial + proof     {verify_s:8.3f} s   (every node, per partial)")
    print(f"    combine 2 partials             {combine_s:8.3f} s   sums exact")


class _Precomputed:
    """Masks made before the clock starts, as MaskPool makes them while a device is idle."""

    def __init__(self, n: int, count: int):
        self.n = n
        self.masks = [paillier.new_mask(n) for _ in range(count)]

    def take(self):
        return self.masks.pop() if self.masks else paillier.new_mask(self.n)


if __name__ == "__main__":
    sys.exit(main())
