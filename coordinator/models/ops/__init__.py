"""The operators the train-step compiler differentiates, one module per family; each maps an ONNX
op_type to its `Rule` (ops/step.py)."""

from coordinator.models.ops import conv, dense, elementwise, norm, pool, shape

RULES = {**dense.RULES, **elementwise.RULES, **conv.RULES, **pool.RULES, **shape.RULES, **norm.RULES}
SUPPORTED_OPS = tuple(sorted(RULES))
