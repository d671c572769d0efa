"""The convolutional operators' gradients (ops/conv.py, pool.py, norm.py, shape.py, elementwise.py)
against central finite differences, each across the attributes that change its rule: stride,
asymmetric and automatic padding, dilation, groups (depthwise included), 1-D and 2-D, overlapping
and separate pooling windows, border-aware average pooling; BatchNormalization's running
statistics; dropout; and the zoo's conv nets."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import build_package
from gradcheck import check_gradients
from onnx import TensorProto, helper, numpy_helper

from coordinator.models.optimizers import Optimizer
from coordinator.models.package_writer import build_package as build_from_model
from edge_sdk.training.package import ModelPackage
from edge_sdk.training.trainers import make_trainer

RNG = np.random.default_rng(7)


def node(op, inputs, output, **attrs):
    return helper.make_node(op, inputs, [output], name=output, **attrs)


def weights(*shape):
    return (RNG.standard_normal(shape) * 0.5).astype(np.float32)


def model(nodes, sample_shape, values, outputs=3, opset=17):
    """A user's forward model: input x [N, *sample_shape], float initializers, output `out` [N, outputs]."""
    graph = helper.make_graph(
        nodes,
        "user",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *sample_shape])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", outputs])],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in values.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def head(x, width, values, outputs=3):
    """Flatten x (width values per sample) and a Gemm to the output."""
    values |= {"fc.w": weights(width, outputs), "fc.b": weights(outputs)}
    return [node("Flatten", [x], "flat"), node("Gemm", ["flat", "fc.w", "fc.b"], "out")]


CASES = {
    # 2-D, stride 2, asymmetric pads, two groups, then average pooling that counts only real values
    "conv2d-strided-grouped": lambda v: (
        (2, 7, 7),
        [
            node("Conv", ["x", "c.w", "c.b"], "c", strides=[2, 2], pads=[1, 0, 0, 1], group=2),
            node("Tanh", ["c"], "t"),
            node("AveragePool", ["t"], "p", kernel_shape=[2, 2], strides=[1, 1], pads=[1, 1, 0, 0]),
            *head("p", 4 * 3 * 3, v),
        ],
        v | {"c.w": weights(4, 1, 3, 3), "c.b": weights(4)},
    ),
    # 2-D, dilation 2, no bias, a ReLU, overlapping max-pooling windows (gradients add where they
    # share a max), then dilated ones
    "conv2d-dilated-overlapping-maxpool": lambda v: (
        (1, 8, 8),
        [
            node("Conv", ["x", "c.w"], "c", dilations=[2, 2], pads=[2, 2, 2, 2]),
            node("Relu", ["c"], "r"),
            node("MaxPool", ["r"], "p0", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
            node("MaxPool", ["p0"], "p", kernel_shape=[2, 2], strides=[2, 2], dilations=[2, 2]),
            *head("p", 3 * 3 * 3, v),
        ],
        v | {"c.w": weights(3, 1, 3, 3)},
    ),
    # 1-D depthwise (group = channels, 2 per channel), stride 2, SAME_UPPER; separate max windows
    # that leave a step over; a pointwise convolution; 1-D average pooling at a padded border;
    # global average pooling
    "conv1d-depthwise-same": lambda v: (
        (4, 13),
        [
            node("Conv", ["x", "d.w", "d.b"], "d", group=4, strides=[2], auto_pad="SAME_UPPER"),
            node("Sigmoid", ["d"], "s"),
            node("MaxPool", ["s"], "p", kernel_shape=[2], strides=[2]),
            node("Conv", ["p", "pw.w", "pw.b"], "pw"),
            node("AveragePool", ["pw"], "a", kernel_shape=[2], pads=[1, 0]),
            node("GlobalAveragePool", ["a"], "g"),
            *head("g", 5, v),
        ],
        v | {"d.w": weights(8, 1, 3), "d.b": weights(8), "pw.w": weights(5, 8, 1), "pw.b": weights(5)},
    ),
    # average pooling that counts the padding, a stride that leaves a row over
    "conv2d-avgpool-include-pad": lambda v: (
        (2, 6, 6),
        [
            node("Conv", ["x", "c.w", "c.b"], "c", strides=[2, 2], pads=[1, 1, 1, 1]),
            node(
                "AveragePool", ["c"], "p", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1
            ),
            *head("p", 2 * 2 * 2, v),
        ],
        v | {"c.w": weights(2, 2, 3, 3), "c.b": weights(2)},
    ),
    # BatchNormalization in 2-D and on [N, C], Mul/Sub broadcasting, Concat, Dropout, Reshape,
    # Softmax and LogSoftmax
    "batchnorm-dropout-concat-softmax": lambda v: (
        (2, 3, 3),
        [
            node("Conv", ["x", "c.w"], "c"),
            node("BatchNormalization", ["c", "bn.s", "bn.b", "bn.m", "bn.v"], "bn"),
            node("Flatten", ["bn"], "f"),
            node("Gemm", ["f", "g.w", "g.b"], "g"),
            node("BatchNormalization", ["g", "bn2.s", "bn2.b", "bn2.m", "bn2.v"], "bn2", momentum=0.8),
            node("Relu", ["bn2"], "r"),
            node("Mul", ["r", "scale"], "m"),
            node("Sub", ["shift", "r"], "s"),
            node("Concat", ["m", "s"], "cat", axis=1),
            node("Dropout", ["cat", "ratio"], "drop"),
            node("Reshape", ["drop", "shape"], "pairs"),
            node("Softmax", ["pairs"], "soft", axis=1),
            node("Reshape", ["soft", "flat_shape"], "soft_flat"),
            node("Gemm", ["soft_flat", "o.w", "o.b"], "z"),
            node("LogSoftmax", ["z"], "out"),
        ],
        {
            "c.w": weights(3, 2, 2, 2),
            "bn.s": weights(3),
            "bn.b": weights(3),
            "bn.m": np.zeros(3, np.float32),
            "bn.v": np.ones(3, np.float32),
            "g.w": weights(12, 6),
            "g.b": weights(6),
            "bn2.s": weights(6),
            "bn2.b": weights(6),
            "bn2.m": np.zeros(6, np.float32),
            "bn2.v": np.ones(6, np.float32),
            "scale": weights(6),
            "shift": weights(1, 6),
            "ratio": np.array(0.3, np.float32),
            "shape": np.array([-1, 2, 6], np.int64),
            "flat_shape": np.array([-1, 12], np.int64),
            "o.w": weights(12, 3),
            "o.b": weights(3),
        },
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_operator_gradients_match_finite_differences(tmp_path, case):
    sample, nodes, values = CASES[case]({})
    build_from_model(
        tmp_path, model(nodes, sample, values), {}, loss="cross-entropy", optimizer=Optimizer(), model_name=case
    )
    package = ModelPackage.load(tmp_path)
    if case.startswith("batchnorm"):
        assert package.buffers == ["bn.m", "bn.v", "bn2.m", "bn2.v"] and package.noise_width == 12
        assert "ratio" not in package.manifest["params"]
    check_gradients(package, np.random.default_rng(1), n=6)


@pytest.mark.parametrize(
    "case, opset", [("conv2d-dilated-overlapping-maxpool", 13), ("batchnorm-dropout-concat-softmax", 21)]
)
def test_models_of_older_and_newer_opsets_compile(tmp_path, case, opset):
    """Opset 13 (the step graphs go to 17) and 21 (ReduceMean takes its axes as an input)."""
    sample, nodes, values = CASES[case]({})
    forward = model(nodes, sample, values, opset=opset)
    build_from_model(tmp_path, forward, {}, loss="cross-entropy", optimizer=Optimizer(), model_name=case)
    package = ModelPackage.load(tmp_path)
    assert onnx.load(package.path("train_step")).opset_import[0].version == max(17, opset)
    check_gradients(package, np.random.default_rng(1), n=6, coords=4)


@pytest.mark.parametrize("spec", ["cnn:8x8", "cnn1d:3x8-4"])
def test_zoo_conv_nets_gradients_match_finite_differences(tmp_path, spec):
    check_gradients(build_package(tmp_path, spec), np.random.default_rng(2), n=6, coords=6)


def test_batchnorm_moves_its_running_statistics_as_onnx_defines(tmp_path):
    sample, nodes, values = CASES["batchnorm-dropout-concat-softmax"]({})
    build_from_model(
        tmp_path, model(nodes, sample, values), {}, loss="cross-entropy", optimizer=Optimizer(), model_name="bn"
    )
    package = ModelPackage.load(tmp_path)
    m = package.manifest
    rng = np.random.default_rng(3)
    x = rng.standard_normal((16, m["num_features"])).astype(np.float32)
    start = package.initial_params()
    feeds = {**start, "features": x, "labels": rng.integers(0, 3, 16), "learning_rate": np.array(0.0, np.float32)}
    feeds["noise"] = rng.random((16, package.noise_width), dtype=np.float32)
    session = ort.InferenceSession(str(package.path("train_step")), providers=["CPUExecutionProvider"])
    outputs = session.run([m["outputs"]["new_buffers"][k] for k in package.buffers], feeds)
    new = dict(zip(package.buffers, outputs, strict=True))
    conv = np.stack(  # the 2x2 convolution of the 3x3 input, by hand
        [
            np.einsum("ncij,ocij->no", x.reshape(16, 2, 3, 3)[:, :, i : i + 2, j : j + 2], values["c.w"])
            for i in range(2)
            for j in range(2)
        ],
        axis=-1,
    )
    np.testing.assert_allclose(new["bn.m"], 0.1 * conv.mean(axis=(0, 2)), atol=1e-5)
    np.testing.assert_allclose(new["bn.v"], 0.9 + 0.1 * conv.var(axis=(0, 2)), rtol=1e-4)
    assert not np.allclose(new["bn2.m"], 0)


def test_fused_epoch_equals_per_step_with_buffers_and_dropout(tmp_path):
    package = build_package(tmp_path, "cnn1d:3x16-4")
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((100, 48)).astype(np.float32), rng.integers(0, 4, 100)
    runs = [
        make_trainer(package, backend).fit(
            package.initial_params(), x, y, epochs=2, batch_size=16, learning_rate=0.05, seed=9
        )
        for backend in ("portable", "fused")
    ]
    assert set(runs[0].params) == set(package.model_names) and "bn0.running_var" in runs[0].params
    for k in package.model_names:
        np.testing.assert_allclose(runs[1].params[k], runs[0].params[k], rtol=1e-5, atol=1e-6, err_msg=k)
    again = make_trainer(package, "portable").fit(
        package.initial_params(), x, y, epochs=2, batch_size=16, learning_rate=0.05, seed=9
    )
    assert all(np.array_equal(again.params[k], runs[0].params[k]) for k in package.model_names)  # seeded dropout
