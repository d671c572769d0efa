"""Write a model package (format: edge_sdk/training/package.py): graphs, initial parameters, manifest.

The manifest names every graph input and output, so a device (or any ONNX Runtime user) can
drive the graphs without reading this code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from coordinator.models.compiler import (
    Builder,
    ForwardGraph,
    Optimizer,
    emit_step,
    folds_learning_rate,
    loss_factors,
    targets,
)
from coordinator.models.zoo import IR_VERSION, OPSET
from edge_sdk.training.package import GRAPH_FILES, LOSSES, MANIFEST_FILE, MANIFEST_FORMAT, PARAMS_FILE


def _labels_info(loss: str, name: str, width: int, batch="batch"):
    if loss == "cross-entropy":
        return helper.make_tensor_value_info(name, TensorProto.INT64, [batch]), "int64", [batch]
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, width]), "float32", [batch, width]


def _float_info(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _model(graph) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="blockfl-edge")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def compile_step(fwd: ForwardGraph, loss: str, opt: Optimizer, feature_width: int) -> tuple[onnx.ModelProto, dict]:
    state_shapes = opt.state_shapes(fwd.params)
    b = Builder()
    inputs = {p: p for p in fwd.params} | {s: s for s in state_shapes}
    inputs |= {
        "features": "features",
        "learning_rate": "learning_rate",
        "targets": targets(b, loss, "labels", fwd.output_width),
    }
    count = b.op("Cast", [b.op("Size", ["labels"])], "label_count", to=TensorProto.FLOAT)
    loss_factor, grad_factor = loss_factors(b, loss, count)
    if folds_learning_rate(opt):
        grad_factor = b.op("Mul", [grad_factor, "learning_rate"], "lr_scale")
    inputs["grad_scale"] = grad_factor
    out_names = {p: f"{p}.new" for p in fwd.params} | {s: f"{s}.new" for s in state_shapes}
    loss_sum, new_params, new_state = emit_step(b, fwd, loss, opt, inputs, out_names)
    b.op("Mul", [loss_sum, loss_factor], out_names=["loss"])
    labels_info, label_dtype, label_shape = _labels_info(loss, "labels", fwd.output_width)
    graph_inputs = [_float_info(p, s) for p, s in fwd.params.items()] + [
        _float_info(s, sh) for s, sh in state_shapes.items()
    ]
    graph_inputs += [_float_info("features", ["batch", feature_width]), labels_info, _float_info("learning_rate", [])]
    graph_outputs = [_float_info("loss", [])] + [_float_info(new_params[p], s) for p, s in fwd.params.items()]
    graph_outputs += [_float_info(new_state[s], sh) for s, sh in state_shapes.items()]
    model = _model(helper.make_graph(b.nodes, "train_step", graph_inputs, graph_outputs))
    interface = {
        "inputs": {"features": "features", "labels": "labels", "learning_rate": "learning_rate"},
        "outputs": {"loss": "loss", "new_params": new_params, "new_state": new_state},
        "label_dtype": label_dtype,
        "label_shape": label_shape,
    }
    return model, interface


def compile_epoch(
    fwd: ForwardGraph, loss: str, opt: Optimizer, feature_width: int, unroll: int = 2
) -> tuple[onnx.ModelProto, dict]:
    """Many steps in one call: an ONNX Loop over the full batches of pre-shuffled data.

    `features` holds K * unroll * batch_size rows (the caller runs the rest with train_step.onnx).
    Everything that does not change between batches (one-hot targets, loss and gradient factors)
    is computed once, outside the loop; each iteration gathers `unroll` batches and runs that many
    steps, which spreads the Loop's own cost per iteration over several steps.
    """
    state_shapes = opt.state_shapes(fwd.params)
    carried = list(fwd.params) + list(state_shapes)
    shapes = {**fwd.params, **state_shapes}
    width = fwd.output_width
    outer = Builder()
    i64 = lambda v, hint: outer.const(np.array(v, np.int64), hint, np.int64)
    batch = outer.op("Unsqueeze", ["batch_size", i64([0], "axis0")], "batch1d")
    x4 = outer.op(
        "Reshape",
        ["features", outer.op("Concat", [i64([-1, unroll], "lead"), batch, i64([feature_width], "width")], axis=0)],
        "x4",
    )
    t4 = outer.op(
        "Reshape",
        [
            targets(outer, loss, "labels", width),
            outer.op("Concat", [i64([-1, unroll], "lead"), batch, i64([width], "outputs")], axis=0),
        ],
        "t4",
    )
    trips = outer.op("Gather", [outer.op("Shape", [x4]), i64(0, "zero")], "trips")
    rows = outer.op("Cast", ["batch_size"], "rows", to=TensorProto.FLOAT)
    count = (
        rows
        if loss == "cross-entropy"
        else outer.op("Mul", [rows, outer.const(float(width), "width_f")], "label_count")
    )
    loss_factor, grad_factor = loss_factors(outer, loss, count)
    if folds_learning_rate(opt):
        grad_factor = outer.op("Mul", [grad_factor, "learning_rate"], "lr_scale")

    body = Builder("body/")
    xs = body.op("Gather", [x4, "body/i"], "xs", axis=0)
    ts = body.op("Gather", [t4, "body/i"], "ts", axis=0)
    carried_in = {k: f"body/{k}.in" for k in carried}
    current = dict(carried_in)
    sums = []
    for j in range(unroll):
        index = body.const(np.array(j, np.int64), "j", np.int64)
        inputs = dict(current)
        inputs["features"] = body.op("Gather", [xs, index], "xb", axis=0)
        inputs["targets"] = body.op("Gather", [ts, index], "tb", axis=0)
        inputs |= {"learning_rate": "learning_rate", "grad_scale": grad_factor}
        loss_sum, new_params, new_state = emit_step(body, fwd, loss, opt, inputs, {})
        sums.append(body.op("Unsqueeze", [loss_sum, body.const(np.array([0], np.int64), "ax", np.int64)], "sum1d"))
        current = {**new_params, **new_state}
    loss_sum = body.op("Concat", sums, "sums", axis=0)
    body.op("Identity", ["body/cond"], out_names=["body/cond.out"])
    new = current
    body_graph = helper.make_graph(
        body.nodes,
        "epoch_body",
        [
            helper.make_tensor_value_info("body/i", TensorProto.INT64, []),
            helper.make_tensor_value_info("body/cond", TensorProto.BOOL, []),
        ]
        + [_float_info(carried_in[k], shapes[k]) for k in carried],
        [helper.make_tensor_value_info("body/cond.out", TensorProto.BOOL, [])]
        + [_float_info(new[k], shapes[k]) for k in carried]
        + [_float_info(loss_sum, [unroll])],
    )
    outputs = [f"{k}.new" for k in carried] + ["loss_sums"]
    outer.op("Loop", [trips, ""] + carried, out_names=outputs, outputs=len(outputs), body=body_graph)
    flat = outer.op("Reshape", ["loss_sums", i64([-1], "flat")], "loss_sums_flat")
    outer.op("Mul", [flat, loss_factor], out_names=["losses"])
    labels_info, _, _ = _labels_info(loss, "labels", width, batch="n")
    graph_inputs = [_float_info(p, s) for p, s in fwd.params.items()] + [
        _float_info(s, sh) for s, sh in state_shapes.items()
    ]
    graph_inputs += [
        _float_info("features", ["n", feature_width]),
        labels_info,
        _float_info("learning_rate", []),
        helper.make_tensor_value_info("batch_size", TensorProto.INT64, []),
    ]
    graph_outputs = [_float_info(f"{k}.new", shapes[k]) for k in carried] + [_float_info("losses", ["batches"])]
    model = _model(helper.make_graph(outer.nodes, "train_epoch", graph_inputs, graph_outputs))
    interface = {
        "inputs": {
            "features": "features",
            "labels": "labels",
            "learning_rate": "learning_rate",
            "batch_size": "batch_size",
        },
        "outputs": {
            "losses": "losses",
            "new_params": {p: f"{p}.new" for p in fwd.params},
            "new_state": {s: f"{s}.new" for s in state_shapes},
        },
        "steps_per_iteration": unroll,
        "rows": "a multiple of batch_size * steps_per_iteration; run the remaining batches with train_step",
    }
    return model, interface


def build_package(
    out_dir: str | Path,
    forward: onnx.ModelProto,
    params: dict[str, np.ndarray],
    *,
    loss: str,
    optimizer: Optimizer,
    model_name: str,
) -> dict:
    """Compile and write the package; returns the manifest."""
    if loss not in LOSSES:
        raise ValueError(f"loss {loss!r}: expected one of {', '.join(LOSSES)}")
    fwd, found = ForwardGraph.from_model(forward)
    params = {**found, **params}
    missing = [p for p in fwd.params if p not in params]
    if missing:
        raise ValueError(f"no initial value for parameter(s) {', '.join(missing)}")
    for p, shape in fwd.params.items():
        if tuple(params[p].shape) != shape:
            raise ValueError(f"initial value of {p} has shape {params[p].shape}, the model says {shape}")
    feature_input = next(i for i in forward.graph.input if i.name == fwd.features)
    feature_width = feature_input.type.tensor_type.shape.dim[1].dim_value
    if not fwd.output_width:
        raise ValueError("the model output needs a static width, [batch, outputs]")

    step, step_io = compile_step(fwd, loss, optimizer, feature_width)
    epoch, epoch_io = compile_epoch(fwd, loss, optimizer, feature_width)
    forward_io = _forward_with_param_inputs(forward, fwd)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for key, graph in (("forward", forward_io), ("train_step", step), ("train_epoch", epoch)):
        onnx.save(graph, out / GRAPH_FILES[key])
    np.savez(out / PARAMS_FILE, **{p: params[p].astype(np.float32) for p in fwd.params})
    state_shapes = optimizer.state_shapes(fwd.params)
    manifest = {
        "format": MANIFEST_FORMAT,
        "model": model_name,
        "loss": loss,
        "optimizer": optimizer.to_json(),
        "num_features": feature_width,
        "num_outputs": fwd.output_width,
        "params": list(fwd.params),
        "param_shapes": {p: list(s) for p, s in fwd.params.items()},
        "state": list(state_shapes),
        "state_shapes": {s: list(sh) for s, sh in state_shapes.items()},
        "state_init": "zeros",
        "files": {**GRAPH_FILES, "params": PARAMS_FILE},
        "forward": {"inputs": {"features": fwd.features}, "output": fwd.output},
        **step_io,
        "epoch": epoch_io,
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _forward_with_param_inputs(model: onnx.ModelProto, fwd: ForwardGraph) -> onnx.ModelProto:
    """The forward model with every trainable parameter as a graph input (initializers removed)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    as_inputs = {i.name for i in graph.input}
    keep = [i for i in graph.initializer if i.name not in fwd.params]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    for p, shape in fwd.params.items():
        if p not in as_inputs:
            graph.input.append(_float_info(p, shape))
    return model
