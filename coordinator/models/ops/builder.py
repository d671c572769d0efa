"""Appending ONNX nodes with fresh names, and the small emission helpers every operator's rule shares."""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper


class Builder:
    """Appends nodes with fresh, prefixed names (a Loop body must not reuse outer names).

    `opset` is the graph's default-domain opset: a few operators changed form across versions
    (ReduceMean takes its axes as an input from 18 on)."""

    def __init__(self, prefix: str = "", opset: int = 17):
        self.prefix = prefix
        self.opset = opset
        self.nodes: list = []
        self._count = 0

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}#{self._count}"

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, outputs: int = 1, out_names=None, **attrs):
        names = out_names or [self.fresh(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=self.fresh(op_type), **attrs))
        return names[0] if outputs == 1 else names

    def const(self, value, hint: str = "const", dtype=np.float32) -> str:
        name = self.fresh(hint)
        self.nodes.append(
            helper.make_node(
                "Constant",
                [],
                [name],
                name=self.fresh("Constant"),
                value=numpy_helper.from_array(np.asarray(value, dtype=dtype), name),
            )
        )
        return name

    def ints(self, values, hint: str = "ints") -> str:
        return self.const(np.asarray(values, np.int64), hint, np.int64)

    def reduce_sum(self, x: str, axes, keepdims: int, hint: str = "sum") -> str:
        return self.op("ReduceSum", [x, self.ints(list(axes), "axes")], hint, keepdims=keepdims)

    def reduce_mean(self, x: str, axes, hint: str = "mean") -> str:
        """Mean over `axes`, dimensions kept."""
        if self.opset >= 18:
            return self.op("ReduceMean", [x, self.ints(list(axes), "axes")], hint, keepdims=1)
        return self.op("ReduceMean", [x], hint, axes=list(axes), keepdims=1)

    def reshape(self, x: str, shape, hint: str = "reshape") -> str:
        """Reshape to a static shape (-1 allowed) or to the shape of another value (a name)."""
        target = self.op("Shape", [shape], "shape") if isinstance(shape, str) else self.ints(list(shape), "shape")
        return self.op("Reshape", [x, target], hint)


def reduce_to(b: Builder, grad: str, shape: tuple, out_shape: tuple) -> str:
    """Sum a gradient of an output shaped `out_shape` over the axes an input of `shape` was broadcast along.

    Dimensions are ints, or None where only the run knows them (the batch), which broadcasting
    never stretches."""
    lead = len(out_shape) - len(shape)
    kept = [lead + i for i, d in enumerate(shape) if d == 1 and out_shape[lead + i] != 1]
    if lead:
        grad = b.reduce_sum(grad, range(lead), 0, "reduce")
    if kept:
        grad = b.reduce_sum(grad, [k - lead for k in kept], 1, "reduce")
    return grad
