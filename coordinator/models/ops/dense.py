"""Fully connected layers: Gemm (dA = dY B^T, dB = A^T dY, dC = dY summed over what it broadcast
along) and 2-D MatMul."""

from __future__ import annotations

from coordinator.models.ops.builder import reduce_to
from coordinator.models.ops.step import Rule, Step, UnsupportedModelError, attrs, describe


def gemm_backward(step: Step, node, dy: str) -> None:
    a = attrs(node)
    if a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or a.get("transA", 0):
        raise UnsupportedModelError(f"{describe(node)}: only alpha=1, beta=1, transA=0 are supported")
    b = step.b
    x, w = (step.env[i] for i in node.input[:2])
    trans_b = a.get("transB", 0)
    if node.input[0] in step.needs:
        step.add(node.input[0], b.op("MatMul", [dy, w if trans_b else b.op("Transpose", [w])], "dA"))
    if node.input[1] in step.needs:
        step.add(node.input[1], b.op("Gemm", [dy, x] if trans_b else [x, dy], "dW", transA=1))
    if len(node.input) > 2 and node.input[2] in step.needs:
        c = node.input[2]
        step.add(c, reduce_to(b, dy, step.shape(c, node), step.shape(node.output[0], node)))


def matmul_backward(step: Step, node, dy: str) -> None:
    if any(len(step.shape(i, node)) != 2 for i in node.input):
        raise UnsupportedModelError(f"{describe(node)}: only 2-D MatMul is supported")
    b = step.b
    x, w = (step.env[i] for i in node.input)
    if node.input[0] in step.needs:
        step.add(node.input[0], b.op("MatMul", [dy, b.op("Transpose", [w])], "dA"))
    if node.input[1] in step.needs:
        step.add(node.input[1], b.op("Gemm", [x, dy], "dB", transA=1))


RULES = {"Gemm": Rule(gemm_backward), "MatMul": Rule(matmul_backward)}
