"""The `blockfl model` commands: build a package from the zoo or from a user's exported ONNX model,
official training artifacts, ORT-format copies."""

from __future__ import annotations

import argparse
import math

from edge_sdk.training.package import LOSSES


def _build(args) -> int:
    import onnx

    from coordinator.models.optimizers import Optimizer
    from coordinator.models.package_writer import build_package
    from coordinator.models.zoo import build_forward

    optimizer = Optimizer.parse(args.optimizer)
    if args.from_onnx:
        forward, values, name = onnx.load(args.from_onnx), {}, args.from_onnx
    else:
        if args.freeze:
            raise ValueError("--freeze applies to --from-onnx models")
        (forward, values), name = build_forward(args.model, seed=args.seed), args.model
    m = build_package(
        args.out, forward, values, loss=args.loss, optimizer=optimizer, model_name=name, frozen=args.freeze
    )
    listed = lambda names, shapes: ", ".join(f"{k} {shapes[k]}" for k in names) or "none"  # noqa: E731
    count = sum(math.prod(s) for s in m["param_shapes"].values())
    print(f"wrote {args.out}: {name}, {count} parameters, loss {args.loss}, optimizer {args.optimizer}")
    print(f"trainable: {listed(m['params'], m['param_shapes'])}")
    print(f"buffers (updated by each step, averaged with the parameters): {listed(m['buffers'], m['buffer_shapes'])}")
    if m["frozen"]:
        print(f"frozen: {', '.join(m['frozen'])}")
    print(f"features: rows of {m['num_features']} values (one sample {m['sample_shape']}, flattened in C order)")
    if args.ort_artifacts:
        return _artifacts(argparse.Namespace(package=args.out))
    return 0


def _artifacts(args) -> int:
    from coordinator.models.ort_artifacts import generate

    out = generate(args.package)
    print(f"wrote official training artifacts to {out}")
    return 0


def _ort(args) -> int:
    from coordinator.models.ort_format import convert_package

    written = convert_package(args.package)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def add_model(commands) -> None:
    model = commands.add_parser("model", help="build model packages for on-device training")
    model_cmds = model.add_subparsers(dest="model_command", required=True, metavar="SUBCOMMAND")
    build = model_cmds.add_parser(
        "build",
        help="compile a forward model into train-step graphs "
        "(forward.onnx, train_step.onnx, train_epoch.onnx, params.npz, manifest.json)",
    )
    source = build.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model",
        help="a zoo model: logreg:IN-OUT, mlp:IN-H1-...-OUT[:relu|tanh|sigmoid], cnn:[C]xHxW[-CLASSES] "
        "(H, W multiples of 4; cnn:8x8 for the digits), cnn1d:CxL[-CLASSES] (sensor windows, L even)",
    )
    source.add_argument(
        "--from-onnx",
        metavar="FILE",
        help="your exported forward model (e.g. torch.onnx.export with dynamic_axes on the batch, and "
        "training=torch.onnx.TrainingMode.TRAINING when it has BatchNorm or Dropout); its float "
        "initializers are trained, BatchNormalization's running statistics become buffers",
    )
    build.add_argument("--freeze", action="append", default=[], metavar="NAME", help="keep this initializer fixed")
    build.add_argument("--loss", default="cross-entropy", choices=LOSSES)
    build.add_argument("--optimizer", default="sgd", help="sgd, momentum[:MU] (default mu 0.9), or adam (default sgd)")
    build.add_argument("--out", required=True, help="package directory to write")
    build.add_argument("--seed", type=int, default=0, help="seed of the initial parameters (zoo models)")
    build.add_argument(
        "--ort-artifacts",
        action="store_true",
        help="also generate the official training artifacts (needs onnxruntime-training)",
    )
    build.set_defaults(func=_build)
    artifacts = model_cmds.add_parser(
        "artifacts",
        help="generate official onnxruntime-training artifacts for a package "
        "(needs onnxruntime-training, onnx 1.16, torch)",
    )
    artifacts.add_argument("package", help="package directory written by `blockfl model build`")
    artifacts.set_defaults(func=_artifacts)
    ort_cmd = model_cmds.add_parser(
        "ort", help="convert a package's graphs to ORT format (mobile and minimal builds) into PACKAGE/ort/"
    )
    ort_cmd.add_argument("package", help="package directory written by `blockfl model build`")
    ort_cmd.set_defaults(func=_ort)
