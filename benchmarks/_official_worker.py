"""Runs in the onnxruntime-training environment (.venv-ort): the official training API and PyTorch
eager, the better of two runs each, on the same model, data and batch order as bench_train.py. Prints one JSON line."""

import json
import sys
import time

import numpy as np
import torch

from coordinator.models.ort_artifacts import generate
from edge_sdk.training.package import ModelPackage
from edge_sdk.training.trainers import OrtTrainingTrainer, epoch_order


def _set(module, weight, bias):
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
        module.bias.copy_(torch.from_numpy(bias))
    return module


def torch_model(package) -> torch.nn.Module:
    """The package's zoo model as PyTorch layers, from its initial parameters: an MLP (mlp:, logreg:)
    or the conv net (cnn:): 3x3 convolutions with ReLU and 2x2 max-pooling, then a linear layer."""
    params = package.initial_params()
    spec = package.manifest["model"]
    layers = []
    if spec.startswith("cnn:"):
        dims = [int(d) for d in spec.split(":")[1].split("-")[0].split("x")]
        layers.append(torch.nn.Unflatten(1, dims if len(dims) == 3 else [1, *dims]))
        for i in range(sum(1 for p in params if p.startswith("conv") and p.endswith(".weight"))):
            w = params[f"conv{i}.weight"]
            conv = torch.nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], padding=w.shape[2] // 2)
            layers += [_set(conv, w, params[f"conv{i}.bias"]), torch.nn.ReLU(), torch.nn.MaxPool2d(2)]
        layers.append(torch.nn.Flatten())
        linear = [("fc.weight", "fc.bias")]
    else:
        names = package.manifest["params"]
        linear = list(zip(names[0::2], names[1::2], strict=True))
    for i, (w, b) in enumerate(linear):
        layers.append(_set(torch.nn.Linear(*params[w].shape), params[w].T, params[b]))
        if i < len(linear) - 1:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def torch_eager(package, x, y, epochs, batch, lr, seed):
    torch.set_num_threads(1)
    model = torch_model(package)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    steps, started, last = 0, time.perf_counter(), []
    for order in epoch_order(len(x), epochs, seed):
        order = torch.from_numpy(order)
        last = []
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            last.append(loss.item())
            steps += 1
    return steps / (time.perf_counter() - started), float(np.mean(last))


def main():
    package_dir, data_path, epochs, batch, lr, seed = sys.argv[1:7]
    epochs, batch, lr, seed = int(epochs), int(batch), float(lr), int(seed)
    generate(package_dir)
    package = ModelPackage.load(package_dir)
    data = np.load(data_path)
    x, y = data["x"], data["y"]
    official, eager = [], []
    for _ in range(2):  # the better of two: the first run in a fresh process pays its warm-up
        result = OrtTrainingTrainer(package, threads=1).fit(
            package.initial_params(), x, y, epochs=epochs, batch_size=batch, learning_rate=lr, seed=seed
        )
        official.append((result.steps / result.seconds, result.epoch_losses[-1]))
        eager.append(torch_eager(package, x, y, epochs, batch, lr, seed))
    print(json.dumps({"official": max(official), "torch": max(eager), "torch_version": torch.__version__}))


if __name__ == "__main__":
    main()
