"""`blockfl-device`: the device side of BlockFL Edge."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys

from edge_sdk.protocol.identity import Identity
from edge_sdk.training.backends import BACKENDS


def _keys_init(args) -> int:
    identity = Identity.generate()
    try:
        identity.save(args.dir, force=args.force)
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(identity.public.to_json(), indent=2))
    return 0


def _keys_show(args) -> int:
    try:
        identity = Identity.load(args.dir)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(identity.public.to_json(), indent=2))
    return 0


def run_device(args, make_device=None) -> int:
    """`run`: build a Device (or what `make_device` builds from the same arguments) and run it."""
    import numpy as np

    from edge_sdk.node import logs
    from edge_sdk.node.bundle import Bundle
    from edge_sdk.node.config import DeviceConfig
    from edge_sdk.node.device import Device

    try:
        config = DeviceConfig.load(
            args.config,
            bundle=args.bundle,
            identity=args.identity,
            data=args.data,
            state=args.state,
            backend=args.backend,
            miner_index=args.miner_index,
            verify=args.verify,
            verbose=args.verbose or None,
        )
        logs.setup(config.verbose)
        bundle = Bundle(config.bundle)
        identity = Identity.load(config.identity)
        with np.load(config.data) as data:
            x, y = data["x"], data["y"]
        device = (make_device or Device)(
            bundle=bundle,
            identity=identity,
            data=(x, y),
            state_dir=config.state,
            backend=config.backend,
            preferred_miner=config.miner_index,
            verify=config.verify,
        )
    except (OSError, ValueError, KeyError, sqlite3.DatabaseError) as exc:  # the unit does not restart on 2
        print(f"error: {exc}", file=sys.stderr)
        return 2
    device.run()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blockfl-device", description="BlockFL Edge device: identity, training and updates."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    keys = commands.add_parser("keys", help="create and show this device's identity")
    key_cmds = keys.add_subparsers(dest="keys_command", required=True, metavar="SUBCOMMAND")
    init = key_cmds.add_parser("init", help="create an Ed25519 signing key and an X25519 box key (files mode 0600)")
    init.add_argument("--dir", required=True, help="directory for the identity files")
    init.add_argument("--force", action="store_true", help="replace an existing identity (its keys are lost)")
    init.set_defaults(func=_keys_init)
    show = key_cmds.add_parser("show", help="print the public identity as JSON")
    show.add_argument("--dir", required=True, help="directory holding the identity")
    show.set_defaults(func=_keys_show)

    run = commands.add_parser("run", help="join a federation: follow blocks, verify models, train, publish updates")
    run.add_argument("--config", help="TOML settings file (see deploy/raspberry-pi/device.toml); flags override it")
    run.add_argument(
        "--bundle", help="enrolment bundle from the coordinator (genesis, certificate, model, broker.json)"
    )
    run.add_argument("--identity", help="this device's identity directory (keys init)")
    run.add_argument("--data", help="local training data: .npz with arrays x (features) and y (labels)")
    run.add_argument("--state", help="state directory (chain, outbox, status); survives restarts")
    run.add_argument("--backend", choices=BACKENDS, help="default auto")
    run.add_argument(
        "--miner-index", type=int, help="which miner of the task to prefer (others are fail-overs); default 0"
    )
    run.add_argument(
        "--verify",
        choices=("full", "light"),
        help="full (default): validate every update of every block; light: headers, models and alerts "
        "from full nodes (download independent of the number of devices; assumes one honest full node)",
    )
    run.add_argument("--verbose", action="store_true", help="log progress, not only problems")
    run.set_defaults(func=run_device)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
