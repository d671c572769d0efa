"""Assembling the zoo's forward models: `features` [batch, F] in, every parameter and buffer a graph
input (so a device feeds each round's global model), `logits` [batch, C] out; initial values kept
apart (params.npz), drawn with a fixed seed."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # loads in every onnxruntime since 1.10, the official training package (1.19) included


class ModelSpecError(ValueError):
    pass


class Net:
    def __init__(self, width: int, seed: int):
        self.rng = np.random.default_rng(seed)
        self.inputs = [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", width])]
        self.nodes: list = []
        self.initializers: list = []
        self.values: dict[str, np.ndarray] = {}
        self.x = "features"

    def value(self, name: str, value: np.ndarray) -> str:
        """A parameter or buffer: a graph input, with its initial value."""
        self.values[name] = np.asarray(value, np.float32)
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(np.shape(value))))
        return name

    def uniform(self, name: str, shape: tuple, fan_in: int, fan_out: int | None = None) -> str:
        """Glorot-uniform with fan_out, He-uniform (for a ReLU after it) without."""
        limit = np.sqrt(6.0 / (fan_in + fan_out)) if fan_out else np.sqrt(6.0 / fan_in)
        return self.value(name, self.rng.uniform(-limit, limit, shape))

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def apply(self, op: str, inputs: list[str], name: str, out: str | None = None, **attrs) -> str:
        """A node on the current value (and `inputs`); its output becomes the current value."""
        out = out or f"{name}.out"
        self.nodes.append(helper.make_node(op, [self.x, *inputs], [out], name=name, **attrs))
        self.x = out
        return out

    def model(self, name: str, outputs: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        graph = helper.make_graph(
            self.nodes,
            name,
            self.inputs,
            [helper.make_tensor_value_info(self.x, TensorProto.FLOAT, ["batch", outputs])],
            initializer=self.initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="blockfl-edge")
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        return model, self.values
