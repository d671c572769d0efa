"""Starting an emulated federation: what the model takes and how long it trains here, the round's
wait, waiting for the devices to come online (and, at the end, for their last model), memory."""

from __future__ import annotations

import os
import time
from pathlib import Path

from coordinator.emulator.processes import Federation
from coordinator.emulator.progress import Progress
from edge_sdk.node.status import ModelHashLog

BASE_WAIT_MS = 8000  # a round's wait for updates, before the time the machine needs to train every device
# A device's whole round (verify the block, train, sign, seal, send; the miners' admission and
# gossip of its update) took ~25x the machine time of its training alone, with 1000 agents on
# 2 cores (docs/scale.md)
WAIT_FACTOR = 30
START_S, START_PER_DEVICE_S = 30, 0.2  # how long the devices get to come online


def probe_model(o, test_set, shard) -> float:
    """Refuse data the model cannot take (feature count, classes) before anything starts, and
    measure how long one device's local training takes on this machine (seconds)."""
    import tempfile

    from coordinator.models.optimizers import Optimizer
    from coordinator.models.package_writer import build_package
    from coordinator.models.zoo import build_forward
    from edge_sdk.training.package import ModelPackage
    from edge_sdk.training.trainers import PortableTrainer

    with tempfile.TemporaryDirectory() as tmp:
        forward, params = build_forward(o.model, seed=o.seed)
        build_package(Path(tmp), forward, params, loss="cross-entropy", optimizer=Optimizer.parse(o.optimizer),
                      model_name=o.model)  # fmt: skip
        package = ModelPackage.load(tmp)
        trainer = PortableTrainer(package)
        x, y = test_set
        classes = package.manifest["num_outputs"]
        if y.max() >= classes:
            raise ValueError(f"--data has labels up to {y.max()}; model {o.model} has {classes} outputs")
        initial = package.initial_params()
        try:
            trainer.evaluate(initial, x[:2], y[:2])
        except Exception as exc:  # ONNX Runtime names the shape it expected
            raise ValueError(
                f"--data has {x.shape[1]} features per sample; model {o.model} does not take them"
            ) from exc
        started = time.perf_counter()
        trainer.fit(initial, *shard, epochs=o.epochs, batch_size=o.batch_size, learning_rate=o.learning_rate, seed=0)
        return time.perf_counter() - started


def round_wait_ms(o, fit_seconds: float) -> int:
    """--max-wait-ms, or BASE_WAIT_MS plus WAIT_FACTOR times what this machine needs to train every
    device once. The wait only matters when devices are missing: a round ends as soon as every
    device's update is in."""
    if o.max_wait_ms is not None:
        return o.max_wait_ms
    return int(BASE_WAIT_MS + WAIT_FACTOR * 1000 * o.devices * fit_seconds / (os.cpu_count() or 1))


def wait_online(o, fed: Federation, deadline: float) -> int:
    """Wait until start_fraction of the devices have connected to the broker (or the deadline): how many did."""
    needed = max(1, round(o.start_fraction * o.devices))
    progress = Progress("devices online", o.devices, quiet=o.quiet)
    online = 0
    while time.monotonic() < deadline and not fed.dead():
        statuses = (fed.layout.device_status(i) for i in range(o.devices))
        online = sum(1 for s in statuses if s and s.counters.get("connects"))
        progress.update(online)
        if online >= needed:
            break
        time.sleep(0.5)
    progress.close()
    return online


def memory(fed: Federation) -> dict:
    """Peak resident memory by process, and the sum of the peaks (an upper bound of the machine's peak)."""
    import resource

    peaks = fed.peak_memory_mb()
    peaks["emulator"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    workers = [v for k, v in peaks.items() if k.startswith("worker")]
    return {"peak_mb": peaks, "total_peak_mb": round(sum(peaks.values()), 1), "workers_peak_mb": round(sum(workers), 1)}


def wait_for_models(layout, devices: int, tip: bytes, deadline: float) -> None:
    """Until every device has computed the model of the observer's final tip (with Paillier, once
    its aggregate is opened), or the deadline: the model-hash agreement checks every block."""
    waiting, key = set(range(devices)), tip.hex()
    while waiting and time.monotonic() < deadline:
        waiting = {i for i in waiting if key not in ModelHashLog(layout.device_state(i)).read()}
        if waiting:
            time.sleep(0.3)
