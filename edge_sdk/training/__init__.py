"""On-device training: the model package format and the trainers that run it with ONNX Runtime."""
