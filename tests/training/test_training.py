"""The compiled train-step graphs: correct gradients, optimizers, standard operators only, and training that works."""

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import REPO, build_package
from gradcheck import check_gradients, step_runner
from onnx import TensorProto, helper, numpy_helper

from coordinator.models.compiler import UnsupportedModelError
from coordinator.models.optimizers import Optimizer
from coordinator.models.package_writer import build_package as build_from_model
from edge_sdk.training.package import ModelPackage
from edge_sdk.training.trainers import make_trainer


@pytest.mark.parametrize(
    "spec, loss",
    [
        ("mlp:5-4-3:relu", "cross-entropy"),
        ("mlp:5-4-3-3:tanh", "cross-entropy"),
        ("mlp:5-4-3:sigmoid", "mse"),
        ("logreg:5-3", "mse"),
        ("mlp:5-4-2:tanh", "binary-cross-entropy"),
        ("logreg:6-1", "binary-cross-entropy"),
    ],
)
def test_zoo_gradients_match_finite_differences(tmp_path, spec, loss):
    check_gradients(build_package(tmp_path, spec, loss, seed=1), np.random.default_rng(0))


def custom_forward(initializers=True, transB=1, extra_op=None):
    """A user model: MatMul + Add + Identity, then Gemm with transB, optionally an unsupported op."""
    rng = np.random.default_rng(3)
    w1, b1, w2, b2 = (
        rng.standard_normal(s).astype(np.float32) * 0.5 for s in [(5, 4), (4,), (3, 4) if transB else (4, 3), (3,)]
    )
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Identity", ["hb"], ["hi"]),
        helper.make_node("Relu", ["hi"], ["a"]),
        helper.make_node("Gemm", ["a", "w2", "b2"], ["out"], transB=transB),
    ]
    if extra_op:
        nodes.append(helper.make_node(extra_op, ["out"], ["out2"]))
    values = {"w1": w1, "b1": b1, "w2": w2, "b2": b2}
    graph = helper.make_graph(
        nodes,
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
        [helper.make_tensor_value_info("out2" if extra_op else "out", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(v, k) for k, v in values.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), values


@pytest.mark.parametrize("transB", [0, 1])
def test_user_model_with_matmul_add_identity_gemm(tmp_path, transB):
    model, values = custom_forward(transB=transB)
    build_from_model(tmp_path, model, {}, loss="cross-entropy", optimizer=Optimizer(), model_name="custom")
    package = ModelPackage.load(tmp_path)
    assert all(np.array_equal(package.initial_params()[k], v) for k, v in values.items())
    check_gradients(package, np.random.default_rng(1))


def test_unsupported_operator_is_named(tmp_path):
    model, _ = custom_forward(extra_op="Softsign")
    with pytest.raises(UnsupportedModelError, match="Softsign"):
        build_from_model(tmp_path, model, {}, loss="cross-entropy", optimizer=Optimizer(), model_name="custom")


def test_optimizers_follow_their_formulas(tmp_path):
    rng = np.random.default_rng(0)
    sgd = build_package(tmp_path / "sgd", "mlp:5-4-3", optimizer="sgd")
    x, y = rng.standard_normal((6, 5)).astype(np.float32), rng.integers(0, 3, 6)
    params = sgd.initial_params()
    grad = lambda p: {k: p[k] - v for k, v in step_runner(sgd)(p, x, y, 1.0)[1].items()}
    lr = 0.1
    for opt in ("momentum:0.8", "adam"):
        package = build_package(tmp_path / opt.replace(":", "_"), "mlp:5-4-3", optimizer=opt)
        trainer = make_trainer(package, "portable")
        # two full-batch steps with the trainer, against numpy with gradients from the sgd graph
        result = trainer.fit(params, x, y, epochs=2, batch_size=6, learning_rate=lr, seed=0)
        p = {k: v.astype(np.float64) for k, v in params.items()}
        state = {k: np.zeros_like(v) for k, v in p.items()}
        m_, v_ = dict(state), dict(state)
        for t in (1, 2):
            g = {k: v.astype(np.float64) for k, v in grad({k: v.astype(np.float32) for k, v in p.items()}).items()}
            for k in p:
                if opt == "adam":
                    m_[k] = 0.9 * m_[k] + 0.1 * g[k]
                    v_[k] = 0.999 * v_[k] + 0.001 * g[k] ** 2
                    p[k] = p[k] - lr * (m_[k] / (1 - 0.9**t)) / (np.sqrt(v_[k] / (1 - 0.999**t)) + 1e-8)
                else:
                    state[k] = 0.8 * state[k] + g[k]
                    p[k] = p[k] - lr * state[k]
        for k in p:
            np.testing.assert_allclose(result.params[k], p[k], rtol=1e-4, atol=1e-5, err_msg=f"{opt} {k}")


def all_domains(graph):
    for node in graph.node:
        yield node.domain, node.op_type
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from all_domains(attr.g)


def test_cli_build_writes_a_package_of_standard_operators(tmp_path):
    out = tmp_path / "pkg"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "coordinator.cli",
            "model",
            "build",
            "--model",
            "mlp:64-32-10",
            "--loss",
            "cross-entropy",
            "--optimizer",
            "sgd",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert {p.name for p in out.iterdir()} >= {
        "forward.onnx",
        "train_step.onnx",
        "train_epoch.onnx",
        "params.npz",
        "manifest.json",
    }
    for name in ("train_step.onnx", "train_epoch.onnx", "forward.onnx"):
        model = onnx.load(out / name)
        onnx.checker.check_model(model, full_check=True)
        domains = set(all_domains(model.graph))
        assert {d for d, _ in domains} <= {"", "ai.onnx"}, domains
        ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["params"] == ["layer0.weight", "layer0.bias", "layer1.weight", "layer1.bias"]
    assert set(manifest["inputs"]) == {"features", "labels", "learning_rate"} and manifest["label_dtype"] == "int64"
    assert set(manifest["outputs"]) >= {"loss", "new_params"}


def test_manifest_alone_drives_the_step(tmp_path):
    """A client that reads only manifest.json and the files (no edge_sdk) runs a step."""
    out = tmp_path / "pkg"
    build_package(out, "logreg:64-10", optimizer="momentum")
    m = json.loads((out / "manifest.json").read_text())
    session = ort.InferenceSession(str(out / m["files"]["train_step"]), providers=["CPUExecutionProvider"])
    params = dict(np.load(out / m["files"]["params"]))
    feeds = {**params, **{s: np.zeros(m["state_shapes"][s], np.float32) for s in m["state"]}}
    feeds[m["inputs"]["features"]] = np.ones((4, m["num_features"]), np.float32)
    feeds[m["inputs"]["labels"]] = np.array([1, 2, 3, 4], dtype=m["label_dtype"])
    feeds[m["inputs"]["learning_rate"]] = np.array(0.5, np.float32)
    names = [m["outputs"]["loss"]] + [m["outputs"]["new_params"][p] for p in m["params"]]
    loss, *new = session.run(names, feeds)
    assert np.isclose(loss, np.log(10), rtol=1e-5)  # zero weights: uniform prediction
    assert any(not np.array_equal(a, params[p]) for a, p in zip(new, m["params"], strict=True))


def test_fused_epoch_equals_per_step(tmp_path, digits):
    x, _, y, _ = digits
    package = build_package(tmp_path, optimizer="adam")
    per_step = make_trainer(package, "portable").fit(
        package.initial_params(), x[:500], y[:500], epochs=2, batch_size=48, learning_rate=0.01, seed=3
    )
    fused = make_trainer(package, "fused").fit(
        package.initial_params(), x[:500], y[:500], epochs=2, batch_size=48, learning_rate=0.01, seed=3
    )
    assert per_step.steps == fused.steps == 2 * 11
    for p in per_step.params:
        np.testing.assert_allclose(fused.params[p], per_step.params[p], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fused.epoch_losses, per_step.epoch_losses, rtol=1e-5)


@pytest.mark.parametrize("spec, accuracy", [("mlp:64-32-10", 0.95), ("cnn:8x8", 0.97)])
def test_zoo_models_reach_their_accuracy_on_digits(tmp_path, digits, spec, accuracy):
    x_train, x_test, y_train, y_test = digits
    package = build_package(tmp_path, spec, optimizer="sgd")
    trainer = make_trainer(package, "auto")
    assert trainer.backend == "portable"
    result = trainer.fit(
        package.initial_params(), x_train, y_train, epochs=30, batch_size=32, learning_rate=0.1, seed=0
    )
    assert result.epoch_losses[-1] < result.epoch_losses[0] / 5
    evaluation = trainer.evaluate(result.params, x_test, y_test)
    assert evaluation.accuracy >= accuracy, evaluation


DEVICE_SCRIPT = r"""
import importlib.util, json, sys
import numpy as np
from edge_sdk.training.package import ModelPackage
from edge_sdk.training.trainers import make_trainer
present = [m for m in ("onnx", "torch", "sklearn", "onnxruntime.training") if importlib.util.find_spec(m) is not None]
package = ModelPackage.load(sys.argv[1])
data = np.load(sys.argv[2])
trainer = make_trainer(package, "auto")
result = trainer.fit(package.initial_params(), data["x"], data["y"], epochs=2, batch_size=32, learning_rate=0.1, seed=5)
np.savez(sys.argv[3], **result.params)
print(json.dumps({"backend": trainer.backend, "present": present, "losses": result.epoch_losses}))
"""


def test_device_environment_trains_portable_without_onnx_or_torch(tmp_path, digits, sdk_python):
    x, _, y, _ = digits
    package = build_package(tmp_path / "pkg")
    np.savez(tmp_path / "data.npz", x=x[:400], y=y[:400])
    result = subprocess.run(
        [
            str(sdk_python),
            "-c",
            DEVICE_SCRIPT,
            str(tmp_path / "pkg"),
            str(tmp_path / "data.npz"),
            str(tmp_path / "out.npz"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["backend"] == "portable" and report["present"] == []
    here = make_trainer(package, "portable").fit(
        package.initial_params(), x[:400], y[:400], epochs=2, batch_size=32, learning_rate=0.1, seed=5
    )
    there = np.load(tmp_path / "out.npz")
    for p in here.params:
        np.testing.assert_allclose(there[p], here.params[p], rtol=1e-5, atol=1e-6)


OFFICIAL_SCRIPT = r"""
import json, sys
import numpy as np
from coordinator.models.ort_artifacts import generate
from edge_sdk.training.package import ModelPackage
from edge_sdk.training.trainers import make_trainer
generate(sys.argv[1])
package = ModelPackage.load(sys.argv[1])
data = np.load(sys.argv[2])
trainer = make_trainer(package, "auto")
result = trainer.fit(
    package.initial_params(), data["x"], data["y"], epochs=3, batch_size=32, learning_rate=float(sys.argv[4]), seed=11
)
np.savez(sys.argv[3], **result.params)
print(json.dumps({"backend": trainer.backend, "losses": result.epoch_losses}))
"""


@pytest.mark.parametrize(
    "spec, loss, lr",
    [
        ("mlp:64-32-10", "cross-entropy", 0.1),
        ("mlp:64-16-10:tanh", "mse", 0.05),
        ("logreg:64-1", "binary-cross-entropy", 0.1),
        ("cnn:8x8", "cross-entropy", 0.1),
    ],
)
def test_portable_equals_official_training_api(tmp_path, digits, ort_python, spec, loss, lr):
    """Same start, data order and SGD settings: the official API and the portable graph agree."""
    x, _, y, _ = digits
    x, y = x[:600], y[:600]
    if loss == "mse":
        y = np.eye(10, dtype=np.float32)[y]
    elif loss == "binary-cross-entropy":
        y = (y >= 5).astype(np.float32)
    package = build_package(tmp_path / "pkg", spec, loss, "sgd", seed=2)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [
            str(ort_python),
            "-c",
            OFFICIAL_SCRIPT,
            str(tmp_path / "pkg"),
            str(tmp_path / "data.npz"),
            str(tmp_path / "out.npz"),
            str(lr),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == "ort-training"
    portable = make_trainer(package, "portable").fit(
        package.initial_params(), x, y, epochs=3, batch_size=32, learning_rate=lr, seed=11
    )
    official = np.load(tmp_path / "out.npz")
    for p in portable.params:
        np.testing.assert_allclose(official[p], portable.params[p], rtol=1e-4, atol=1e-5, err_msg=p)
    np.testing.assert_allclose(report["losses"], portable.epoch_losses, rtol=1e-4)
    assert portable.epoch_losses[-1] < portable.epoch_losses[0]


def test_bad_labels_are_refused(tmp_path):
    package = build_package(tmp_path, "logreg:4-3")
    trainer = make_trainer(package, "portable")
    x = np.zeros((2, 4), np.float32)
    for bad in (np.array([0, 3]), np.array([-1, 0]), np.array([0.5, 1.0])):
        with pytest.raises(ValueError, match=r"\[0, 3\)"):
            trainer.fit(package.initial_params(), x, bad, epochs=1, batch_size=2, learning_rate=0.1, seed=0)
    with pytest.raises(ValueError, match="backend"):
        make_trainer(package, "gpu")
