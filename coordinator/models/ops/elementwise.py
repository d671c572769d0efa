"""Element-wise operators and the softmaxes: Add, Sub, Mul (broadcasting), Relu, Tanh, Sigmoid,
Identity, Softmax, LogSoftmax."""

from __future__ import annotations

from coordinator.models.ops.builder import reduce_to
from coordinator.models.ops.step import Rule, Step, attrs


def _broadcast(step: Step, node, name: str, grad: str) -> None:
    """A gradient of the output, summed back to the shape of input `name`."""
    if name in step.needs:
        shape, out = step.shape(name, node), step.shape(node.output[0], node)
        step.add(name, grad if shape == out else reduce_to(step.b, grad, shape, out))


def add_backward(step: Step, node, dy: str) -> None:
    for name in node.input:
        _broadcast(step, node, name, dy)


def sub_backward(step: Step, node, dy: str) -> None:
    _broadcast(step, node, node.input[0], dy)
    if node.input[1] in step.needs:
        _broadcast(step, node, node.input[1], step.b.op("Neg", [dy], "dsub"))


def mul_backward(step: Step, node, dy: str) -> None:
    a, b = node.input
    if a in step.needs:
        _broadcast(step, node, a, step.b.op("Mul", [dy, step.env[b]], "dmul"))
    if b in step.needs:
        _broadcast(step, node, b, step.b.op("Mul", [dy, step.env[a]], "dmul"))


def relu_backward(step: Step, node, dy: str) -> None:  # relu'(x) = sign(relu(x)): 1 where x > 0, else 0
    step.add(node.input[0], step.b.op("Mul", [dy, step.b.op("Sign", [step.env[node.output[0]]])], "drelu"))


def tanh_backward(step: Step, node, dy: str) -> None:
    b, y = step.b, step.env[node.output[0]]
    step.add(node.input[0], b.op("Mul", [dy, b.op("Sub", [b.const(1.0, "one"), b.op("Mul", [y, y])])], "dtanh"))


def sigmoid_backward(step: Step, node, dy: str) -> None:
    b, y = step.b, step.env[node.output[0]]
    step.add(node.input[0], b.op("Mul", [b.op("Mul", [dy, y]), b.op("Sub", [b.const(1.0, "one"), y])], "dsigmoid"))


def identity_backward(step: Step, node, dy: str) -> None:
    step.add(node.input[0], dy)


def _axis(step: Step, node) -> int:
    rank = len(step.shape(node.input[0], node))
    return attrs(node).get("axis", -1) % rank


def softmax_backward(step: Step, node, dy: str) -> None:  # dx = y (dy - sum(dy y))
    b, y = step.b, step.env[node.output[0]]
    dot = b.reduce_sum(b.op("Mul", [dy, y]), [_axis(step, node)], 1, "dot")
    step.add(node.input[0], b.op("Mul", [y, b.op("Sub", [dy, dot])], "dsoftmax"))


def log_softmax_backward(step: Step, node, dy: str) -> None:  # dx = dy - exp(y) sum(dy)
    b, y = step.b, step.env[node.output[0]]
    total = b.reduce_sum(dy, [_axis(step, node)], 1, "total")
    step.add(node.input[0], b.op("Sub", [dy, b.op("Mul", [b.op("Exp", [y]), total])], "dlogsoftmax"))


RULES = {
    "Add": Rule(add_backward),
    "Sub": Rule(sub_backward),
    "Mul": Rule(mul_backward),
    "Relu": Rule(relu_backward),
    "Tanh": Rule(tanh_backward),
    "Sigmoid": Rule(sigmoid_backward),
    "Identity": Rule(identity_backward),
    "Softmax": Rule(softmax_backward),
    "LogSoftmax": Rule(log_softmax_backward),
}
