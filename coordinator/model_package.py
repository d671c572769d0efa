"""Write a model package: forward.onnx, train_step.onnx, train_epoch.onnx, params.npz, manifest.json.

The manifest names every graph input and output, so a device (or any ONNX Runtime user) can
drive the graphs without reading this code.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from .compiler import LOSSES, Builder, ForwardGraph, Optimizer, emit_step
from .model_zoo import IR_VERSION, OPSET

MANIFEST_FORMAT = 1


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
    inputs |= {"features": "features", "labels": "labels", "learning_rate": "learning_rate"}
    out_names = {"loss": "loss"} | {p: f"{p}.new" for p in fwd.params} | {s: f"{s}.new" for s in state_shapes}
    loss_value, new_params, new_state = emit_step(b, fwd, loss, opt, inputs, out_names)
    labels_info, label_dtype, label_shape = _labels_info(loss, "labels", fwd.output_width)
    graph_inputs = [_float_info(p, s) for p, s in fwd.params.items()] + [_float_info(s, sh) for s, sh in state_shapes.items()]
    graph_inputs += [_float_info("features", ["batch", feature_width]), labels_info, _float_info("learning_rate", [])]
    graph_outputs = [_float_info("loss", [])] + [_float_info(new_params[p], s) for p, s in fwd.params.items()]
    graph_outputs += [_float_info(new_state[s], sh) for s, sh in state_shapes.items()]
    model = _model(helper.make_graph(b.nodes, "train_step", graph_inputs, graph_outputs))
    interface = {
        "inputs": {"features": "features", "labels": "labels", "learning_rate": "learning_rate"},
        "outputs": {"loss": loss_value, "new_params": new_params, "new_state": new_state},
        "label_dtype": label_dtype,
        "label_shape": label_shape,
    }
    return model, interface


def compile_epoch(fwd: ForwardGraph, loss: str, opt: Optimizer, feature_width: int) -> tuple[onnx.ModelProto, dict]:
    """One call per epoch: an ONNX Loop over the batches of pre-shuffled features and labels."""
    state_shapes = opt.state_shapes(fwd.params)
    carried = list(fwd.params) + list(state_shapes)
    shapes = {**fwd.params, **state_shapes}
    outer = Builder()
    zero = outer.const(np.array(0, np.int64), "zero", np.int64)
    n = outer.op("Gather", [outer.op("Shape", ["features"]), zero], "n")
    trips = outer.op("Div", [outer.op("Sub", [outer.op("Add", [n, "batch_size"]), outer.const(np.array(1, np.int64), "one", np.int64)]), "batch_size"], "trips")

    body = Builder("body/")
    start = body.op("Unsqueeze", [body.op("Mul", ["body/i", "batch_size"]), body.const(np.array([0], np.int64), "ax", np.int64)], "start")
    end = body.op("Add", [start, body.op("Unsqueeze", ["batch_size", body.const(np.array([0], np.int64), "ax", np.int64)])], "end")
    axes = body.const(np.array([0], np.int64), "axes", np.int64)
    inputs = {k: f"body/{k}.in" for k in carried}
    inputs["features"] = body.op("Slice", ["features", start, end, axes], "xb")
    inputs["labels"] = body.op("Slice", ["labels", start, end, axes], "yb")
    inputs["learning_rate"] = "learning_rate"
    loss_value, new_params, new_state = emit_step(body, fwd, loss, opt, inputs, {})
    body.op("Identity", ["body/cond"], out_names=["body/cond.out"])
    new = {**new_params, **new_state}
    body_graph = helper.make_graph(
        body.nodes, "epoch_body",
        [helper.make_tensor_value_info("body/i", TensorProto.INT64, []), helper.make_tensor_value_info("body/cond", TensorProto.BOOL, [])]
        + [_float_info(inputs[k], shapes[k]) for k in carried],
        [helper.make_tensor_value_info("body/cond.out", TensorProto.BOOL, [])] + [_float_info(new[k], shapes[k]) for k in carried]
        + [_float_info(loss_value, [])],
    )
    outputs = [f"{k}.new" for k in carried] + ["losses"]
    outer.op("Loop", [trips, ""] + carried, out_names=outputs, outputs=len(outputs), body=body_graph)
    labels_info, _, _ = _labels_info(loss, "labels", fwd.output_width, batch="n")
    graph_inputs = [_float_info(p, s) for p, s in fwd.params.items()] + [_float_info(s, sh) for s, sh in state_shapes.items()]
    graph_inputs += [_float_info("features", ["n", feature_width]), labels_info, _float_info("learning_rate", []),
                     helper.make_tensor_value_info("batch_size", TensorProto.INT64, [])]
    graph_outputs = [_float_info(f"{k}.new", shapes[k]) for k in carried] + [_float_info("losses", ["batches"])]
    model = _model(helper.make_graph(outer.nodes, "train_epoch", graph_inputs, graph_outputs))
    interface = {
        "inputs": {"features": "features", "labels": "labels", "learning_rate": "learning_rate", "batch_size": "batch_size"},
        "outputs": {"losses": "losses", "new_params": {p: f"{p}.new" for p in fwd.params},
                    "new_state": {s: f"{s}.new" for s in state_shapes}},
    }
    return model, interface


def build_package(out_dir: str | Path, forward: onnx.ModelProto, params: dict[str, np.ndarray], *, loss: str, optimizer: Optimizer, model_name: str) -> dict:
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
    onnx.save(forward_io, out / "forward.onnx")
    onnx.save(step, out / "train_step.onnx")
    onnx.save(epoch, out / "train_epoch.onnx")
    np.savez(out / "params.npz", **{p: params[p].astype(np.float32) for p in fwd.params})
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
        "files": {"forward": "forward.onnx", "train_step": "train_step.onnx", "train_epoch": "train_epoch.onnx", "params": "params.npz"},
        "forward": {"inputs": {"features": fwd.features}, "output": fwd.output},
        **step_io,
        "epoch": epoch_io,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
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
