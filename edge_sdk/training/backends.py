"""Names of the training backends (kept apart from trainers.py so settings and the CLI can name
them without importing ONNX Runtime)."""

BACKENDS = ("auto", "portable", "fused", "ort-training")
