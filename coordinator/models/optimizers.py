"""Optimizers as ONNX nodes: SGD (optionally with momentum) and Adam, applied to every trainable parameter."""

from __future__ import annotations

from dataclasses import dataclass

from onnx import helper

from coordinator.models.ops.builder import Builder


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


def emit_optimizer(
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
