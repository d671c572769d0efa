"""On-device training with ONNX Runtime behind one interface, two backends.

- `portable` runs the coordinator-compiled train-step graph (standard ONNX operators only) in the
  stock onnxruntime InferenceSession: the same on a Pi, a phone or a laptop. `fused` runs one
  ONNX Loop per epoch instead of one call per batch.
- `ort-training` runs the official artifacts with `onnxruntime.training.api`, where the
  onnxruntime-training package is installed (x86_64 only; it needs torch to import).

Both shuffle the same way (`epoch_order`) so, from the same start, they take the same steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import onnxruntime as ort

from edge_sdk.training.backends import BACKENDS
from edge_sdk.training.package import ModelPackage


@dataclass
class FitResult:
    params: dict[str, np.ndarray]
    epoch_losses: list[float]
    steps: int
    seconds: float


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float | None
    samples: int


def epoch_order(n: int, epochs: int, seed: int) -> list[np.ndarray]:
    """The sample order of each epoch: a seeded permutation per epoch, identical for every backend."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(n) for _ in range(epochs)]


def epoch_noise(n: int, width: int, seed: int):
    """Dropout noise, one [n, width] array per epoch (row i goes with the epoch's i-th sample), from
    its own stream of the same seed: per-step and fused training draw the same masks."""
    rng = np.random.default_rng((seed, 1))
    while True:
        yield rng.random((n, width), dtype=np.float32) if width else None


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


class Trainer(Protocol):
    backend: str

    def fit(
        self,
        params: dict[str, np.ndarray],
        features: np.ndarray,
        labels: np.ndarray,
        *,
        epochs: int,
        batch_size: int,
        learning_rate: float,
        seed: int,
    ) -> FitResult: ...

    def evaluate(self, params: dict[str, np.ndarray], features: np.ndarray, labels: np.ndarray) -> Evaluation: ...


class _Evaluator:
    """Loss and accuracy of parameters on data, from forward.onnx (shared by every backend)."""

    def __init__(self, package: ModelPackage, threads: int):
        self.package = package
        self._forward = ort.InferenceSession(
            str(package.path("forward")), session_options(threads), providers=["CPUExecutionProvider"]
        )

    def logits(self, params: dict[str, np.ndarray], features: np.ndarray) -> np.ndarray:
        feeds = {p: params[p] for p in self.package.model_names}
        feeds[self.package.manifest["forward"]["inputs"]["features"]] = np.asarray(features, np.float32)
        return self._forward.run([self.package.manifest["forward"]["output"]], feeds)[0]

    def evaluate(self, params, features, labels) -> Evaluation:
        z = self.logits(params, features).astype(np.float64)
        y = self.package.labels(labels)
        loss_kind = self.package.manifest["loss"]
        if loss_kind == "cross-entropy":
            shifted = z - z.max(axis=1, keepdims=True)
            log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            loss = -log_probs[np.arange(len(y)), y].mean()
            accuracy = float((z.argmax(axis=1) == y).mean())
        elif loss_kind == "binary-cross-entropy":
            loss = (np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))).mean()
            accuracy = float(((z > 0) == (y > 0.5)).mean())
        else:
            loss = ((z - y) ** 2).mean()
            accuracy = None
        return Evaluation(float(loss), accuracy, len(y))


def _zero_state(manifest: dict) -> dict[str, np.ndarray]:
    return {s: np.zeros(manifest["state_shapes"][s], np.float32) for s in manifest["state"]}


class _BoundStep:
    """train_step.onnx with its parameters and state kept as OrtValues between steps.

    Two buffer sets swap roles each step (read one, write the other), each direction bound once
    to its own IOBinding, so a step binds only its batch and copies nothing else; about 12% faster
    than session.run with numpy feeds on a 64-32-10 MLP.
    """

    def __init__(self, session: ort.InferenceSession, package: ModelPackage, learning_rate: float):
        self.session = session
        manifest = package.manifest
        self.carried = [*package.model_names, *manifest["state"]]
        out = manifest["outputs"]
        self.outputs = {**out["new_params"], **out.get("new_buffers", {}), **out["new_state"]}
        self.inputs = manifest["inputs"]
        self.loss = ort.OrtValue.ortvalue_from_numpy(np.zeros((), np.float32))
        self.learning_rate = np.array(learning_rate, np.float32)
        self.bindings = [session.io_binding(), session.io_binding()]
        for binding in self.bindings:
            binding.bind_ortvalue_output(out["loss"], self.loss)
            binding.bind_cpu_input(self.inputs["learning_rate"], self.learning_rate)

    def load(self, values: dict[str, np.ndarray]) -> None:
        self.sets = [
            {k: ort.OrtValue.ortvalue_from_numpy(np.array(values[k], np.float32)) for k in self.carried},
            {k: ort.OrtValue.ortvalue_from_numpy(np.empty_like(values[k], np.float32)) for k in self.carried},
        ]
        for i, binding in enumerate(self.bindings):  # binding i reads set i and writes the other
            for k in self.carried:
                binding.bind_ortvalue_input(k, self.sets[i][k])
                binding.bind_ortvalue_output(self.outputs[k], self.sets[1 - i][k])
        self.turn = 0

    def values(self) -> dict[str, np.ndarray]:
        return {k: v.numpy().copy() for k, v in self.sets[self.turn].items()}

    def step(self, features: np.ndarray, labels: np.ndarray, noise: np.ndarray | None) -> float:
        binding = self.bindings[self.turn]
        binding.bind_cpu_input(self.inputs["features"], features)
        binding.bind_cpu_input(self.inputs["labels"], labels)
        if noise is not None:
            binding.bind_cpu_input(self.inputs["noise"], noise)
        self.session.run_with_iobinding(binding)
        self.turn ^= 1
        return float(self.loss.numpy())


class PortableTrainer(_Evaluator):
    """Runs train_step.onnx per batch in the stock InferenceSession; fused, train_epoch.onnx runs
    all full batches of an epoch in one call (an ONNX Loop) and train_step.onnx the rest."""

    def __init__(self, package: ModelPackage, *, fused: bool = False, threads: int = 1):
        super().__init__(package, threads)
        self.fused = fused
        self.backend = "fused" if fused else "portable"
        options, providers = session_options(threads), ["CPUExecutionProvider"]
        self._step = ort.InferenceSession(str(package.path("train_step")), options, providers=providers)
        self._epoch = (
            ort.InferenceSession(str(package.path("train_epoch")), options, providers=providers) if fused else None
        )
        m = package.manifest
        out = m["epoch"]["outputs"]
        new = {**out["new_params"], **out.get("new_buffers", {}), **out["new_state"]}
        self._epoch_outputs = [out["losses"]] + [new[k] for k in [*package.model_names, *m["state"]]]

    def fit(self, params, features, labels, *, epochs, batch_size, learning_rate, seed) -> FitResult:
        m = self.package.manifest
        x = np.ascontiguousarray(features, dtype=np.float32)
        y = self.package.labels(labels)
        model = self.package.model_names
        step = _BoundStep(self._step, self.package, learning_rate)
        step.load({p: params[p] for p in model} | _zero_state(m))
        epoch_io = m["epoch"]["inputs"]
        chunk = batch_size * m["epoch"]["steps_per_iteration"]
        full = (len(x) // chunk) * chunk if self.fused else 0
        noises = epoch_noise(len(x), self.package.noise_width, seed)
        losses, steps, started = [], 0, time.perf_counter()
        for order, noise in zip(epoch_order(len(x), epochs, seed), noises, strict=False):
            xe, ye = x[order], y[order]  # one gather per epoch; batches are then contiguous views
            batch_losses = []
            if full:
                feeds = {
                    **step.values(),
                    epoch_io["features"]: xe[:full],
                    epoch_io["labels"]: ye[:full],
                    epoch_io["learning_rate"]: np.array(learning_rate, np.float32),
                    epoch_io["batch_size"]: np.array(batch_size, np.int64),
                }
                if noise is not None:
                    feeds[epoch_io["noise"]] = noise[:full]
                result = self._epoch.run(self._epoch_outputs, feeds)
                batch_losses.extend(result[0].tolist())
                step.load(dict(zip(step.carried, result[1:], strict=True)))
            for start in range(full, len(x), batch_size):
                cut = slice(start, start + batch_size)
                batch_losses.append(step.step(xe[cut], ye[cut], None if noise is None else noise[cut]))
            steps += len(batch_losses)
            losses.append(float(np.mean(batch_losses)))
        values = step.values()
        return FitResult({p: values[p] for p in model}, losses, steps, time.perf_counter() - started)


class OrtTrainingTrainer(_Evaluator):
    """Runs the official training artifacts with onnxruntime.training.api."""

    backend = "ort-training"

    def __init__(self, package: ModelPackage, *, threads: int = 1):
        super().__init__(package, threads)
        from onnxruntime.training import api  # only in the onnxruntime-training package; imports torch

        ort.set_default_logger_severity(3)
        if package.buffers or package.noise_width:
            raise ValueError("the official training API backend trains models without BatchNormalization or Dropout")
        self._api = api
        self.threads = threads
        self.artifacts = package.ort_artifacts
        if not (self.artifacts / "training_model.onnx").exists():
            raise FileNotFoundError(
                f"no official training artifacts in {self.artifacts}; build them with `blockfl model artifacts`"
            )

    def fit(self, params, features, labels, *, epochs, batch_size, learning_rate, seed) -> FitResult:
        api, a = self._api, self.artifacts
        state = api.CheckpointState.load_checkpoint(str(a / "checkpoint"))
        module = api.Module(
            str(a / "training_model.onnx"),
            state,
            str(a / "eval_model.onnx"),
            device="cpu",
            session_options=session_options(self.threads),
        )
        # only once a Module holds the state: setting parameters before that crashes 1.19.2 (segfault)
        for p in self.package.manifest["params"]:
            state.parameters[p].data = np.ascontiguousarray(params[p], np.float32)
        optimizer = api.Optimizer(str(a / "optimizer_model.onnx"), module)
        optimizer.set_learning_rate(float(learning_rate))
        module.train()
        x = np.ascontiguousarray(features, dtype=np.float32)
        y = self.package.labels(labels)
        losses, steps, started = [], 0, time.perf_counter()
        for order in epoch_order(len(x), epochs, seed):
            xe, ye = x[order], y[order]
            epoch_loss = []
            for start in range(0, len(x), batch_size):
                epoch_loss.append(float(module(xe[start : start + batch_size], ye[start : start + batch_size])))
                optimizer.step()
                module.lazy_reset_grad()
                steps += 1
            losses.append(float(np.mean(epoch_loss)))
        new = {p: np.array(state.parameters[p].data, np.float32) for p in self.package.manifest["params"]}
        return FitResult(new, losses, steps, time.perf_counter() - started)


def has_ort_training() -> bool:
    try:
        from onnxruntime.training import api  # noqa: F401
    except Exception:  # ImportError, or the package's own failure to import torch
        return False
    return True


def make_trainer(package: ModelPackage, backend: str = "auto", *, threads: int = 1) -> Trainer:
    """`auto` picks the official API when it and the package's artifacts are present, else portable."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = (
            "ort-training"
            if (package.ort_artifacts / "training_model.onnx").exists() and has_ort_training()
            else "portable"
        )
    if backend == "ort-training":
        return OrtTrainingTrainer(package, threads=threads)
    return PortableTrainer(package, fused=backend == "fused", threads=threads)
