"""Official ONNX Runtime training artifacts for a model package (the `ort-training` backend).

Runs only where onnxruntime-training (with torch, and onnx 1.16.x) is installed; see docs/training.md.
The artifacts go to PACKAGE/ort-training/: training_model.onnx, eval_model.onnx,
optimizer_model.onnx and checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

LOSS_TYPES = {"cross-entropy": "CrossEntropyLoss", "mse": "MSELoss", "binary-cross-entropy": "BCEWithLogitsLoss"}


class ArtifactsUnavailable(RuntimeError):
    pass


def generate(package_dir: str | Path) -> Path:
    """Write the official artifacts for the package's forward model, loss and optimizer."""
    from edge_sdk.training.package import ModelPackage

    try:
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)  # the generator logs every graph pass at INFO
        from onnxruntime.training import artifacts
    except Exception as exc:  # ImportError, or the package failing to import torch
        raise ArtifactsUnavailable(
            f"onnxruntime-training is not usable here ({exc}); "
            "install onnxruntime-training-cpu==1.19.2, onnx==1.16.2 and torch in a separate environment"
        ) from None
    package = ModelPackage.load(package_dir)
    m = package.manifest
    optimizer = m["optimizer"]
    if optimizer["kind"] == "sgd" and optimizer["momentum"]:
        raise ArtifactsUnavailable("the official training API has no SGD with momentum; use sgd or adam")
    if package.buffers or package.noise_width:
        raise ArtifactsUnavailable(
            "the official artifacts would not move BatchNormalization's running statistics or take the "
            "package's dropout noise; the portable backend trains this model"
        )
    forward = onnx.load(package.path("forward"))
    params = package.initial_params()
    # the official generator wants trainable parameters as initializers
    graph = forward.graph
    kept_inputs = [i for i in graph.input if i.name not in params]
    del graph.input[:]
    graph.input.extend(kept_inputs)
    graph.initializer.extend(numpy_helper.from_array(np.asarray(v, np.float32), p) for p, v in params.items())
    out = package.ort_artifacts
    out.mkdir(exist_ok=True)
    artifacts.generate_artifacts(
        forward,
        requires_grad=list(m["params"]),
        loss=getattr(artifacts.LossType, LOSS_TYPES[m["loss"]]),
        optimizer=artifacts.OptimType.SGD if optimizer["kind"] == "sgd" else artifacts.OptimType.AdamW,
        artifact_directory=str(out),
    )
    return out
