"""A forward model (a user's export, or one of the zoo's) made ready to compile.

- Its default-domain opset is 13 to 21, what exporters write today; the package's graphs keep it
  (17 at least).
- Every operator is one the compiler differentiates; otherwise one error names each unsupported
  operator and where it is.
- It has one input [batch, ...]. When that has more than two dimensions (images [batch, C, H, W],
  sensor windows [batch, C, L]), a Reshape from flat rows [batch, F] goes in front, so every
  package takes features the same way, one flat row per sample.
- BatchNormalization and Dropout are in their inference form (a training-mode export's
  training_mode flags and extra outputs dropped): forward.onnx infers, the train step trains.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from coordinator.models.ops import RULES, SUPPORTED_OPS
from coordinator.models.ops.step import UnsupportedModelError, describe

MIN_OPSET, MAX_OPSET = 13, 21
EXTRA_OUTPUTS = {"BatchNormalization": 1, "Dropout": 1}  # outputs an inference-form node keeps
NAMES_SHOWN = 3


def prepare(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[int]]:
    """A checked copy in the form the compiler and forward.onnx use, and the shape of one sample
    as the model took it (its features are that, flattened in C order)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions or not MIN_OPSET <= versions[0] <= MAX_OPSET:
        raise UnsupportedModelError(
            f"default-domain opset {versions[0] if versions else 'missing'}: export with an opset from "
            f"{MIN_OPSET} to {MAX_OPSET}"
        )
    check_operators(model.graph)
    sample = _flatten_features(model.graph)
    _inference_form(model.graph)
    return model, sample


def check_operators(graph: onnx.GraphProto) -> None:
    """Raise one error that names every unsupported operator, with (some of) its nodes."""
    unsupported: dict[str, list[str]] = {}
    for node in graph.node:
        standard = node.domain in ("", "ai.onnx")
        if not standard or node.op_type not in RULES:
            key = node.op_type if standard else f"{node.domain}:{node.op_type}"
            unsupported.setdefault(key[:64], []).append((node.name or node.output[0])[:64])
    if unsupported:
        listed = "; ".join(
            f"{op} ({len(nodes)} node{'s' if len(nodes) > 1 else ''}: {', '.join(nodes[:NAMES_SHOWN])}"
            f"{', ...' if len(nodes) > NAMES_SHOWN else ''})"
            for op, nodes in sorted(unsupported.items())
        )
        raise UnsupportedModelError(f"unsupported operator(s): {listed}. Supported: {', '.join(SUPPORTED_OPS)}")


def features_input(graph: onnx.GraphProto) -> onnx.ValueInfoProto:
    """The one graph input with a dynamic first (batch) dimension."""
    initializers = {i.name for i in graph.initializer}
    batched = [
        i
        for i in graph.input
        if i.name not in initializers
        and i.type.tensor_type.shape.dim
        and not i.type.tensor_type.shape.dim[0].HasField("dim_value")
    ]
    if len(batched) != 1:
        raise UnsupportedModelError(
            f"the model needs exactly one input with a dynamic batch dimension, found {len(batched)} "
            "(torch.onnx.export: dynamic_axes={'input': {0: 'batch'}, 'output': {0: 'batch'}})"
        )
    return batched[0]


def _flatten_features(graph: onnx.GraphProto) -> list[int]:
    features = features_input(graph)
    dims = features.type.tensor_type.shape.dim[1:]
    if not dims or not all(d.HasField("dim_value") for d in dims):
        raise UnsupportedModelError(f"input {features.name}: every dimension but the batch must be static")
    shape = [d.dim_value for d in dims]
    if len(shape) == 1:
        return shape
    flat = f"{features.name}.flat"
    graph.initializer.append(numpy_helper.from_array(np.array([-1, *shape], np.int64), f"{features.name}.shape"))
    graph.node.insert(
        0, helper.make_node("Reshape", [flat, f"{features.name}.shape"], [features.name], name="features.unflatten")
    )
    position = list(graph.input).index(features)
    graph.input.remove(features)
    info = helper.make_tensor_value_info(flat, features.type.tensor_type.elem_type, ["batch", int(np.prod(shape))])
    graph.input.insert(position, info)
    return shape


def _inference_form(graph: onnx.GraphProto) -> None:
    used = {i for node in graph.node for i in node.input} | {o.name for o in graph.output}
    for node in graph.node:
        keep = EXTRA_OUTPUTS.get(node.op_type)
        if keep is None:
            continue
        extra = [o for o in node.output[keep:] if o]
        if any(o in used for o in extra):
            raise UnsupportedModelError(f"{describe(node)}: its training-mode outputs are used")
        del node.output[keep:]
        if node.op_type == "BatchNormalization":
            kept = [a for a in node.attribute if a.name != "training_mode"]
            del node.attribute[:]
            node.attribute.extend(kept)
        else:
            del node.input[2:]  # Dropout's training_mode: absent means inference
