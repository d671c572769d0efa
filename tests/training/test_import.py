"""A user's own model: a small PyTorch CNN exported with torch.onnx.export (in the environment that has
torch), compiled with `blockfl model build --from-onnx`, trained in the device-only environment
(stock onnxruntime and numpy: no torch, no onnx)."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import REPO
from onnx import TensorProto, helper

from edge_sdk.training.package import ModelPackage
from edge_sdk.training.trainers import make_trainer

EXPORT = r"""
import sys
import numpy as np
import torch

torch.manual_seed(0)
net = torch.nn.Sequential(
    torch.nn.Conv2d(1, 8, 3, padding=1),
    torch.nn.BatchNorm2d(8),
    torch.nn.ReLU(),
    torch.nn.MaxPool2d(2),
    torch.nn.Conv2d(8, 8, 3, padding=1, groups=8),
    torch.nn.ReLU(),
    torch.nn.Dropout(0.1),
    torch.nn.Flatten(),
    torch.nn.Linear(8 * 4 * 4, 10),
)
with torch.no_grad():  # running statistics a model would carry after some training
    net[1].running_mean.uniform_(-0.2, 0.2)
    net[1].running_var.uniform_(0.5, 1.5)
net.train()
torch.onnx.export(
    net, torch.zeros(2, 1, 8, 8), sys.argv[1], input_names=["image"], output_names=["logits"],
    dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, training=torch.onnx.TrainingMode.TRAINING,
    dynamo=False,
)
net.eval()
x = torch.from_numpy(np.load(sys.argv[2])["x"][:16].reshape(-1, 1, 8, 8))
np.save(sys.argv[3], net(x).detach().numpy())
"""

DEVICE = r"""
import importlib.util, json, sys
import numpy as np
from edge_sdk.training.package import ModelPackage
from edge_sdk.training.trainers import make_trainer
present = [m for m in ("onnx", "torch", "onnxruntime.training") if importlib.util.find_spec(m) is not None]
package = ModelPackage.load(sys.argv[1])
data = np.load(sys.argv[2])
trainer = make_trainer(package, "auto")
result = trainer.fit(package.initial_params(), data["x"], data["y"], epochs=8, batch_size=32, learning_rate=0.1, seed=5)
evaluation = trainer.evaluate(result.params, data["x_test"], data["y_test"])
np.savez(sys.argv[3], **result.params)
print(json.dumps({"backend": trainer.backend, "present": present, "accuracy": evaluation.accuracy}))
"""


def run(*args, **kw):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, cwd=kw.pop("cwd"), **kw)


def test_a_pytorch_cnn_trains_through_from_onnx_on_the_device_sdk(tmp_path, digits, ort_python, sdk_python):
    x_train, x_test, y_train, y_test = digits
    np.savez(tmp_path / "data.npz", x=x_train, y=y_train, x_test=x_test, y_test=y_test)
    exported = run(
        ort_python, "-c", EXPORT, tmp_path / "cnn.onnx", tmp_path / "data.npz", tmp_path / "torch.npy", cwd=tmp_path
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    built = run(sys.executable, "-m", "coordinator.cli", "model", "build", "--from-onnx", tmp_path / "cnn.onnx",
                "--out", tmp_path / "pkg", cwd=REPO)  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert "trainable: 0.weight [8, 1, 3, 3], 0.bias [8], 1.weight [8], 1.bias [8]" in built.stdout
    assert (
        "buffers (updated by each step, averaged with the parameters): 1.running_mean [8], 1.running_var [8]"
        in built.stdout
    )
    package = ModelPackage.load(tmp_path / "pkg")
    assert package.noise_width == 8 * 4 * 4 and package.manifest["sample_shape"] == [1, 8, 8]
    # forward.onnx infers as PyTorch's eval mode does: the running statistics, no dropout
    logits = make_trainer(package, "portable").logits(package.initial_params(), x_train[:16])
    np.testing.assert_allclose(logits, np.load(tmp_path / "torch.npy"), rtol=1e-4, atol=1e-5)

    trained = run(sdk_python, "-c", DEVICE, tmp_path / "pkg", tmp_path / "data.npz", tmp_path / "out.npz", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    report = json.loads(trained.stdout)
    assert report["backend"] == "portable" and report["present"] == []
    assert report["accuracy"] >= 0.9, report
    there = np.load(tmp_path / "out.npz")
    here = make_trainer(package, "portable").fit(
        package.initial_params(), x_train, y_train, epochs=8, batch_size=32, learning_rate=0.1, seed=5
    )
    assert set(there.files) == set(package.model_names)
    for k in package.model_names:
        np.testing.assert_allclose(there[k], here.params[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert not np.allclose(there["1.running_mean"], package.initial_params()["1.running_mean"])


def test_every_unsupported_operator_is_named(tmp_path):
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Softsign", ["c"], ["s"], name="soft1"),
        helper.make_node("Resize", ["s", "", "scales"], ["r"], name="up"),
        helper.make_node("Softsign", ["r"], ["s2"], name="soft2"),
        helper.make_node("Flatten", ["s2"], ["out"], name="flat"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 32])],
        initializer=[
            onnx.numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "w"),
            onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    result = run(sys.executable, "-m", "coordinator.cli", "model", "build", "--from-onnx", tmp_path / "m.onnx",
                 "--out", tmp_path / "p", cwd=REPO)  # fmt: skip
    assert result.returncode == 2 and not (tmp_path / "p").exists()
    assert "Resize (1 node: up); Softsign (2 nodes: soft1, soft2)" in result.stderr, result.stderr


@pytest.mark.parametrize(
    "problem, message",
    [("static-batch", "dynamic batch dimension"), ("opset", "opset 11"), ("freeze", "--freeze nope: no such")],
)
def test_models_the_importer_cannot_take_are_refused_with_a_reason(tmp_path, problem, message):
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["out"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1 if problem == "static-batch" else "N", 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 2])],
        initializer=[onnx.numpy_helper.from_array(np.ones((3, 2), np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11 if problem == "opset" else 17)])
    onnx.save(model, tmp_path / "m.onnx")
    freeze = ["--freeze", "nope"] if problem == "freeze" else []
    result = run(sys.executable, "-m", "coordinator.cli", "model", "build", "--from-onnx", tmp_path / "m.onnx",
                 *freeze, "--out", tmp_path / "p", cwd=REPO)  # fmt: skip
    assert result.returncode == 2 and message in result.stderr, result.stderr
