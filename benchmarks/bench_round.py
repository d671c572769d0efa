"""What the blockchain costs per round, without proof-of-work: the emulated round against plain
FedAvg on the same work.

The emulated figure is the median, over the best chain's rounds, of each round's wall time minus
its proof-of-work, from the emulation's round anatomy (coordinator/emulator/anatomy.py). The
reference is plain FedAvg in one process: the same model package, the devices' own data shares
(each device's data.npz), epochs, batch size, learning rate and trainer (portable, one thread),
each round training every share in turn and averaging the deltas weighted by sample counts; no
network, no signatures, no chain. It is sequential, where the emulated devices train in parallel
(on however many cores there are).

    .venv/bin/python benchmarks/bench_round.py                     # runs emulate 10 devices, 3 miners, 5 rounds, seed 1
    .venv/bin/python benchmarks/bench_round.py --from out/run       # an existing emulation's output
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coordinator.emulator.anatomy import PHASES  # noqa: E402
from coordinator.emulator.layout import Layout  # noqa: E402
from edge_sdk.training.package import ModelPackage  # noqa: E402
from edge_sdk.training.trainers import make_trainer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", type=pathlib.Path, help="an emulation's --out directory")
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--miners", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="FedAvg reference runs (median over all rounds)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = args.source or emulate(args, pathlib.Path(tmp) / "emulation")
        report = json.loads((out / "report.json").read_text())
        medians = report["anatomy"]["medians"]
        if not medians:
            print(f"{out}: no round could be measured (see its summary.md)")
            return 1
        reference = fedavg_round_seconds(Layout(out), report["options"], args.repeats)
    o = report["options"]
    emulated = medians["wall_minus_pow_ms"] / 1000
    print(f"emulation {out}: {o['devices']} devices, {o['miners']} miners, {medians['rounds']} rounds measured, "
          f"{o['model']}, {o['epochs']} epochs, batch {o['batch_size']}")  # fmt: skip
    print("median per phase (ms): " + ", ".join(f"{PHASES[k]} {medians[k]:g}" for k in PHASES))
    print(f"round time minus proof-of-work (median over rounds): {emulated * 1000:.0f} ms")
    print(f"plain FedAvg, same work in one process (median over {len(reference)} rounds): "
          f"{statistics.median(reference) * 1000:.0f} ms")  # fmt: skip
    print(f"ratio: {emulated / statistics.median(reference):.1f}x")
    return 0


def emulate(args, out: pathlib.Path) -> pathlib.Path:
    command = [sys.executable, "-m", "coordinator.cli", "emulate", "--devices", str(args.devices),
               "--miners", str(args.miners), "--rounds", str(args.rounds), "--seed", str(args.seed),
               "--out", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    print("$ " + " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, env=env, cwd=ROOT)
    return out


def fedavg_round_seconds(layout: Layout, options: dict, repeats: int) -> list[float]:
    """Seconds per round of plain FedAvg over the emulation's own shares, `repeats` x its rounds."""
    package = ModelPackage.load(layout.task.model)
    trainer = make_trainer(package, "portable")
    shares = []
    for i in range(options["devices"]):
        with np.load(layout.device(i) / "data.npz") as data:
            shares.append((data["x"], data["y"]))
    fit = dict(epochs=options["epochs"], batch_size=options["batch_size"], learning_rate=options["learning_rate"])
    trainer.fit(package.initial_params(), *shares[0], seed=0, **fit)  # warm-up, not timed
    seconds = []
    for _ in range(repeats):
        params = package.initial_params()
        for height in range(options["rounds"]):
            started = time.perf_counter()
            total, weights = {p: np.zeros_like(v) for p, v in params.items()}, 0
            for i, (x, y) in enumerate(shares):
                result = trainer.fit(params, x, y, seed=height * 1000 + i, **fit)
                for p in params:
                    total[p] += len(x) * (result.params[p] - params[p])
                weights += len(x)
            params = {p: params[p] + total[p] / weights for p in params}
            seconds.append(time.perf_counter() - started)
    return seconds


if __name__ == "__main__":
    sys.exit(main())
