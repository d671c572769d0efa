"""Small convolutional networks for the zoo.

    cnn:[C x]H x W[-CLASSES]   images of C channels (default 1), H and W multiples of 4, CLASSES
                               (default 10): two 3x3 convolutions (8 and 16 channels, ReLU, 2x2
                               max-pooling each), then a linear layer. cnn:8x8 takes the digits.
    cnn1d:C x L[-CLASSES]      sensor windows, C channels of L steps (L even): a 5-tap convolution
                               to 16 channels with BatchNormalization, ReLU, 2-max-pooling; a
                               depthwise 5-tap then pointwise convolution to 32 channels, ReLU;
                               global average pooling, dropout 0.2, a linear layer.

Features arrive as flat rows [batch, C*H*W] (C order), reshaped inside the model.
"""

from __future__ import annotations

import re

import numpy as np
import onnx

from coordinator.models.netbuild import ModelSpecError, Net

SPEC = re.compile(r"^(\d+(?:x\d+)*)(?:-(\d+))?$")


def _dims(spec: str, args: str, ranks: tuple[int, ...], spatial: int, multiple: int, form: str):
    """(dimensions, classes) of a conv net spec, checked."""
    match = SPEC.match(args)
    dims = [int(d) for d in match.group(1).split("x")] if match else []
    classes = int(match.group(2)) if match and match.group(2) else 10
    if len(dims) not in ranks or min(dims + [classes]) < 1 or any(d % multiple for d in dims[-spatial:]):
        raise ModelSpecError(f"model spec {spec!r}: expected {form}")
    return dims, classes


def cnn(spec: str, args: str, seed: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    dims, classes = _dims(spec, args, (2, 3), 2, 4, "cnn:[C]xHxW[-CLASSES], H and W multiples of 4")
    channels, height, width = dims if len(dims) == 3 else [1, *dims]
    net = Net(channels * height * width, seed)
    net.apply("Reshape", [net.constant("image_shape", np.array([-1, channels, height, width], np.int64))], "image")
    previous = channels
    for i, out in enumerate((8, 16)):
        w = net.uniform(f"conv{i}.weight", (out, previous, 3, 3), previous * 9)
        net.apply("Conv", [w, net.value(f"conv{i}.bias", np.zeros(out))], f"conv{i}", pads=[1, 1, 1, 1])
        net.apply("Relu", [], f"relu{i}")
        net.apply("MaxPool", [], f"pool{i}", kernel_shape=[2, 2], strides=[2, 2])
        previous = out
    flat = previous * (height // 4) * (width // 4)
    net.apply("Flatten", [], "flatten")
    w = net.uniform("fc.weight", (flat, classes), flat, classes)
    net.apply("Gemm", [w, net.value("fc.bias", np.zeros(classes))], "fc", "logits")
    return net.model(spec.replace(":", "_"), classes)


def cnn1d(spec: str, args: str, seed: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    dims, classes = _dims(spec, args, (2,), 1, 2, "cnn1d:CxL[-CLASSES], L even")
    channels, steps = dims
    net = Net(channels * steps, seed)
    net.apply("Reshape", [net.constant("window_shape", np.array([-1, channels, steps], np.int64))], "window")
    net.apply("Conv", [net.uniform("conv0.weight", (16, channels, 5), channels * 5)], "conv0", pads=[2, 2])
    norm = [
        net.value("bn0.scale", np.ones(16)),
        net.value("bn0.bias", np.zeros(16)),
        net.value("bn0.running_mean", np.zeros(16)),
        net.value("bn0.running_var", np.ones(16)),
    ]
    net.apply("BatchNormalization", norm, "bn0")
    net.apply("Relu", [], "relu0")
    net.apply("MaxPool", [], "pool0", kernel_shape=[2], strides=[2])
    depthwise = [net.uniform("dwconv.weight", (16, 1, 5), 5), net.value("dwconv.bias", np.zeros(16))]
    net.apply("Conv", depthwise, "dwconv", pads=[2, 2], group=16)
    pointwise = [net.uniform("pwconv.weight", (32, 16, 1), 16), net.value("pwconv.bias", np.zeros(32))]
    net.apply("Conv", pointwise, "pwconv")
    net.apply("Relu", [], "relu1")
    net.apply("GlobalAveragePool", [], "gap")
    net.apply("Flatten", [], "flatten")
    net.apply("Dropout", [net.constant("dropout.ratio", np.array(0.2, np.float32))], "dropout")
    w = net.uniform("fc.weight", (32, classes), 32, classes)
    net.apply("Gemm", [w, net.value("fc.bias", np.zeros(classes))], "fc", "logits")
    return net.model(spec.replace(":", "_"), classes)


CONVNETS = {"cnn": cnn, "cnn1d": cnn1d}
