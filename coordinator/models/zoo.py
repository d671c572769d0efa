"""The model zoo: forward ONNX models that fit a Raspberry Pi, by name.

logreg:IN-OUT                      multinomial logistic regression
mlp:IN-H1-...-OUT[:relu|tanh|sigmoid]
cnn:[C x]H x W[-CLASSES]           images (convnets.py), e.g. cnn:8x8 for the digits
cnn1d:C x L[-CLASSES]              sensor windows of C channels and L steps (convnets.py)
"""

from __future__ import annotations

import numpy as np
import onnx

from coordinator.models.convnets import CONVNETS
from coordinator.models.netbuild import ModelSpecError, Net

ACTIVATIONS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}


def parse_spec(spec: str) -> tuple[str, list[int], str]:
    """'mlp:64-32-10', 'mlp:64-32-16-10:tanh', 'logreg:64-10' -> (kind, sizes, activation)."""
    parts = spec.split(":")
    kind = parts[0]
    if kind not in ("logreg", "mlp") or len(parts) not in (2, 3):
        raise ModelSpecError(
            f"model spec {spec!r}: expected logreg:IN-OUT, mlp:IN-H1-...-OUT[:relu|tanh|sigmoid], "
            "cnn:[C]xHxW[-CLASSES] or cnn1d:CxL[-CLASSES]"
        )
    try:
        sizes = [int(s) for s in parts[1].split("-")]
    except ValueError:
        raise ModelSpecError(f"model spec {spec!r}: layer sizes must be integers") from None
    activation = parts[2] if len(parts) == 3 else "relu"
    if activation not in ACTIVATIONS:
        raise ModelSpecError(f"model spec {spec!r}: activation must be one of {sorted(ACTIVATIONS)}")
    if any(s < 1 for s in sizes) or (kind == "logreg" and len(sizes) != 2) or (kind == "mlp" and len(sizes) < 3):
        raise ModelSpecError(f"model spec {spec!r}: logreg needs IN-OUT, mlp needs IN-HIDDEN...-OUT, all >= 1")
    return kind, sizes, activation


def build_forward(spec: str, seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The forward model and its initial parameters (and buffers)."""
    kind, _, args = spec.partition(":")
    if kind in CONVNETS:
        return CONVNETS[kind](spec, args, seed)
    return _dense(spec, seed)


def _dense(spec: str, seed: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Glorot-uniform weights (zero for logreg), zero biases."""
    kind, sizes, activation = parse_spec(spec)
    net = Net(sizes[0], seed)
    layers = len(sizes) - 1
    for i in range(layers):
        fan_in, fan_out = sizes[i], sizes[i + 1]
        if kind == "mlp":
            w = net.uniform(f"layer{i}.weight", (fan_in, fan_out), fan_in, fan_out)
        else:
            w = net.value(f"layer{i}.weight", np.zeros((fan_in, fan_out)))
        b = net.value(f"layer{i}.bias", np.zeros(fan_out))
        last = i == layers - 1
        net.apply("Gemm", [w, b], f"layer{i}.gemm", "logits" if last else f"layer{i}.linear")
        if not last:
            net.apply(ACTIVATIONS[activation], [], f"layer{i}.{activation}", f"layer{i}.act")
    return net.model(spec.replace(":", "_"), sizes[-1])
