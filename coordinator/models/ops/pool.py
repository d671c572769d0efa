"""Pooling, 1-D and 2-D.

MaxPool: the training forward also asks for the indices of the maxima; the gradient goes back
         to exactly those places (MaxUnpool where windows do not overlap, else a
         ScatterElements that adds where windows share a maximum);
AveragePool: each output's gradient, divided by the number of values it averaged, spread over
         its window by a transposed convolution with a kernel of ones, one per channel;
GlobalAveragePool: the gradient divided by the number of positions, broadcast back.
"""

from __future__ import annotations

import numpy as np

from coordinator.models.ops.conv import explicit_pads
from coordinator.models.ops.step import Rule, Step, UnsupportedModelError, attrs, describe


def _window(step: Step, node):
    """(input shape, kernel, strides, dilations, pads) of a pooling node."""
    a = attrs(node)
    shape = step.static(node.input[0], node)
    kernel = list(a["kernel_shape"])
    n = len(kernel)
    strides, dilations = list(a.get("strides", [1] * n)), list(a.get("dilations", [1] * n))
    return shape, kernel, strides, dilations, explicit_pads(node, shape[2:], kernel, strides, dilations)


def maxpool_forward(step: Step, node) -> list[str]:
    if attrs(node).get("storage_order", 0):
        raise UnsupportedModelError(f"{describe(node)}: only storage_order=0 is supported")
    y, indices = step.b.op("MaxPool", [step.env[node.input[0]]], "maxpool", outputs=2, **attrs(node))
    step.saved[node.output[0]] = {"indices": indices}
    return [y, indices][: len(node.output)]


def maxpool_backward(step: Step, node, dy: str) -> None:
    b = step.b
    x = step.env[node.input[0]]
    target = node.input[0]
    relu = step.producers.get(target)
    if relu is not None and relu.op_type == "Relu" and step.readers[target] == 1:
        # Relu then MaxPool: the gradient reaches only the maxima, where relu' = sign(max); masking
        # the pooled gradient spares the Relu's rule on the larger input
        dy = b.op("Mul", [dy, b.op("Sign", [step.env[node.output[0]]])], "drelu_pooled")
        target = relu.input[0]
    indices = step.saved[node.output[0]]["indices"]
    shape, kernel, strides, dilations, pads = _window(step, node)
    if all(d == 1 and k <= s for k, s, d in zip(kernel, strides, dilations, strict=True)):  # windows apart
        n, pooled = len(kernel), step.static(node.output[0], node)[2:]
        restored = [(pooled[i] - 1) * strides[i] + kernel[i] - pads[i] - pads[n + i] for i in range(n)]
        size = [] if restored == list(shape[2:]) else [b.op("Shape", [x], "shape")]  # else a border was left over
        step.add(
            target, b.op("MaxUnpool", [dy, indices, *size], "dmaxpool", kernel_shape=kernel, strides=strides, pads=pads)
        )
        return
    size = b.op("Shape", [x], "shape")
    flat = b.ints([-1], "flat")
    zeros = b.op("Reshape", [b.op("ConstantOfShape", [size], "zeros"), flat], "zeros")
    spread = b.op(
        "ScatterElements",
        [zeros, b.op("Reshape", [indices, flat]), b.op("Reshape", [dy, flat])],
        "dmaxpool",
        axis=0,
        reduction="add",
    )
    step.add(target, b.op("Reshape", [spread, size], "dmaxpool"))


def averagepool_backward(step: Step, node, dy: str) -> None:
    a = attrs(node)
    if a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [])):
        raise UnsupportedModelError(f"{describe(node)}: only ceil_mode=0 without dilations is supported")
    b = step.b
    shape, kernel, strides, _, pads = _window(step, node)
    n, spatial = len(kernel), shape[2:]
    if a.get("count_include_pad", 0) or not any(pads):
        scale = b.const(1.0 / np.prod(kernel), "inv_count")
    else:  # windows at the border average fewer values
        counts = np.ones((), np.float64)
        for i, size in enumerate(spatial):
            starts = np.arange((size + pads[i] + pads[n + i] - kernel[i]) // strides[i] + 1) * strides[i] - pads[i]
            ends = np.minimum(starts + kernel[i], size + pads[n + i])
            counts = np.multiply.outer(counts, np.minimum(ends, size) - np.maximum(starts, 0))
        scale = b.const(1.0 / counts, "inv_count")
    ones = b.const(np.ones([shape[1], 1, *kernel]), "ones")
    out_pad = [(size + pads[i] + pads[n + i] - kernel[i]) % strides[i] for i, size in enumerate(spatial)]
    step.add(
        node.input[0],
        b.op(
            "ConvTranspose",
            [b.op("Mul", [dy, scale]), ones],
            "davgpool",
            strides=strides,
            pads=pads,
            group=shape[1],
            kernel_shape=kernel,
            output_padding=out_pad,
        ),
    )


def global_average_backward(step: Step, node, dy: str) -> None:
    b = step.b
    x = step.env[node.input[0]]
    count = int(np.prod(step.static(node.input[0], node)[2:]))
    spread = b.op("Expand", [dy, b.op("Shape", [x], "shape")], "spread")
    step.add(node.input[0], b.op("Mul", [spread, b.const(1.0 / count, "inv_count")], "dgap"))


RULES = {
    "MaxPool": Rule(maxpool_backward, maxpool_forward),
    "AveragePool": Rule(averagepool_backward),
    "GlobalAveragePool": Rule(global_average_backward),
}
