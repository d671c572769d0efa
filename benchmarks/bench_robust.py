"""Robust aggregation rules side by side in one process: time per block and ratio to fedavg.

K updates of the 2,410-parameter MLP (64x32, 32, 32x10, 10), frac_bits 24, deltas ~ N(0, 0.01)
with a tenth of them scaled by 50 (so the norm rule and multi-krum have something to exclude).
Each time is the median of `--repeats` runs of `edge_sdk.chain.robust.aggregate`, quantization
included; `aggregation.fedavg` (today's block rule) is timed too, for reference.

    .venv/bin/python benchmarks/bench_robust.py [--ks 10,100,256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from edge_sdk.chain.aggregation import fedavg  # noqa: E402
from edge_sdk.chain.robust import aggregate  # noqa: E402
from edge_sdk.protocol.aggregation_rule import AggregationRule  # noqa: E402

SHAPES = {"w1": (64, 32), "b1": (32,), "w2": (32, 10), "b2": (10,)}
FRAC = 24


def timed(repeats, fn, *args):
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def make_round(k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    base = {name: rng.integers(-(2**24), 2**24, shape) for name, shape in SHAPES.items()}
    updates = []
    for i in range(k):
        scale = 0.5 if i % 10 == 3 else 0.01
        delta = {name: (rng.standard_normal(shape) * scale).astype(np.float32) for name, shape in SHAPES.items()}
        updates.append((int(rng.integers(50, 500)), delta))
    return base, updates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", default="10,100,256", help="comma-separated update counts")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"parameters: {sum(int(np.prod(s)) for s in SHAPES.values())}, frac_bits {FRAC}, repeats {args.repeats}")
    for k in (int(x) for x in args.ks.split(",")):
        base, updates = make_round(k)
        rules = {
            "fedavg (no cap, no bound)": AggregationRule(weight_cap=0),
            "fedavg cap 2, norm_factor 3": AggregationRule(weight_cap=2, norm_factor=3.0),
            "median": AggregationRule("median"),
            "trimmed-mean:0.2": AggregationRule("trimmed-mean", trim=0.2),
            f"multi-krum:{k // 10}": AggregationRule("multi-krum", f=k // 10),
            f"multi-krum:{k // 10} norm_factor 3": AggregationRule("multi-krum", f=k // 10, norm_factor=3.0),
        }
        reference, _ = timed(args.repeats, fedavg, base, updates, FRAC)
        print(f"\nK = {k}")
        print(f"  {'aggregation.fedavg (block rule today)':40s} {reference * 1e3:9.2f} ms   1.00x")
        for label, rule in rules.items():
            seconds, (_, excluded) = timed(args.repeats, aggregate, base, updates, FRAC, rule)
            ratio = seconds / reference
            print(f"  {label:40s} {seconds * 1e3:9.2f} ms {ratio:6.2f}x   excluded {len(excluded)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
