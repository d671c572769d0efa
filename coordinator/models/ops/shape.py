"""Operators that move values without arithmetic: Flatten and Reshape (the gradient takes the
input's shape back), Concat (the gradient splits), and shape computations no gradient flows
through (Constant, Shape, Gather, Unsqueeze: what an exporter writes for `x.view(x.size(0), -1)`)."""

from __future__ import annotations

from coordinator.models.ops.step import Rule, Step, attrs


def reshape_backward(step: Step, node, dy: str) -> None:
    step.add(node.input[0], step.b.reshape(dy, step.shape_of(node.input[0]), "dreshape"))


def concat_backward(step: Step, node, dy: str) -> None:
    rank = len(step.shape(node.output[0], node))
    axis = attrs(node)["axis"] % rank
    sizes = [step.static(i, node, slice(axis, axis + 1))[axis] for i in node.input]
    parts = step.b.op("Split", [dy, step.b.ints(sizes, "sizes")], "dconcat", outputs=len(sizes), axis=axis)
    for name, part in zip(node.input, parts if len(sizes) > 1 else [parts], strict=True):
        step.add(name, part)


RULES = {
    "Flatten": Rule(reshape_backward),
    "Reshape": Rule(reshape_backward),
    "Concat": Rule(concat_backward),
    "Constant": Rule(None),
    "Shape": Rule(None),
    "Gather": Rule(None),
    "Unsqueeze": Rule(None),
}
