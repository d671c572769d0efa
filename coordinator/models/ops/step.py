"""What an operator's rule sees while one train step is emitted: the forward values and their
static shapes, where gradients go, what a forward kept for its backward, and the model state
(buffers) and dropout noise the step uses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from coordinator.models.ops.builder import Builder


class UnsupportedModelError(ValueError):
    """The forward model uses something the compiler cannot differentiate; the message names it."""


@dataclass(frozen=True)
class Rule:
    """How an operator trains. `backward(step, node, dy)` adds the gradients of the inputs that need
    one (None: no gradient flows through, as for shape computations); `forward(step, node)` emits
    the training-time forward where it differs from inference (batch statistics, dropout, pooling
    indices) and returns the output names."""

    backward: Callable | None
    forward: Callable | None = None


def attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def describe(node: onnx.NodeProto) -> str:
    return f"{node.op_type} {node.name or node.output[0]}"


@dataclass
class Step:
    b: Builder
    env: dict[str, str]  # forward value -> its name in the step graph
    shapes: dict[str, tuple]  # forward value -> static shape, None where only the run knows (the batch)
    values: dict[str, np.ndarray]  # forward values known when compiling (constant initializers, Constant nodes)
    needs: set[str] = field(default_factory=set)  # forward values a gradient has to reach
    grads: dict[str, str] = field(default_factory=dict)
    saved: dict[str, dict] = field(default_factory=dict)  # node's first output -> what its forward kept
    new_buffers: dict[str, str] = field(default_factory=dict)  # buffer -> its updated value
    out_names: dict[str, str] = field(default_factory=dict)  # fixed names for updated buffers (graph outputs)
    noise: str | None = None  # uniform [0, 1) noise, [batch, width]: dropout masks are cut from it
    noise_used: int = 0
    producers: dict[str, onnx.NodeProto] = field(default_factory=dict)  # forward value -> its node
    readers: dict[str, int] = field(default_factory=dict)  # forward value -> how many nodes (or the output) read it

    def add(self, name: str, grad: str) -> None:
        """Accumulate a gradient where a value fans out."""
        if name in self.needs:
            self.grads[name] = self.b.op("Add", [self.grads[name], grad], "dsum") if name in self.grads else grad

    def shape(self, name: str, node: onnx.NodeProto) -> tuple:
        shape = self.shapes.get(name)
        if shape is None:
            raise UnsupportedModelError(f"{describe(node)}: the shape of {name} is unknown when compiling")
        return shape

    def static(self, name: str, node: onnx.NodeProto, dims=slice(1, None)) -> tuple:
        """The shape of `name`, insisting that the dimensions in `dims` (all but the batch) are static."""
        shape = self.shape(name, node)
        if any(d is None for d in shape[dims]):
            raise UnsupportedModelError(f"{describe(node)}: {name} needs static dimensions besides the batch")
        return shape

    def shape_of(self, name: str) -> list[int] | str:
        """A Reshape target giving a value's shape: static (-1 for the one dimension only the run
        knows) when that is enough, else the value's step name (its Shape is taken)."""
        shape = self.shapes.get(name)
        if shape is not None and sum(d is None for d in shape) <= 1:
            return [-1 if d is None else d for d in shape]
        return self.env[name]

    def value(self, name: str, node: onnx.NodeProto) -> np.ndarray:
        if name not in self.values:
            raise UnsupportedModelError(f"{describe(node)}: {name} must be a constant")
        return self.values[name]

    def copy(self, node: onnx.NodeProto) -> list[str]:
        """The node as it is, on the step's names."""
        outs = [self.b.fresh(o) if o else "" for o in node.output]
        inputs = [self.env[i] if i else "" for i in node.input]
        self.b.nodes.append(
            helper.make_node(node.op_type, inputs, outs, name=self.b.fresh(node.op_type), **attrs(node))
        )
        return outs

    def take_noise(self, like: str, node: onnx.NodeProto) -> str:
        """Fresh noise shaped like the forward value `like`: the next columns of the noise input."""
        per_sample = self.static(like, node)[1:]
        width = int(np.prod(per_sample))
        cut = self.b.op(
            "Slice",
            [self.noise, self.b.ints([self.noise_used]), self.b.ints([self.noise_used + width]), self.b.ints([1])],
            "noise",
        )
        self.noise_used += width
        return self.b.reshape(cut, [-1, *per_sample], "noise")
