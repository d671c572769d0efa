"""`blockfl`: coordinator, miner, emulator and chain tools."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

from coordinator.emulator.command import add_emulate
from coordinator.models.command import add_model
from edge_sdk.protocol.errors import ProtocolError
from edge_sdk.protocol.task import PRIVACY_MODES
from edge_sdk.training.package import LOSSES


def _chain_verify(args) -> int:
    from coordinator.tools.chainverify import verify_database

    report = verify_database(args.db)
    if report.ok:
        tip = report.tip
        print(f"ok: {report.blocks} blocks verified; tip height {tip.height} hash {tip.hash.hex()}")
        return 0
    print(f"FAILED after {report.blocks} blocks: {report.failure}")
    return 1


def _chain_demo(args) -> int:
    from coordinator.tools.demo_chain import block_line, build_demo_chain, period_lines

    difficulty = None if Path(args.db).exists() else _difficulty(args, miners=1)  # a chain keeps its task
    store = build_demo_chain(
        args.db,
        blocks=args.blocks,
        devices=args.devices,
        seed=args.seed,
        interval_ms=args.target_interval_ms,
        difficulty=difficulty,
        on_block=lambda header, parent: print(block_line(header, parent), flush=True),
    )
    print(f"chain in {args.db}: {store.count()} blocks, tip height {store.tip.header.height}")
    print("\n".join(period_lines(store.best_chain()[1:], store.task.chain.target_interval_ms)))
    return 0


def _chain_balances(args) -> int:
    from edge_sdk.chain.ledger import balances
    from edge_sdk.chain.store import ChainStore

    store = ChainStore(args.db)
    blocks = [store.raw_block(h.hash) for h in store.best_chain()[1:]]
    for node, credits in sorted(balances(store.task, blocks).items(), key=lambda kv: -kv[1]):
        print(f"{node}  {credits}")
    return 0


def _miner_run(args) -> int:
    from coordinator.emulator import lifeline
    from coordinator.miner.node import Miner
    from edge_sdk.chain.rules import validate_genesis
    from edge_sdk.node import logs
    from edge_sdk.node.bundle import SEALED_SHARE_FILE
    from edge_sdk.privacy.sealed_share import open_share
    from edge_sdk.protocol.identity import Identity
    from edge_sdk.transport.mqtt import BrokerConfig

    logs.setup(args.verbose)
    try:  # a damaged key, bundle or database: one line and exit status 2, which the unit does not restart
        identity, genesis = Identity.load(args.identity), Path(args.genesis).read_bytes()
        task, share = validate_genesis(genesis)[1], None
        if task.privacy.encrypted:  # its key share, from the bundle unless given
            sealed = Path(args.share or Path(args.broker_config).parent / SEALED_SHARE_FILE).read_bytes()
            share = open_share(sealed, identity.box_key, task, identity.public.sign_pk)
        broker = BrokerConfig.load(args.broker_config)
        miner = Miner(identity=identity, genesis=genesis, db_path=args.db, broker=broker, share=share)
    except (OSError, ValueError, sqlite3.DatabaseError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.metrics_port is not None:
        from coordinator.miner.metrics import serve_metrics

        serve_metrics(args.metrics_port, args.metrics_addr, lambda: miner.snapshot)
    lifeline.follow_parent()  # only when the emulator started this miner
    miner.run()
    return 0


def _coordinator_init(args) -> int:
    from coordinator.task.setup import init_task
    from edge_sdk.protocol.identity import PublicIdentity
    from edge_sdk.protocol.task import RewardRules, RoundRules, TrainingParams

    miners = [PublicIdentity.from_json(json.loads(Path(d, "identity.json").read_text())) for d in args.miner]
    difficulty = _difficulty(args, miners=len(miners))
    task = init_task(
        args.task_dir,
        miners=miners,
        name=args.name,
        model=args.model,
        loss=args.loss,
        optimizer=args.optimizer,
        training=TrainingParams(args.epochs, args.batch_size, args.learning_rate),
        rounds=RoundRules(args.min_updates, args.max_wait_ms),
        rewards=RewardRules(args.mining_reward, args.sample_reward),
        target_interval_ms=args.target_interval_ms,
        initial_hashes=difficulty.expected_hashes,
        privacy=args.privacy,
        dp_clip=args.dp_clip,
        dp_noise=args.dp_noise,
        paillier_threshold=args.threshold,
        min_participants=args.min_participants,
    )
    print(f"task {task.id.hex()} in {args.task_dir}: genesis.block, model/, coordinator/, registry.json, broker/")
    return 0


def _coordinator_enroll(args) -> int:
    from coordinator.task.setup import enroll_device, enroll_miner
    from edge_sdk.protocol.identity import PublicIdentity

    public = PublicIdentity.from_json(json.loads(Path(args.identity).read_text()))
    if args.miner:
        out = enroll_miner(args.task_dir, public, broker_url=args.broker_url, out=args.out)
    else:
        out = enroll_device(
            args.task_dir,
            public,
            broker_url=args.broker_url,
            out=args.out,
            quota=args.quota,
            days=args.days,
            name=args.name,
        )
    print(f"enrolled {public.node_id}: bundle in {out}; broker files in {args.task_dir}/broker (reload the broker)")
    return 0


def _coordinator_revoke(args) -> int:
    from coordinator.task.setup import revoke_device

    revoke_device(args.task_dir, args.device_id)
    print(
        f"revoked {args.device_id}: broker files re-rendered (reload the broker); "
        f"publish {args.task_dir}/revocations.bin retained on the task's revocations topic"
    )
    return 0


def _coordinator_bridge(args) -> int:
    from coordinator.task.bridge import create_bridge

    conf = create_bridge(args.task_dir, args.name, core_url=args.core_url, out=args.out, ca_file=args.ca_file)
    print(
        f"bridge user bridge-{args.name} in {args.task_dir}/broker (reload the core broker); {conf} (0600: it holds "
        f"the password) and {args.task_dir}/broker/regional/{{passwd,acl}} go to the regional broker"
    )
    return 0


def _coordinator_publish(args) -> int:
    from coordinator.task.publish import publish_retained

    topics = publish_retained(args.task_dir, args.broker_url, args.ca_file)
    print("published (retained): " + ", ".join(topics))
    return 0


def _difficulty(args, miners: int):
    """The initial difficulty from --initial-hashes, --hash-rate or a measurement here, printed."""
    from coordinator.task.calibrate import initial_difficulty

    difficulty = initial_difficulty(
        miners=miners, interval_ms=args.target_interval_ms, initial_hashes=args.initial_hashes, hash_rate=args.hash_rate
    )
    print(difficulty.describe())
    return difficulty


def _difficulty_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--initial-hashes", type=int, help="expected hashes per block at first (default: calibrated)")
    parser.add_argument(
        "--hash-rate", type=float, help="H/s per miner (default: measured here); first block: miners x rate x interval"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blockfl", description="BlockFL Edge: coordinator, miners, emulator and chain tools."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    chain = commands.add_parser("chain", help="inspect and check chain databases")
    chain_cmds = chain.add_subparsers(dest="chain_command", required=True, metavar="SUBCOMMAND")
    verify = chain_cmds.add_parser(
        "verify", help="re-validate a stored chain from genesis; exit 1 at the first broken rule"
    )
    verify.add_argument("db", help="a miner's chain database (SQLite)")
    verify.set_defaults(func=_chain_verify)
    demo = chain_cmds.add_parser("demo", help="build (or extend) a synthetic chain with random updates")
    demo.add_argument("db", help="chain database to create or extend")
    demo.add_argument("--blocks", type=int, default=10, help="blocks to add (default 10)")
    demo.add_argument("--devices", type=int, default=4, help="updates per block (default 4)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--target-interval-ms", type=int, default=50, help="a new chain's block interval (default 50)")
    _difficulty_options(demo)
    demo.set_defaults(func=_chain_demo)
    bal = chain_cmds.add_parser("balances", help="rewards ledger of the best chain: credits per node")
    bal.add_argument("db", help="a chain database (SQLite)")
    bal.set_defaults(func=_chain_balances)

    add_emulate(commands, _difficulty_options)

    miner = commands.add_parser("miner", help="run a miner node")
    miner_cmds = miner.add_subparsers(dest="miner_command", required=True, metavar="SUBCOMMAND")
    mrun = miner_cmds.add_parser(
        "run", help="validate updates, mine blocks, follow the best chain, answer sync requests"
    )
    mrun.add_argument("--identity", required=True, help="the miner's identity directory")
    mrun.add_argument("--genesis", required=True, help="the task's genesis.block")
    mrun.add_argument("--broker-config", required=True, help="broker.json from enrolment")
    mrun.add_argument(
        "--share", help="Paillier modes: the sealed key share (default: paillier.share.sealed next to broker.json)"
    )
    mrun.add_argument("--db", required=True, help="chain database (SQLite; created if missing)")
    mrun.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port (/metrics)")
    mrun.add_argument("--metrics-addr", default="127.0.0.1", help="address for --metrics-port (default 127.0.0.1)")
    mrun.add_argument("--verbose", action="store_true")
    mrun.set_defaults(func=_miner_run)

    coord = commands.add_parser("coordinator", help="create a task, enrol and revoke nodes")
    coord_cmds = coord.add_subparsers(dest="coordinator_command", required=True, metavar="SUBCOMMAND")
    init = coord_cmds.add_parser("init", help="create a task: keys, model package, rules, miner set, genesis block")
    init.add_argument("--task-dir", required=True)
    init.add_argument("--miner", action="append", required=True, help="a miner's identity directory (repeat per miner)")
    init.add_argument("--name", default="task")
    init.add_argument("--model", default="mlp:64-32-10", help="a zoo model (see `blockfl model build --help`)")
    init.add_argument("--loss", default="cross-entropy", choices=LOSSES)
    init.add_argument("--optimizer", default="sgd")
    init.add_argument("--epochs", type=int, default=5)
    init.add_argument("--batch-size", type=int, default=16)
    init.add_argument("--learning-rate", type=float, default=0.1)
    init.add_argument("--min-updates", type=int, default=1, help="updates a miner waits for before mining")
    init.add_argument("--max-wait-ms", type=int, default=30_000, help="how long a miner waits for more updates")
    init.add_argument(
        "--target-interval-ms", type=int, default=10_000, help="block interval the difficulty retargets toward"
    )
    _difficulty_options(init)
    init.add_argument("--privacy", default="plain", choices=PRIVACY_MODES)
    init.add_argument("--dp-clip", type=float, default=1.0)
    init.add_argument("--dp-noise", type=float, default=1.0, help="dp: noise multiplier")
    init.add_argument("--threshold", type=int, help="Paillier: miners needed to decrypt (default: a majority)")
    init.add_argument("--min-participants", type=int, default=2, help="Paillier: fewest updates a block may aggregate")
    init.add_argument("--mining-reward", type=int, default=100)
    init.add_argument("--sample-reward", type=int, default=1)
    init.set_defaults(func=_coordinator_init)
    enroll = coord_cmds.add_parser("enroll", help="sign a device certificate and issue broker credentials (a bundle)")
    enroll.add_argument("--task-dir", required=True)
    enroll.add_argument("--identity", required=True, help="the node's identity.json")
    enroll.add_argument("--out", required=True, help="bundle directory to write")
    enroll.add_argument("--broker-url", required=True, help="mqtt://host:port or mqtts://host:port")
    enroll.add_argument(
        "--quota",
        type=int,
        default=2000,
        help="most samples one update may claim: set it near the data a device really holds (in Paillier modes it "
        "is the only cap on a device's weight)",
    )
    enroll.add_argument("--days", type=float, default=365, help="certificate lifetime")
    enroll.add_argument("--name", default="")
    enroll.add_argument(
        "--miner", action="store_true", help="enrol a miner of the task's miner set instead of a device"
    )
    enroll.set_defaults(func=_coordinator_enroll)
    revoke = coord_cmds.add_parser("revoke", help="revoke a device: broker access and a signed revocation list")
    revoke.add_argument("--task-dir", required=True)
    revoke.add_argument("device_id")
    revoke.set_defaults(func=_coordinator_revoke)
    bridge = coord_cmds.add_parser(
        "bridge", help="a regional broker's bridge to the core: bridge user, bridge.conf (mosquitto/README.md)"
    )
    bridge.add_argument("--task-dir", required=True)
    bridge.add_argument("--name", required=True, help="the region; its user is bridge-NAME (again: new password)")
    bridge.add_argument("--core-url", required=True, help="the core broker: mqtts://host:port (or mqtt:// on loopback)")
    bridge.add_argument("--ca-file", help="for mqtts: the CA certificate's path on the regional host")
    bridge.add_argument("--out", required=True, help="directory for bridge.conf")
    bridge.set_defaults(func=_coordinator_bridge)
    publish = coord_cmds.add_parser(
        "publish", help="publish the genesis block and the revocation list, retained, to the broker"
    )
    publish.add_argument("--task-dir", required=True)
    publish.add_argument("--broker-url", required=True, help="mqtt://host:port or mqtts://host:port")
    publish.add_argument("--ca-file", help="CA certificate for mqtts")
    publish.set_defaults(func=_coordinator_publish)

    add_model(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; a problem with its input becomes one line on stderr and exit status 2
    (a broken protocol rule: 1), never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ProtocolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
