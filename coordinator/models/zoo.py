"""Forward ONNX models that fit a Raspberry Pi: multinomial logistic regression and MLPs.

A forward model takes `features` [batch, F] and every parameter as graph inputs (so a device
feeds each round's global model) and returns `logits` [batch, C]. Initial parameters come
separately (params.npz), drawn with a fixed seed.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSET = 17
IR_VERSION = 8  # loads in every onnxruntime since 1.10, the official training package (1.19) included
ACTIVATIONS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}


class ModelSpecError(ValueError):
    pass


def parse_spec(spec: str) -> tuple[str, list[int], str]:
    """'mlp:64-32-10', 'mlp:64-32-16-10:tanh', 'logreg:64-10' -> (kind, sizes, activation)."""
    parts = spec.split(":")
    kind = parts[0]
    if kind not in ("logreg", "mlp") or len(parts) not in (2, 3):
        raise ModelSpecError(f"model spec {spec!r}: expected logreg:IN-OUT or mlp:IN-H1-...-OUT[:relu|tanh|sigmoid]")
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
    """The forward model and its initial parameters (Glorot-uniform weights, zero biases)."""
    kind, sizes, activation = parse_spec(spec)
    rng = np.random.default_rng(seed)
    nodes, inputs, params = [], [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", sizes[0]])], {}
    x = "features"
    layers = len(sizes) - 1
    for i in range(layers):
        fan_in, fan_out = sizes[i], sizes[i + 1]
        w, b = f"layer{i}.weight", f"layer{i}.bias"
        limit = np.sqrt(6.0 / (fan_in + fan_out)) if kind == "mlp" else 0.0
        params[w] = rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32)
        params[b] = np.zeros(fan_out, np.float32)
        inputs += [
            helper.make_tensor_value_info(w, TensorProto.FLOAT, [fan_in, fan_out]),
            helper.make_tensor_value_info(b, TensorProto.FLOAT, [fan_out]),
        ]
        last = i == layers - 1
        out = "logits" if last else f"layer{i}.linear"
        nodes.append(helper.make_node("Gemm", [x, w, b], [out], name=f"layer{i}.gemm"))
        if not last:
            nodes.append(
                helper.make_node(ACTIVATIONS[activation], [out], [f"layer{i}.act"], name=f"layer{i}.{activation}")
            )
            out = f"layer{i}.act"
        x = out
    graph = helper.make_graph(
        nodes,
        spec.replace(":", "_"),
        inputs,
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", sizes[-1]])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="blockfl-edge")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model, params
