"""Compile a forward ONNX model into train-step graphs made only of standard ONNX operators.

Reverse-mode differentiation in the style of micrograd: each supported operator knows its local
gradient (coordinator/models/ops/, one module per family), the backward pass walks the forward
nodes in reverse and sums gradients where a value fans out. The result runs in the stock
onnxruntime InferenceSession on any platform:

    train_step.onnx   params, buffers, state, features, labels, learning_rate[, noise]
                      -> loss, new params, new buffers, new state
    train_epoch.onnx  the same step inside an ONNX Loop over a whole (pre-shuffled) epoch

Parameters are what the optimizer trains; buffers are model values a step updates otherwise
(BatchNormalization's running statistics); both are the model a federation averages.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper, shape_inference

from coordinator.models.importer import features_input
from coordinator.models.losses import emit_loss
from coordinator.models.netbuild import OPSET
from coordinator.models.ops import RULES
from coordinator.models.ops.builder import Builder
from coordinator.models.ops.step import Step, UnsupportedModelError, attrs, describe
from coordinator.models.optimizers import Optimizer, emit_optimizer

BUFFER_INPUTS = {"BatchNormalization": (3, 4)}  # running mean and variance
CONSTANT_INPUTS = {"Dropout": (1,)}  # the ratio: a float initializer, never trained


@dataclass
class ForwardGraph:
    nodes: list
    features: str
    output: str
    params: dict[str, tuple]  # trainable, in graph order
    buffers: dict[str, tuple]  # updated by the step, not by the optimizer
    constants: dict[str, np.ndarray]  # initializers that stay fixed
    values: dict[str, np.ndarray]  # every value known when compiling (constants and Constant nodes)
    shapes: dict[str, tuple]  # static shapes, None where only the run knows (the batch)
    feature_width: int
    output_width: int
    opset: int  # of the train-step graphs: the model's, 17 at least (ScatterElements adds from 16 on)

    @classmethod
    def from_model(cls, model: onnx.ModelProto, frozen=()) -> tuple[ForwardGraph, dict[str, np.ndarray]]:
        """Read a prepared forward model (coordinator/models/importer.py): float initializers and
        float inputs besides the features are parameters, except BatchNormalization's running
        statistics (buffers), Dropout ratios and the names in `frozen` (constants). Returns the
        graph and the initial values its initializers hold."""
        graph = model.graph
        values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        buffers = [
            node.input[i] for node in graph.node for i in BUFFER_INPUTS.get(node.op_type, ()) if i < len(node.input)
        ]
        fixed = {
            node.input[i] for node in graph.node for i in CONSTANT_INPUTS.get(node.op_type, ()) if i < len(node.input)
        }
        declared = {i.name: i for i in graph.input}
        for node in graph.node:
            for i in BUFFER_INPUTS.get(node.op_type, ()):
                if node.input[i] not in values and node.input[i] not in declared:
                    raise UnsupportedModelError(
                        f"{describe(node)}: its running mean and variance must be initializers of their own "
                        "(export with training=torch.onnx.TrainingMode.TRAINING; an eval-mode export may alias "
                        "them to the scale and bias)"
                    )
        if len(set(buffers)) != len(buffers):
            raise UnsupportedModelError("a running statistic feeds more than one BatchNormalization")
        unknown = set(frozen) - set(values)
        if unknown:
            raise UnsupportedModelError(f"--freeze {', '.join(sorted(unknown))}: no such initializer")
        inputs = [i for i in graph.input if i.name not in values]
        features = features_input(graph)
        shapes = _infer_shapes(model)
        params, buffer_shapes, constants, initial = {}, {}, {}, {}
        for name, value in values.items():
            if name in buffers:
                buffer_shapes[name], initial[name] = tuple(value.shape), value
            elif value.dtype == np.float32 and name not in fixed and name not in frozen:
                params[name], initial[name] = tuple(value.shape), value
            else:
                constants[name] = value
        for i in inputs:
            if i.name == features.name:
                continue
            dims = i.type.tensor_type.shape.dim
            if not all(d.HasField("dim_value") for d in dims) or i.type.tensor_type.elem_type != TensorProto.FLOAT:
                raise UnsupportedModelError(f"parameter input {i.name} needs a static float shape")
            (buffer_shapes if i.name in buffers else params)[i.name] = tuple(d.dim_value for d in dims)
        for node in graph.node:
            if node.op_type == "Constant":
                values[node.output[0]] = numpy_helper.to_array(attrs(node)["value"])
        if len(graph.output) != 1:
            raise UnsupportedModelError("the model needs exactly one output")
        out_shape = shapes.get(graph.output[0].name, ())
        if len(out_shape) != 2 or out_shape[1] is None:
            raise UnsupportedModelError("the model output needs a static width, [batch, outputs]")
        fwd = cls(
            list(graph.node),
            features.name,
            graph.output[0].name,
            params,
            {b: buffer_shapes[b] for b in buffers},
            constants,
            values,
            shapes,
            shapes[features.name][1],
            out_shape[1],
            max(OPSET, next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))),
        )
        return fwd, initial

    def needs(self) -> set[str]:
        """The values a gradient has to reach: the parameters and what they flow into."""
        needs = set(self.params)
        for node in self.nodes:
            if RULES[node.op_type].backward is not None and any(i in needs for i in node.input):
                needs.update(node.output)
        return needs

    def noise_width(self) -> int:
        """Uniform noise values per sample that a step's dropout masks use."""
        width = 0
        for node in self.nodes:
            if node.op_type == "Dropout":
                ratio = self.values.get(node.input[1]) if len(node.input) > 1 and node.input[1] else 0.5
                if ratio is None:
                    raise UnsupportedModelError(f"{describe(node)}: the ratio must be a constant")
                if float(ratio):
                    width += int(np.prod(self.shapes[node.input[0]][1:]))
        return width


def _infer_shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    inferred = shape_inference.infer_shapes(model, strict_mode=True)
    shapes = {}
    for info in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        if info.type.tensor_type.HasField("shape"):
            dims = info.type.tensor_type.shape.dim
            shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


@dataclass
class StepGraph:
    """What emit_step produced: the batch's loss sum and the names of every updated value."""

    loss_sum: str
    params: dict[str, str]
    buffers: dict[str, str]
    state: dict[str, str]


def emit_step(b: Builder, fwd: ForwardGraph, loss: str, opt: Optimizer, inputs: dict, out_names: dict) -> StepGraph:
    """Forward, loss, backward and optimizer for one batch.

    `inputs` maps every parameter, buffer and state name, and 'features', 'targets' (see
    losses.targets), 'grad_scale' (the gradient factor, times the learning rate where
    `folds_learning_rate`), 'learning_rate' and, when the model has dropout, 'noise' to tensor
    names; `out_names` optionally fixes output names.
    """
    env = {fwd.features: inputs["features"]} | {k: inputs[k] for k in [*fwd.params, *fwd.buffers]}
    for name, value in fwd.constants.items():
        env[name] = b.const(value, name, value.dtype)
    step = Step(b, env, fwd.shapes, fwd.values, fwd.needs(), noise=inputs.get("noise"), out_names=out_names)
    step.readers = Counter([fwd.output, *(i for node in fwd.nodes for i in node.input)])
    step.producers = {o: node for node in fwd.nodes for o in node.output}
    for node in fwd.nodes:
        rule = RULES[node.op_type]
        env.update(zip(node.output, rule.forward(step, node) if rule.forward else step.copy(node), strict=True))
    loss_sum, raw = emit_loss(b, loss, env[fwd.output], inputs["targets"])
    step.grads[fwd.output] = b.op("Mul", [raw, inputs["grad_scale"]], "dlogits")
    for node in reversed(fwd.nodes):
        dy = step.grads.get(node.output[0])
        if dy is not None:
            RULES[node.op_type].backward(step, node, dy)
    missing = [p for p in fwd.params if p not in step.grads]
    if missing:
        raise UnsupportedModelError(f"parameter(s) {', '.join(missing)} do not affect the output")
    state = {s: inputs[s] for s in opt.state_shapes(fwd.params)}
    new_params, new_state = emit_optimizer(
        b, opt, {p: inputs[p] for p in fwd.params}, step.grads, state, inputs["learning_rate"], out_names
    )
    return StepGraph(loss_sum, new_params, step.new_buffers, new_state)
