"""Operators that train differently from how they infer.

BatchNormalization: a train step normalizes with the batch's statistics (mean and biased
variance per channel) and moves the running mean and variance, the model's buffers, towards them
as ONNX defines it: running = momentum * running + (1 - momentum) * batch. Inference (forward.onnx)
uses the running values. Gradient, with xhat the normalized input and r = 1 / sqrt(var + eps):

    dbias = sum(dy), dscale = sum(dy * xhat), dx = r (dxhat - mean(dxhat) - xhat mean(dxhat * xhat)),
    where dxhat = dy * scale (sums and means over every axis but the channel).

Dropout: a step keeps each value where the step's noise (uniform [0, 1), fed by the trainer from
its seed, so a run repeats) exceeds the ratio and scales it by 1 / (1 - ratio); the gradient
passes through the same mask. Inference keeps everything.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from coordinator.models.ops.step import Rule, Step, attrs


def batchnorm_forward(step: Step, node) -> list[str]:
    a = attrs(node)
    eps, momentum = a.get("epsilon", 1e-5), a.get("momentum", 0.9)
    b = step.b
    x, scale, bias, mean, var = node.input
    shape = step.static(x, node)
    rank, channels = len(shape), shape[1]
    axes = [0, *range(2, rank)]
    per_channel = lambda name: b.reshape(step.env[name], [channels] + [1] * (rank - 2), "per_channel")  # noqa: E731
    xv = step.env[x]
    batch_mean = b.reduce_mean(xv, axes, "batch_mean")
    centred = b.op("Sub", [xv, batch_mean], "centred")
    batch_var = b.reduce_mean(b.op("Mul", [centred, centred]), axes, "batch_var")
    inv = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [batch_var, b.const(eps, "eps")])])], "inv_std")
    xhat = b.op("Mul", [centred, inv], "xhat")
    gain = per_channel(scale)
    y = b.op("Add", [b.op("Mul", [xhat, gain]), per_channel(bias)], "batchnorm")
    for buffer, batch in ((mean, batch_mean), (var, batch_var)):
        moved = b.op("Mul", [b.reshape(batch, [channels]), b.const(1.0 - momentum, "1-momentum")])
        kept = b.op("Mul", [step.env[buffer], b.const(momentum, "momentum")])
        step.new_buffers[buffer] = b.op("Add", [kept, moved], out_names=[step.out_names.get(buffer) or b.fresh(buffer)])
    step.saved[node.output[0]] = {"xhat": xhat, "inv": inv, "gain": gain, "axes": axes}
    return [y]


def batchnorm_backward(step: Step, node, dy: str) -> None:
    b = step.b
    x, scale, bias = node.input[:3]
    s = step.saved[node.output[0]]
    axes, xhat = s["axes"], s["xhat"]
    if bias in step.needs:
        step.add(bias, b.reduce_sum(dy, axes, 0, "dbn_bias"))
    if scale in step.needs:
        step.add(scale, b.reduce_sum(b.op("Mul", [dy, xhat]), axes, 0, "dbn_scale"))
    if x in step.needs:
        dxhat = b.op("Mul", [dy, s["gain"]], "dxhat")
        centred = b.op("Sub", [dxhat, b.reduce_mean(dxhat, axes)])
        along = b.op("Mul", [xhat, b.reduce_mean(b.op("Mul", [dxhat, xhat]), axes)])
        step.add(x, b.op("Mul", [s["inv"], b.op("Sub", [centred, along])], "dbn_x"))


def dropout_forward(step: Step, node) -> list[str]:
    b = step.b
    ratio = float(step.value(node.input[1], node)) if len(node.input) > 1 and node.input[1] else 0.5
    x = step.env[node.input[0]]
    if ratio == 0.0:
        step.saved[node.output[0]] = {"mask": None}
        return [x]
    kept = b.op(
        "Cast", [b.op("Less", [b.const(ratio, "ratio"), step.take_noise(node.input[0], node)])], to=TensorProto.FLOAT
    )
    mask = b.op("Mul", [kept, b.const(np.float32(1.0 / (1.0 - ratio)), "keep_scale")], "mask")
    step.saved[node.output[0]] = {"mask": mask}
    return [b.op("Mul", [x, mask], "dropout")]


def dropout_backward(step: Step, node, dy: str) -> None:
    mask = step.saved[node.output[0]]["mask"]
    step.add(node.input[0], dy if mask is None else step.b.op("Mul", [dy, mask], "ddropout"))


RULES = {
    "BatchNormalization": Rule(batchnorm_backward, batchnorm_forward),
    "Dropout": Rule(dropout_backward, dropout_forward),
}
