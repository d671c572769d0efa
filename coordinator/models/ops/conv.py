"""Convolution, 1-D and 2-D, with stride, padding, dilation and groups.

dX = ConvTranspose(dY, W) with the forward's strides, pads, dilations and groups, and an
     output padding that restores the input's exact size;
dW = a convolution of the input with dY, batch and channels swapped: the forward's strides
     become dilations and its dilations strides; for g groups, the input's channels are laid
     out as [C/g, g * N, ...] so one grouped Conv computes every group's kernels at once;
dB = dY summed over the batch and every spatial position.
"""

from __future__ import annotations

from coordinator.models.ops.step import Rule, Step, UnsupportedModelError, attrs, describe


def explicit_pads(node, spatial: tuple, kernel: tuple, strides, dilations) -> list[int]:
    """The forward's padding as [begin..., end...], whatever its auto_pad."""
    a = attrs(node)
    mode = a.get("auto_pad", b"NOTSET")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode in ("NOTSET", ""):
        return list(a.get("pads", [0] * 2 * len(spatial)))
    if mode == "VALID":
        return [0] * 2 * len(spatial)
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
        total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
        small = total // 2
        begin.append(small if mode == "SAME_UPPER" else total - small)
        end.append(total - begin[-1])
    return begin + end


def geometry(step: Step, node, kernel: tuple):
    """(input shape, strides, dilations, pads, output padding of the transposed convolution)."""
    x = node.input[0]
    shape = step.static(x, node)
    spatial = shape[2:]
    a = attrs(node)
    strides = list(a.get("strides", [1] * len(spatial)))
    dilations = list(a.get("dilations", [1] * len(spatial)))
    pads = explicit_pads(node, spatial, kernel, strides, dilations)
    n = len(spatial)
    out_pad = [
        (size + pads[i] + pads[n + i] - dilations[i] * (kernel[i] - 1) - 1) % strides[i]
        for i, size in enumerate(spatial)
    ]
    return shape, strides, dilations, pads, out_pad


def conv_backward(step: Step, node, dy: str) -> None:
    b = step.b
    x, w = node.input[:2]
    w_shape = step.static(w, node, slice(None))
    kernel = tuple(w_shape[2:])
    shape, strides, dilations, pads, out_pad = geometry(step, node, kernel)
    if len(shape) < 3:
        raise UnsupportedModelError(f"{describe(node)}: needs an input [batch, channels, ...]")
    groups = attrs(node).get("group", 1)
    if x in step.needs:
        common = dict(strides=strides, pads=pads, dilations=dilations, group=groups, kernel_shape=list(kernel))
        step.add(x, b.op("ConvTranspose", [dy, step.env[w]], "dconv_x", output_padding=out_pad, **common))
    if w in step.needs:
        step.add(w, _weight_grad(step, step.env[x], dy, shape, kernel, groups, strides, dilations, pads))
    if len(node.input) > 2 and node.input[2] in step.needs:
        step.add(node.input[2], b.reduce_sum(dy, [0, *range(2, len(shape))], 0, "dconv_b"))


def _weight_grad(step: Step, x: str, dy: str, shape, kernel, groups, strides, dilations, pads) -> str:
    b = step.b
    rank, channels = len(shape), shape[1]
    spatial = list(shape[2:])
    swap = [1, 0, *range(2, rank)]
    if channels == 1:  # [N, 1, ...] -> [1, N, ...] moves nothing
        xt = b.reshape(x, [1, -1, *spatial], "x_t")
    elif groups == 1:
        xt = b.op("Transpose", [x], "x_t", perm=swap)  # [C, N, ...]
    else:  # [N, g, C/g, ...] -> [C/g, g, N, ...] -> [C/g, g * N, ...]
        per_group = channels // groups
        split = b.reshape(x, [-1, groups, per_group, *spatial], "x_g")
        xt = b.reshape(
            b.op("Transpose", [split], "x_t", perm=[2, 1, 0, *range(3, rank + 1)]), [per_group, -1, *spatial], "x_t"
        )
    dyt = b.op("Transpose", [dy], "dy_t", perm=swap)  # [M, N, ...]: the "kernels", one per output channel
    grad = b.op("Conv", [xt, dyt], "dconv_w", strides=dilations, dilations=strides, pads=pads, group=groups)
    n = len(spatial)
    produced = []
    for i, size in enumerate(spatial):
        padded = size + pads[i] + pads[n + i]
        out = (padded - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1
        produced.append((padded - strides[i] * (out - 1) - 1) // dilations[i] + 1)
    if produced != list(kernel):  # a stride that does not divide the padded input leaves extra positions
        grad = b.op("Slice", [grad, b.ints([0] * n), b.ints(list(kernel)), b.ints(list(range(2, rank)))], "dconv_w")
    if channels == groups:  # [1, M, ...] -> [M, 1, ...] moves nothing
        return b.reshape(grad, [-1, 1, *kernel], "dconv_w")
    return b.op("Transpose", [grad], "dconv_w", perm=swap)  # [C/g, M, ...] -> [M, C/g, ...]


RULES = {"Conv": Rule(conv_backward)}
