"""`blockfl`: coordinator, miner, emulator and chain tools."""
from __future__ import annotations

import argparse
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
