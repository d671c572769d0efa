"""Training throughput, side by side: portable per-step, portable fused (one ONNX Loop per epoch),
the official ONNX Runtime training API, and PyTorch eager on CPU, for the MLP 64-32-10 and the
conv net cnn:8x8.

Same model, data (scikit-learn digits, 1347 training samples), batch order, SGD settings and one
thread each. The official API and PyTorch run in the onnxruntime-training environment (.venv-ort;
it cannot share an environment with the stock onnxruntime), in the same run.

With --arm64: milliseconds per local epoch on one device's share of the digits (1347 / 10 devices),
batch 16 as `blockfl emulate` trains, portable and fused, natively and on the emulated
Raspberry Pi 4 (qemu-user, Cortex-A72, the stock aarch64 onnxruntime wheel; the root that
tests/integration/test_arm64.py builds in .cache/arm64, running this checkout's edge_sdk).

    .venv/bin/python benchmarks/bench_train.py [--models mlp:64-32-10,cnn:8x8] [--epochs 20] [--repeats 3]
    .venv/bin/python benchmarks/bench_train.py --arm64 [--epochs 5]
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

LR, SEED = 0.1, 0
DEVICE_SCRIPT = r"""
import json, platform, sys
import numpy as np
from edge_sdk.training.package import ModelPackage
from edge_sdk.training.trainers import PortableTrainer
package = ModelPackage.load(sys.argv[1])
data = np.load(sys.argv[2])
epochs, repeats = int(sys.argv[3]), int(sys.argv[4])
out = {"machine": platform.machine()}
for fused in (False, True):
    trainer = PortableTrainer(package, fused=fused, threads=1)
    runs = [trainer.fit(package.initial_params(), data["x"], data["y"], epochs=epochs, batch_size=16,
                        learning_rate=0.1, seed=0).seconds / epochs for _ in range(repeats)]
    out["fused" if fused else "portable"] = min(runs)
print(json.dumps(out))
"""


def digits_train() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x, _, y, _ = train_test_split(
        (digits.data / 16).astype(np.float32), digits.target, test_size=0.25, random_state=0, stratify=digits.target
    )
    return x, y


def package_for(spec: str, directory: pathlib.Path) -> ModelPackage:
    forward, params = build_forward(spec)
    build_package(directory, forward, params, loss="cross-entropy", optimizer=Optimizer("sgd"), model_name=spec)
    return ModelPackage.load(directory)


def throughput(spec: str, x, y, args, tmp: pathlib.Path) -> dict | None:
    """{backend: (steps/s, final loss)}, best of the repeats; None when the official API cannot run.
    Each repeat runs every backend once, one after the other, so a change in the machine's load
    touches them alike."""
    package = package_for(spec, tmp / spec.replace(":", "_"))
    runs: dict[str, list] = {}
    for _ in range(args.repeats):
        for name, fused in (("portable (per step)", False), ("portable (fused epoch)", True)):
            result = PortableTrainer(package, fused=fused, threads=1).fit(
                package.initial_params(),
                x,
                y,
                epochs=args.epochs,
                batch_size=args.batch_size,
                learning_rate=LR,
                seed=SEED,
            )
            runs.setdefault(name, []).append((result.steps / result.seconds, result.epoch_losses[-1]))
        worker = subprocess.run(
            [args.ort_python, str(ROOT / "benchmarks/_official_worker.py"), str(package.directory),
             str(tmp / "data.npz"), str(args.epochs), str(args.batch_size), str(LR), str(SEED)],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
        )  # fmt: skip
        if worker.returncode != 0:
            print(worker.stderr[-2000:], file=sys.stderr)
            return None
        other = json.loads(worker.stdout.strip().splitlines()[-1])
        runs.setdefault("official ORT training API", []).append(tuple(other["official"]))
        runs.setdefault(f"PyTorch {other['torch_version']} eager", []).append(tuple(other["torch"]))
    return {name: max(results) for name, results in runs.items()}


def arm64(args, x, y, tmp: pathlib.Path) -> int:
    cache = ROOT / ".cache" / "arm64"
    python = cache / "venv" / "bin" / "python"
    if not python.exists():
        print(f"no emulated Pi in {cache}: run tests/integration/test_arm64.py once", file=sys.stderr)
        return 1
    share = len(x) // 10
    np.savez(tmp / "share.npz", x=x[:share], y=y[:share])
    print(
        f"milliseconds per local epoch: {share} samples (a tenth of the digits), batch 16, SGD, 1 thread, "
        f"best of {args.repeats}"
    )
    print(f"{'model':14} {'where':26} {'portable ms':>12} {'fused ms':>9}")
    for spec in args.models.split(","):
        package = package_for(spec, tmp / spec.replace(":", "_"))
        where = {"x86_64 (this machine)": [sys.executable], "emulated Raspberry Pi 4": [
            "qemu-aarch64-static", "-cpu", "cortex-a72", "-L", str(cache / "root"), str(python)]}  # fmt: skip
        for label, command in where.items():
            run = subprocess.run(
                [*command, "-c", DEVICE_SCRIPT, str(package.directory), str(tmp / "share.npz"), str(args.epochs),
                 str(args.repeats)],
                capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False, cwd=tmp,
            )  # fmt: skip
            if run.returncode != 0:
                print(run.stderr[-2000:], file=sys.stderr)
                return 1
            seconds = json.loads(run.stdout.strip().splitlines()[-1])
            print(f"{spec:14} {label:26} {1000 * seconds['portable']:12.1f} {1000 * seconds['fused']:9.1f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mlp:64-32-10,cnn:8x8", help="comma-separated zoo models")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--arm64", action="store_true", help="seconds per local epoch, native and on the emulated Pi")
    parser.add_argument(
        "--ort-python",
        default=str(ROOT / ".venv-ort/bin/python"),
        help="python of the onnxruntime-training environment",
    )
    args = parser.parse_args()
    x, y = digits_train()
    with tempfile.TemporaryDirectory() as directory:
        tmp = pathlib.Path(directory)
        if args.arm64:
            return arm64(args, x, y, tmp)
        np.savez(tmp / "data.npz", x=x, y=y)
        for spec in args.models.split(","):
            results = throughput(spec, x, y, args, tmp)
            if results is None:
                print(
                    "the official API could not run; build .venv-ort with deploy/dev/setup-test-envs.sh",
                    file=sys.stderr,
                )
                return 1
            base = results["official ORT training API"][0]
            print(
                f"{spec}, digits ({len(x)} samples), batch {args.batch_size}, {args.epochs} epochs, SGD lr {LR}, "
                f"1 thread, best of {args.repeats}"
            )
            print(f"{'backend':32} {'steps/s':>10} {'vs official':>12} {'final loss':>11}")
            for name, (rate, loss) in results.items():
                print(f"{name:32} {rate:10.0f} {rate / base:11.2f}x {loss:11.4f}")
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
