"""The train-step graphs in ORT format (what ONNX Runtime Mobile loads) train exactly like the .onnx files."""

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from conftest import build_package


@pytest.mark.parametrize("spec", ["mlp:64-32-10", "cnn1d:3x16-4"])
def test_a_training_step_from_the_ort_file_matches_the_onnx_file(tmp_path, spec):
    package = build_package(tmp_path / "pkg", spec, optimizer="adam")
    result = subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "model", "ort", str(tmp_path / "pkg")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    m = package.manifest
    rng = np.random.default_rng(0)
    feeds = {**package.initial_params(), **{s: np.zeros(m["state_shapes"][s], np.float32) for s in m["state"]}}
    feeds |= {
        "features": rng.random((16, m["num_features"]), dtype=np.float32),
        "labels": rng.integers(0, m["num_outputs"], 16),
        "learning_rate": np.array(0.01, np.float32),
    }
    if package.noise_width:
        feeds["noise"] = rng.random((16, package.noise_width), dtype=np.float32)
    outputs = [m["outputs"]["loss"]] + [
        name for key in ("new_params", "new_buffers", "new_state") for name in m["outputs"][key].values()
    ]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    onnx_out = ort.InferenceSession(str(package.path("train_step")), options).run(outputs, feeds)
    ort_path = tmp_path / "pkg" / "ort" / "train_step.ort"
    assert ort_path.read_bytes()[4:8] == b"ORTM"  # the flatbuffers identifier of ORT format models
    ort_out = ort.InferenceSession(str(ort_path), options).run(outputs, feeds)
    for a, b in zip(onnx_out, ort_out, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    assert (tmp_path / "pkg" / "ort" / "forward.ort").exists() and list((tmp_path / "pkg" / "ort").glob("*.config"))
