"""`blockfl`: coordinator, miner, emulator and chain tools."""
from __future__ import annotations

import argparse
import math
import sys

from edge_sdk.errors import ProtocolError


def _chain_verify(args) -> int:
    from .chainverify import verify_database

    try:
        report = verify_database(args.db)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if report.ok:
        tip = report.tip
        print(f"ok: {report.blocks} blocks verified; tip height {tip.height} hash {tip.hash.hex()}")
        return 0
    print(f"FAILED after {report.blocks} blocks: {report.failure}")
    return 1


def _chain_demo(args) -> int:
    from .demo_chain import build_demo_chain

    def show(height: int, block_hash: bytes) -> None:
        print(f"committed {height} {block_hash.hex()}", flush=True)

    store = build_demo_chain(args.db, blocks=args.blocks, devices=args.devices, seed=args.seed, on_block=show)
    print(f"chain in {args.db}: {store.count()} blocks, tip height {store.tip.header.height}")
    return 0


def _model_build(args) -> int:
    import onnx

    from .compiler import Optimizer, UnsupportedModelError
    from .model_package import build_package
    from .model_zoo import ModelSpecError, build_forward

    try:
        optimizer = Optimizer.parse(args.optimizer)
        if args.model.endswith(".onnx"):
            forward, params, name = onnx.load(args.model), {}, args.model
        else:
            forward, params = build_forward(args.model, seed=args.seed)
            name = args.model
        manifest = build_package(args.out, forward, params, loss=args.loss, optimizer=optimizer, model_name=name)
    except (ModelSpecError, UnsupportedModelError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    count = sum(math.prod(s) for s in manifest["param_shapes"].values())
    print(f"wrote {args.out}: {name}, {count} parameters, loss {args.loss}, optimizer {args.optimizer}")
    if args.ort_artifacts:
        return _model_artifacts(argparse.Namespace(package=args.out))
    return 0


def _model_artifacts(args) -> int:
    from .ort_artifacts import ArtifactsUnavailable, generate

    try:
        out = generate(args.package)
    except (ArtifactsUnavailable, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote official training artifacts to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blockfl", description="BlockFL Edge: coordinator, miners, emulator and chain tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    chain = commands.add_parser("chain", help="inspect and check chain databases")
    chain_cmds = chain.add_subparsers(dest="chain_command", required=True, metavar="SUBCOMMAND")
    verify = chain_cmds.add_parser("verify", help="re-validate a stored chain from genesis; exit 1 at the first broken rule")
    verify.add_argument("db", help="a miner's chain database (SQLite)")
    verify.set_defaults(func=_chain_verify)
    demo = chain_cmds.add_parser("demo", help="build (or extend) a synthetic chain with random updates")
    demo.add_argument("db", help="chain database to create or extend")
    demo.add_argument("--blocks", type=int, default=10, help="blocks to add (default 10)")
    demo.add_argument("--devices", type=int, default=4, help="updates per block (default 4)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_chain_demo)

    model = commands.add_parser("model", help="build model packages for on-device training")
    model_cmds = model.add_subparsers(dest="model_command", required=True, metavar="SUBCOMMAND")
    build = model_cmds.add_parser("build", help="compile a forward model into train-step graphs (forward.onnx, train_step.onnx, train_epoch.onnx, params.npz, manifest.json)")
    build.add_argument("--model", required=True, help="logreg:IN-OUT, mlp:IN-H1-...-OUT[:relu|tanh|sigmoid], or a forward .onnx file")
    build.add_argument("--loss", default="cross-entropy", choices=["cross-entropy", "mse", "binary-cross-entropy"])
    build.add_argument("--optimizer", default="sgd", help="sgd, momentum[:MU] (default mu 0.9), or adam (default sgd)")
    build.add_argument("--out", required=True, help="package directory to write")
    build.add_argument("--seed", type=int, default=0, help="seed of the initial parameters (zoo models)")
    build.add_argument("--ort-artifacts", action="store_true", help="also generate the official training artifacts (needs onnxruntime-training)")
    build.set_defaults(func=_model_build)
    artifacts = model_cmds.add_parser("artifacts", help="generate official onnxruntime-training artifacts for a package (needs onnxruntime-training, onnx 1.16, torch)")
    artifacts.add_argument("package", help="package directory written by `blockfl model build`")
    artifacts.set_defaults(func=_model_artifacts)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ProtocolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
