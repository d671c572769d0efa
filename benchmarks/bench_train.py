"""Training throughput, side by side: portable per-step, portable fused (one ONNX Loop per epoch),
the official ONNX Runtime training API, and PyTorch eager on CPU.

Same model (MLP 64-32-10), data (scikit-learn digits, 1347 training samples), batch order, SGD
settings and one thread each. The official API and PyTorch run in the onnxruntime-training
environment (.venv-ort; it cannot share an environment with the stock onnxruntime), in the same run.

    .venv/bin/python benchmarks/bench_train.py [--epochs 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coordinator.models.optimizers import Optimizer  # noqa: E402
from coordinator.models.package_writer import build_package  # noqa: E402
from coordinator.models.zoo import build_forward  # noqa: E402
from edge_sdk.training.package import ModelPackage  # noqa: E402
from edge_sdk.training.trainers import PortableTrainer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--ort-python",
        default=str(ROOT / ".venv-ort/bin/python"),
        help="python of the onnxruntime-training environment",
    )
    args = parser.parse_args()

    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x, _, y, _ = train_test_split(
        (digits.data / 16).astype(np.float32), digits.target, test_size=0.25, random_state=0, stratify=digits.target
    )
    lr, seed = 0.1, 0
    with tempfile.TemporaryDirectory() as tmp:
        forward, params = build_forward("mlp:64-32-10")
        build_package(tmp, forward, params, loss="cross-entropy", optimizer=Optimizer("sgd"), model_name="mlp:64-32-10")
        package = ModelPackage.load(tmp)
        results = {}
        for name, fused in (("portable (per step)", False), ("portable (fused epoch)", True)):
            runs = []
            for _ in range(args.repeats):
                result = PortableTrainer(package, fused=fused, threads=1).fit(
                    package.initial_params(),
                    x,
                    y,
                    epochs=args.epochs,
                    batch_size=args.batch_size,
                    learning_rate=lr,
                    seed=seed,
                )
                runs.append((result.steps / result.seconds, result.epoch_losses[-1]))
            results[name] = max(runs)
        np.savez(pathlib.Path(tmp) / "data.npz", x=x, y=y)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        worker = subprocess.run(
            [
                args.ort_python,
                str(ROOT / "benchmarks/_official_worker.py"),
                tmp,
                str(pathlib.Path(tmp) / "data.npz"),
                str(args.epochs),
                str(args.batch_size),
                str(lr),
                str(seed),
                str(args.repeats),
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if worker.returncode != 0:
            print(worker.stderr[-2000:], file=sys.stderr)
            print("the official API could not run; build .venv-ort with deploy/dev/setup-test-envs.sh", file=sys.stderr)
            return 1
        other = json.loads(worker.stdout.strip().splitlines()[-1])
        results["official ORT training API"] = tuple(other["official"])
        results[f"PyTorch {other['torch_version']} eager"] = tuple(other["torch"])

    base = results["official ORT training API"][0]
    print(
        f"MLP 64-32-10, digits ({len(x)} samples), batch {args.batch_size}, {args.epochs} epochs, SGD lr {lr}, "
        f"1 thread, best of {args.repeats}"
    )
    print(f"{'backend':32} {'steps/s':>10} {'vs official':>12} {'final loss':>11}")
    for name, (rate, loss) in results.items():
        print(f"{name:32} {rate:10.0f} {rate / base:11.2f}x {loss:11.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
