"""Compile a forward ONNX model into train-step graphs made only of standard ONNX operators.

Reverse-mode differentiation in the style of micrograd: each supported operator knows its local
gradient, the backward pass walks the forward nodes in reverse and sums gradients where a value
fans out. The result runs in the stock onnxruntime InferenceSession on any platform:

    train_step.onnx   params, state, features, labels, learning_rate -> loss, new params, new state
    train_epoch.onnx  the same step inside an ONNX Loop over a whole (pre-shuffled) epoch
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_sdk.training.package import LOSSES

SUPPORTED_OPS = ("Gemm", "MatMul", "Add", "Relu", "Tanh", "Sigmoid", "Identity")


class UnsupportedModelError(ValueError):
    """The forward model uses something the compiler cannot differentiate; the message names it."""


@dataclass(frozen=True)
class Optimizer:
    kind: str = "sgd"  # "sgd" (with optional momentum) or "adam"
    momentum: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8

    def __post_init__(self):
        if self.kind not in ("sgd", "adam"):
            raise ValueError(f"optimizer {self.kind!r}: expected sgd, momentum or adam")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError("momentum must be in [0, 1)")

    @classmethod
    def parse(cls, text: str) -> Optimizer:
        """'sgd', 'momentum' (0.9), 'momentum:0.8', 'adam'."""
        name, _, arg = text.partition(":")
        if name == "momentum":
            return cls("sgd", momentum=float(arg) if arg else 0.9)
        if arg:
            raise ValueError(f"optimizer {text!r} takes no argument")
        return cls(name)

    def state_shapes(self, params: dict[str, tuple]) -> dict[str, tuple]:
        """Optimizer state tensors (all start at zero)."""
        if self.kind == "adam":
            out = {"adam.step": ()}
            for p, shape in params.items():
                out[f"{p}.adam_m"] = shape
                out[f"{p}.adam_v"] = shape
            return out
        if self.momentum:
            return {f"{p}.momentum": shape for p, shape in params.items()}
        return {}

    def to_json(self) -> dict:
        if self.kind == "adam":
            return {"kind": "adam", "beta1": self.beta1, "beta2": self.beta2, "epsilon": self.epsilon}
        return {"kind": "sgd", "momentum": self.momentum}


@dataclass
class ForwardGraph:
    nodes: list
    features: str
    output: str
    params: dict[str, tuple]  # trainable, in graph-input order
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    output_width: int = 0

    @classmethod
    def from_model(cls, model: onnx.ModelProto) -> tuple[ForwardGraph, dict[str, np.ndarray]]:
        """Accept parameters as graph inputs or as float initializers; returns their initial values found."""
        graph = model.graph
        unsupported = sorted(
            {
                n.op_type if not n.domain else f"{n.domain}:{n.op_type}"
                for n in graph.node
                if n.domain not in ("", "ai.onnx") or n.op_type not in SUPPORTED_OPS
            }
        )
        if unsupported:
            raise UnsupportedModelError(
                f"unsupported operator(s): {', '.join(unsupported)} (supported: {', '.join(SUPPORTED_OPS)})"
            )
        values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        params, constants = {}, {}
        for name, value in values.items():
            (params if value.dtype == np.float32 else constants)[name] = value
        inputs = [i for i in graph.input if i.name not in values]
        features = [
            i
            for i in inputs
            if len(i.type.tensor_type.shape.dim) == 2 and not i.type.tensor_type.shape.dim[0].HasField("dim_value")
        ]
        if len(features) != 1:
            raise UnsupportedModelError(
                "the model needs exactly one input with a dynamic batch dimension, [batch, features]"
            )
        shapes = {name: tuple(v.shape) for name, v in params.items()}
        for i in inputs:
            if i is not features[0]:
                dims = i.type.tensor_type.shape.dim
                if not all(d.HasField("dim_value") for d in dims) or i.type.tensor_type.elem_type != TensorProto.FLOAT:
                    raise UnsupportedModelError(f"parameter input {i.name} needs a static float shape")
                shapes[i.name] = tuple(d.dim_value for d in dims)
        if len(graph.output) != 1:
            raise UnsupportedModelError("the model needs exactly one output")
        out_dims = graph.output[0].type.tensor_type.shape.dim
        width = out_dims[1].dim_value if len(out_dims) == 2 and out_dims[1].HasField("dim_value") else 0
        fwd = cls(
            list(graph.node),
            features[0].name,
            graph.output[0].name,
            shapes,
            {k: v for k, v in constants.items()},
            width,
        )
        return fwd, {k: params[k] for k in params}


class Builder:
    """Appends nodes with fresh, prefixed names (a Loop body must not reuse outer names)."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix
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


def _reduce_to(b: Builder, grad: str, shape: tuple, out_rank: int) -> str:
    """Sum a gradient over the axes a parameter of `shape` was broadcast along."""
    lead = out_rank - len(shape)
    kept = [lead + i for i, d in enumerate(shape) if d == 1]
    if lead:
        grad = b.op(
            "ReduceSum", [grad, b.const(np.arange(lead, dtype=np.int64), "axes", np.int64)], "reduce", keepdims=0
        )
    if kept:
        grad = b.op(
            "ReduceSum", [grad, b.const(np.array(kept, np.int64) - lead, "axes", np.int64)], "reduce", keepdims=1
        )
    return grad


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


def _emit_loss(b: Builder, loss: str, z: str, target: str) -> tuple[str, str]:
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


def _backward(b: Builder, fwd: ForwardGraph, env: dict, dz: str) -> dict[str, str]:
    """Gradients of every parameter, by walking the forward nodes in reverse."""
    needs = set(fwd.params)
    for node in fwd.nodes:
        if any(i in needs for i in node.input):
            needs.update(node.output)
    grads = {fwd.output: dz}

    def add(name: str, grad: str) -> None:
        if name in needs:
            grads[name] = b.op("Add", [grads[name], grad], "dsum") if name in grads else grad

    for node in reversed(fwd.nodes):
        dy = grads.get(node.output[0])
        if dy is None:
            continue
        x = [env[i] for i in node.input]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        op = node.op_type
        if op == "Gemm":
            if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
                raise UnsupportedModelError(f"Gemm {node.name}: only alpha=1, beta=1, transA=0 are supported")
            trans_b = attrs.get("transB", 0)
            a, w = node.input[0], node.input[1]
            if a in needs:
                add(a, b.op("MatMul", [dy, x[1] if trans_b else b.op("Transpose", [x[1]])], "dA"))
            if w in needs:
                add(w, b.op("Gemm", [dy, x[0]] if trans_b else [x[0], dy], "dW", transA=1))
            if len(node.input) > 2 and node.input[2] in needs:
                add(node.input[2], _reduce_to(b, dy, fwd.params[node.input[2]], 2))
        elif op == "MatMul":
            if node.input[0] in needs:
                add(node.input[0], b.op("MatMul", [dy, b.op("Transpose", [x[1]])], "dA"))
            if node.input[1] in needs:
                add(node.input[1], b.op("Gemm", [x[0], dy], "dB", transA=1))
        elif op == "Add":
            for name in node.input:
                if name in needs:
                    add(name, _reduce_to(b, dy, fwd.params[name], 2) if name in fwd.params else dy)
        elif op == "Relu":  # relu'(x) = sign(relu(x)): 1 where x > 0, else 0
            add(node.input[0], b.op("Mul", [dy, b.op("Sign", [env[node.output[0]]])], "drelu"))
        elif op == "Tanh":
            y = env[node.output[0]]
            add(node.input[0], b.op("Mul", [dy, b.op("Sub", [b.const(1.0, "one"), b.op("Mul", [y, y])])], "dtanh"))
        elif op == "Sigmoid":
            y = env[node.output[0]]
            add(node.input[0], b.op("Mul", [b.op("Mul", [dy, y]), b.op("Sub", [b.const(1.0, "one"), y])], "dsigmoid"))
        elif op == "Identity":
            add(node.input[0], dy)
    missing = [p for p in fwd.params if p not in grads]
    if missing:
        raise UnsupportedModelError(f"parameter(s) {', '.join(missing)} do not affect the output")
    return grads


def _emit_optimizer(
    b: Builder, opt: Optimizer, params: dict, grads: dict, state: dict, lr: str, out: dict
) -> tuple[dict, dict]:
    new_params, new_state = {}, {}

    def name(key: str) -> str | None:
        return out.get(key)

    if opt.kind == "adam":
        step = b.op("Add", [state["adam.step"], b.const(1.0, "one")], out_names=[name("adam.step") or b.fresh("step")])
        new_state["adam.step"] = step
        bc1 = b.op("Sub", [b.const(1.0, "one"), b.op("Pow", [b.const(opt.beta1, "beta1"), step])], "bc1")
        bc2 = b.op("Sub", [b.const(1.0, "one"), b.op("Pow", [b.const(opt.beta2, "beta2"), step])], "bc2")
    for p, value in params.items():
        g = grads[p]
        if opt.kind == "adam":
            m_key, v_key = f"{p}.adam_m", f"{p}.adam_v"
            m = b.op(
                "Add",
                [
                    b.op("Mul", [b.const(opt.beta1, "beta1"), state[m_key]]),
                    b.op("Mul", [b.const(1 - opt.beta1, "1-beta1"), g]),
                ],
                out_names=[name(m_key) or b.fresh("m")],
            )
            v = b.op(
                "Add",
                [
                    b.op("Mul", [b.const(opt.beta2, "beta2"), state[v_key]]),
                    b.op("Mul", [b.const(1 - opt.beta2, "1-beta2"), b.op("Mul", [g, g])]),
                ],
                out_names=[name(v_key) or b.fresh("v")],
            )
            new_state[m_key], new_state[v_key] = m, v
            denom = b.op("Add", [b.op("Sqrt", [b.op("Div", [v, bc2])]), b.const(opt.epsilon, "eps")])
            direction = b.op("Div", [b.op("Div", [m, bc1]), denom], "adam_dir")
        elif opt.momentum:
            key = f"{p}.momentum"
            direction = b.op(
                "Add",
                [b.op("Mul", [b.const(opt.momentum, "mu"), state[key]]), g],
                out_names=[name(key) or b.fresh("velocity")],
            )
            new_state[key] = direction
        else:  # plain SGD: the learning rate is already folded into the gradients (see emit_step)
            new_params[p] = _subtract(b, value, g, name(p) or b.fresh(p))
            continue
        new_params[p] = b.op("Sub", [value, b.op("Mul", [lr, direction])], out_names=[name(p) or b.fresh(p)])
    return new_params, new_state


def _subtract(b: Builder, value: str, grad: str, out: str) -> str:
    """value - grad; when grad is a lone Gemm(A, B, transA=1), one Gemm(A, B, value, alpha=-1, beta=1)."""
    producer = next((n for n in b.nodes if grad in n.output), None)
    consumers = [n for n in b.nodes if grad in n.input]
    attrs = {a.name: helper.get_attribute_value(a) for a in producer.attribute} if producer is not None else {}
    if (
        producer is not None
        and producer.op_type == "Gemm"
        and len(producer.input) == 2
        and not consumers
        and attrs == {"transA": 1}
    ):
        b.nodes.remove(producer)
        return b.op("Gemm", [*producer.input, value], out_names=[out], transA=1, alpha=-1.0, beta=1.0)
    return b.op("Sub", [value, grad], out_names=[out])


def folds_learning_rate(opt: Optimizer) -> bool:
    """Plain SGD takes lr * dL/dz once, instead of lr * dL/dp for every parameter."""
    return opt.kind == "sgd" and not opt.momentum


def emit_step(
    b: Builder, fwd: ForwardGraph, loss: str, opt: Optimizer, inputs: dict, out_names: dict
) -> tuple[str, dict, dict]:
    """Forward, loss, backward and optimizer for one batch; returns (loss sum, new params, new state).

    `inputs` maps every parameter and state name, and 'features', 'targets' (see `targets`),
    'grad_scale' (the gradient factor, times the learning rate where `folds_learning_rate`) and
    'learning_rate' to tensor names; `out_names` optionally fixes output names.
    """
    env = {fwd.features: inputs["features"]}
    env.update({p: inputs[p] for p in fwd.params})
    for name, value in fwd.constants.items():
        env[name] = b.const(value, name, value.dtype)
    for node in fwd.nodes:
        outs = [b.fresh(o) for o in node.output]
        b.nodes.append(
            helper.make_node(
                node.op_type,
                [env[i] for i in node.input],
                outs,
                name=b.fresh(node.op_type),
                **{a.name: helper.get_attribute_value(a) for a in node.attribute},
            )
        )
        env.update(zip(node.output, outs, strict=True))
    loss_sum, raw = _emit_loss(b, loss, env[fwd.output], inputs["targets"])
    grads = _backward(b, fwd, env, b.op("Mul", [raw, inputs["grad_scale"]], "dlogits"))
    state = {s: inputs[s] for s in opt.state_shapes(fwd.params)}
    new_params, new_state = _emit_optimizer(
        b, opt, {p: inputs[p] for p in fwd.params}, grads, state, inputs["learning_rate"], out_names
    )
    return loss_sum, new_params, new_state
