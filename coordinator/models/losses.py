"""Losses as ONNX nodes: what the output is compared with, the mean's factors, and the loss sum with
its raw gradient with respect to the model output."""

from __future__ import annotations

import numpy as np

from coordinator.models.ops.builder import Builder
from edge_sdk.training.package import LOSSES


def targets(b: Builder, loss: str, labels: str, width: int) -> str:
    """What the loss compares the output with: one-hot rows for cross-entropy, the labels otherwise."""
    if loss == "cross-entropy":
        return b.op(
            "OneHot",
            [labels, b.const(np.array(width, np.int64), "depth", np.int64), b.const([0.0, 1.0], "onoff")],
            "onehot",
        )
    return labels


def loss_factors(b: Builder, loss: str, label_count: str) -> tuple[str, str]:
    """(loss factor, gradient factor) for a batch with `label_count` label elements (float scalar):
    mean loss = loss_sum * loss factor; dL/dz = raw gradient * gradient factor."""
    inverse = b.op("Reciprocal", [label_count], "inv_count")
    if loss == "cross-entropy":
        return b.op("Neg", [inverse], "loss_factor"), inverse
    if loss == "mse":
        return inverse, b.op("Mul", [inverse, b.const(2.0, "two")], "grad_factor")
    return inverse, inverse


def emit_loss(b: Builder, loss: str, z: str, target: str) -> tuple[str, str]:
    """(loss summed over the batch, up to its factor; raw gradient with respect to the output z)."""
    if loss == "cross-entropy":  # one LogSoftmax serves the loss and, through Exp, the gradient
        log_probs = b.op("LogSoftmax", [z], "logp", axis=1)
        return (
            b.op("ReduceSum", [b.op("Mul", [target, log_probs])], "sum_logp", keepdims=0),
            b.op("Sub", [b.op("Exp", [log_probs], "probs"), target], "dlogits_raw"),
        )
    if loss == "mse":
        diff = b.op("Sub", [z, target], "diff")
        return b.op("ReduceSum", [b.op("Mul", [diff, diff])], "sum_sq", keepdims=0), diff
    if loss == "binary-cross-entropy":  # on logits: max(z,0) - z*t + log(1 + exp(-|z|))
        stable = b.op("Log", [b.op("Add", [b.const(1.0, "one"), b.op("Exp", [b.op("Neg", [b.op("Abs", [z])])])])])
        terms = b.op("Add", [b.op("Sub", [b.op("Relu", [z]), b.op("Mul", [z, target])]), stable])
        return b.op("ReduceSum", [terms], "sum_bce", keepdims=0), b.op(
            "Sub", [b.op("Sigmoid", [z]), target], "dlogits_raw"
        )
    raise ValueError(f"loss {loss!r}: expected one of {', '.join(LOSSES)}")
