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

from coordinator.models.compiler import ForwardGraph, emit_step
from coordinator.models.importer import prepare
from coordinator.models.losses import loss_factors, targets
from coordinator.models.netbuild import IR_VERSION
from coordinator.models.ops.builder import Builder
from coordinator.models.optimizers import Optimizer, folds_learning_rate
from edge_sdk.training.package import GRAPH_FILES, LOSSES, MANIFEST_FILE, MANIFEST_FORMAT, PARAMS_FILE


def _labels_info(loss: str, name: str, width: int, batch="batch"):
    if loss == "cross-entropy":
        return helper.make_tensor_value_info(name, TensorProto.INT64, [batch]), "int64", [batch]
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, width]), "float32", [batch, width]


def _float_info(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _model(graph, opset: int) -> onnx.ModelProto:
    ops = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=ops, producer_name="blockfl-edge")
    model.ir_version = max(IR_VERSION, helper.find_min_ir_version_for(ops))
    onnx.checker.check_model(model, full_check=True)
    return model


def _carried(fwd: ForwardGraph, opt: Optimizer) -> dict[str, tuple]:
    """What a step reads and writes back: parameters, buffers, optimizer state (with shapes)."""
    return {**fwd.params, **fwd.buffers, **opt.state_shapes(fwd.params)}


def _outputs(fwd: ForwardGraph, opt: Optimizer, names) -> dict:
    """The manifest's map of every updated value to its output name."""
    return {
        "new_params": {p: names[p] for p in fwd.params},
        "new_buffers": {k: names[k] for k in fwd.buffers},
        "new_state": {s: names[s] for s in opt.state_shapes(fwd.params)},
    }


def compile_step(fwd: ForwardGraph, loss: str, opt: Optimizer) -> tuple[onnx.ModelProto, dict]:
    carried = _carried(fwd, opt)
    noise = fwd.noise_width()
    b = Builder(opset=fwd.opset)
    inputs = {k: k for k in carried} | {
        "features": "features",
        "learning_rate": "learning_rate",
        "targets": targets(b, loss, "labels", fwd.output_width),
    }
    count = b.op("Cast", [b.op("Size", ["labels"])], "label_count", to=TensorProto.FLOAT)
    loss_factor, grad_factor = loss_factors(b, loss, count)
    if folds_learning_rate(opt):
        grad_factor = b.op("Mul", [grad_factor, "learning_rate"], "lr_scale")
    inputs["grad_scale"] = grad_factor
    if noise:
        inputs["noise"] = "noise"
    out_names = {k: f"{k}.new" for k in carried}
    step = emit_step(b, fwd, loss, opt, inputs, out_names)
    b.op("Mul", [step.loss_sum, loss_factor], out_names=["loss"])
    new = {**step.params, **step.buffers, **step.state}
    labels_info, label_dtype, label_shape = _labels_info(loss, "labels", fwd.output_width)
    graph_inputs = [_float_info(k, shape) for k, shape in carried.items()]
    graph_inputs += [
        _float_info("features", ["batch", fwd.feature_width]),
        labels_info,
        _float_info("learning_rate", []),
    ]
    graph_inputs += [_float_info("noise", ["batch", noise])] if noise else []
    graph_outputs = [_float_info("loss", [])] + [_float_info(new[k], shape) for k, shape in carried.items()]
    model = _model(helper.make_graph(b.nodes, "train_step", graph_inputs, graph_outputs), fwd.opset)
    names = {"features": "features", "labels": "labels", "learning_rate": "learning_rate"}
    interface = {
        "inputs": names | ({"noise": "noise"} if noise else {}),
        "outputs": {"loss": "loss", **_outputs(fwd, opt, new)},
        "label_dtype": label_dtype,
        "label_shape": label_shape,
    }
    return model, interface


def compile_epoch(fwd: ForwardGraph, loss: str, opt: Optimizer, unroll: int = 2) -> tuple[onnx.ModelProto, dict]:
    """Many steps in one call: an ONNX Loop over the full batches of pre-shuffled data.

    `features` holds K * unroll * batch_size rows (the caller runs the rest with train_step.onnx),
    and `noise` as many rows when the model has dropout. Everything that does not change between
    batches (one-hot targets, loss and gradient factors) is computed once, outside the loop; each
    iteration gathers `unroll` batches and runs that many steps, which spreads the Loop's own cost
    per iteration over several steps.
    """
    carried = _carried(fwd, opt)
    width, noise = fwd.output_width, fwd.noise_width()
    outer = Builder(opset=fwd.opset)
    batch = outer.op("Unsqueeze", ["batch_size", outer.ints([0], "axis0")], "batch1d")

    def blocks(rows: str, columns: int) -> str:  # [n, columns] -> [iterations, unroll, batch, columns]
        shape = outer.op("Concat", [outer.ints([-1, unroll], "lead"), batch, outer.ints([columns], "cols")], axis=0)
        return outer.op("Reshape", [rows, shape], "blocks")

    per_iteration = {
        "features": blocks("features", fwd.feature_width),
        "targets": blocks(targets(outer, loss, "labels", width), width),
    }
    if noise:
        per_iteration["noise"] = blocks("noise", noise)
    trips = outer.op("Gather", [outer.op("Shape", [per_iteration["features"]]), outer.ints(0, "zero")], "trips")
    rows = outer.op("Cast", ["batch_size"], "rows", to=TensorProto.FLOAT)
    count = (
        rows
        if loss == "cross-entropy"
        else outer.op("Mul", [rows, outer.const(float(width), "width_f")], "label_count")
    )
    loss_factor, grad_factor = loss_factors(outer, loss, count)
    if folds_learning_rate(opt):
        grad_factor = outer.op("Mul", [grad_factor, "learning_rate"], "lr_scale")

    body = Builder("body/", opset=fwd.opset)
    gathered = {key: body.op("Gather", [value, "body/i"], key, axis=0) for key, value in per_iteration.items()}
    carried_in = {k: f"body/{k}.in" for k in carried}
    current = dict(carried_in)
    sums = []
    for j in range(unroll):
        index = body.ints(j, "j")
        inputs = dict(current) | {
            key: body.op("Gather", [value, index], key, axis=0) for key, value in gathered.items()
        }
        inputs |= {"learning_rate": "learning_rate", "grad_scale": grad_factor}
        step = emit_step(body, fwd, loss, opt, inputs, {})
        sums.append(body.op("Unsqueeze", [step.loss_sum, body.ints([0], "ax")], "sum1d"))
        current = {**step.params, **step.buffers, **step.state}
    loss_sum = body.op("Concat", sums, "sums", axis=0)
    body.op("Identity", ["body/cond"], out_names=["body/cond.out"])
    body_graph = helper.make_graph(
        body.nodes,
        "epoch_body",
        [
            helper.make_tensor_value_info("body/i", TensorProto.INT64, []),
            helper.make_tensor_value_info("body/cond", TensorProto.BOOL, []),
        ]
        + [_float_info(carried_in[k], shape) for k, shape in carried.items()],
        [helper.make_tensor_value_info("body/cond.out", TensorProto.BOOL, [])]
        + [_float_info(current[k], shape) for k, shape in carried.items()]
        + [_float_info(loss_sum, [unroll])],
    )
    outputs = [f"{k}.new" for k in carried] + ["loss_sums"]
    outer.op("Loop", [trips, ""] + list(carried), out_names=outputs, outputs=len(outputs), body=body_graph)
    flat = outer.op("Reshape", ["loss_sums", outer.ints([-1], "flat")], "loss_sums_flat")
    outer.op("Mul", [flat, loss_factor], out_names=["losses"])
    labels_info, _, _ = _labels_info(loss, "labels", width, batch="n")
    graph_inputs = [_float_info(k, shape) for k, shape in carried.items()]
    graph_inputs += [
        _float_info("features", ["n", fwd.feature_width]),
        labels_info,
        _float_info("learning_rate", []),
        helper.make_tensor_value_info("batch_size", TensorProto.INT64, []),
    ]
    graph_inputs += [_float_info("noise", ["n", noise])] if noise else []
    graph_outputs = [_float_info(f"{k}.new", shape) for k, shape in carried.items()] + [
        _float_info("losses", ["batches"])
    ]
    model = _model(helper.make_graph(outer.nodes, "train_epoch", graph_inputs, graph_outputs), fwd.opset)
    names = {"features": "features", "labels": "labels", "learning_rate": "learning_rate", "batch_size": "batch_size"}
    interface = {
        "inputs": names | ({"noise": "noise"} if noise else {}),
        "outputs": {"losses": "losses", **_outputs(fwd, opt, {k: f"{k}.new" for k in carried})},
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
    frozen=(),
) -> dict:
    """Compile and write the package; returns the manifest. `params` holds initial values of
    parameters and buffers the forward model takes as inputs (initializers carry their own);
    `frozen` names initializers to keep fixed."""
    if loss not in LOSSES:
        raise ValueError(f"loss {loss!r}: expected one of {', '.join(LOSSES)}")
    forward, sample_shape = prepare(forward)
    fwd, found = ForwardGraph.from_model(forward, frozen)
    values = {**found, **params}
    shapes = {**fwd.params, **fwd.buffers}
    missing = [k for k in shapes if k not in values]
    if missing:
        raise ValueError(f"no initial value for {', '.join(missing)}")
    for k, shape in shapes.items():
        if tuple(values[k].shape) != shape:
            raise ValueError(f"initial value of {k} has shape {values[k].shape}, the model says {shape}")

    step, step_io = compile_step(fwd, loss, optimizer)
    epoch, epoch_io = compile_epoch(fwd, loss, optimizer)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for key, graph in (
        ("forward", _forward_with_model_inputs(forward, fwd)),
        ("train_step", step),
        ("train_epoch", epoch),
    ):
        onnx.save(graph, out / GRAPH_FILES[key])
    np.savez(out / PARAMS_FILE, **{k: values[k].astype(np.float32) for k in shapes})
    state_shapes = optimizer.state_shapes(fwd.params)
    manifest = {
        "format": MANIFEST_FORMAT,
        "model": model_name,
        "loss": loss,
        "optimizer": optimizer.to_json(),
        "num_features": fwd.feature_width,
        "sample_shape": sample_shape,
        "num_outputs": fwd.output_width,
        "params": list(fwd.params),
        "param_shapes": {p: list(s) for p, s in fwd.params.items()},
        "buffers": list(fwd.buffers),
        "buffer_shapes": {k: list(s) for k, s in fwd.buffers.items()},
        "frozen": sorted(frozen),
        "state": list(state_shapes),
        "state_shapes": {s: list(sh) for s, sh in state_shapes.items()},
        "state_init": "zeros",
        "noise_width": fwd.noise_width(),
        "files": {**GRAPH_FILES, "params": PARAMS_FILE},
        "forward": {"inputs": {"features": fwd.features}, "output": fwd.output},
        **step_io,
        "epoch": epoch_io,
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _forward_with_model_inputs(model: onnx.ModelProto, fwd: ForwardGraph) -> onnx.ModelProto:
    """The forward model with every parameter and buffer as a graph input (initializers removed):
    a device feeds each round's global model."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    model_values = {**fwd.params, **fwd.buffers}
    as_inputs = {i.name for i in graph.input}
    keep = [i for i in graph.initializer if i.name not in model_values]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    for k, shape in model_values.items():
        if k not in as_inputs:
            graph.input.append(_float_info(k, shape))
    return model
