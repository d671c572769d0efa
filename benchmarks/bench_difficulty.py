"""Initial difficulty: this machine's hash rate, how fast retargeting settles, what forging costs.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_difficulty.py [--miners 3] [--interval-ms 10000]

The numbers in docs/difficulty.md come from this script. Block times are simulated from the
measured rate (coordinator/tools/retarget_sim.py); nothing sleeps.
"""

from __future__ import annotations

import argparse
import random
import statistics

from coordinator.task.calibrate import initial_difficulty
from coordinator.tools.retarget_sim import blocks_to_target, cheapest_fork_hashes, simulate
from edge_sdk.protocol.task import ChainParams
from edge_sdk.protocol.work import target_for_hashes

LEGACY_HASHES = 20_000  # the old fixed `--initial-hashes` default, with pow_limit at 1/64 of it


def chain(initial_hashes: int, pow_limit_hashes: int, interval_ms: int) -> ChainParams:
    return ChainParams(
        initial_target=target_for_hashes(initial_hashes),
        pow_limit=target_for_hashes(pow_limit_hashes),
        target_interval_ms=interval_ms,
        retarget_window=4,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--miners", type=int, default=3)
    parser.add_argument("--interval-ms", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=1.0, help="how long to measure the hash rate")
    args = parser.parse_args()
    interval = args.interval_ms
    d = initial_difficulty(miners=args.miners, interval_ms=interval, seconds=args.seconds)
    rate, calibrated = d.hash_rate * args.miners, d.expected_hashes
    print(d.describe())

    print("\nconvergence (expected block times; blocks until every interval is within 25% of the target):")
    for off in (10, 0.1):
        start = round(calibrated * off)
        sim = simulate(chain(start, min(start, calibrated) // 4, interval), rate, 40)
        times = ", ".join(f"{b.seconds:.1f}" for b in sim[:12])
        print(f"  start {off:g}x the calibrated work: settled from block {blocks_to_target(sim, interval)}; s: {times}")
    means = []
    for seed in range(5):
        sim = simulate(chain(calibrated, calibrated // 4, interval), rate, 3000, rng=random.Random(seed))
        means.append(statistics.mean(b.seconds for b in sim[20:]))
    mean = statistics.mean(means)
    print(f"  random block times, 5 x 3000 blocks: mean interval {mean:.2f} s (target {interval / 1000:g} s)")

    print("\nfork cost (cumulative work decides; a forger stretches timestamps so every retarget eases):")
    for name, params in (
        ("calibrated", chain(calibrated, calibrated // 4, interval)),
        ("legacy 20000/64", chain(LEGACY_HASHES, LEGACY_HASHES // 64, interval)),
    ):
        honest = simulate(params, rate, 62)
        for k in (2, 3, 62):
            work_k = sum(b.hashes for b in honest[:k])
            fork = cheapest_fork_hashes(params, k)
            print(
                f"  {name}: {k} honest blocks = {work_k:,} hashes ({work_k / rate:.1f} s of the miners' hashing); "
                f"cheapest {k}-block fork = {fork:,} hashes ({fork / rate:.2f} s), {fork / work_k:.2f}x"
            )
        print(f"  {name}: the first 62 honest blocks took {sum(b.seconds for b in honest):.0f} s of real time")


if __name__ == "__main__":
    main()
