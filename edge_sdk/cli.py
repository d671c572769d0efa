"""`blockfl-device`: the device side of BlockFL Edge."""
from __future__ import annotations

import argparse
import json
import sys

from .keys import Identity


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blockfl-device", description="BlockFL Edge device: identity, training and updates.")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
