"""The `blockfl emulate` command: its options and how they become an emulator run."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from edge_sdk.protocol.task import PRIVACY_MODES


def _emulate(args) -> int:
    from coordinator.emulator.data import parse
    from coordinator.emulator.run import Options, run

    parse(args.partition)
    options = Options(
        out=Path(args.out or time.strftime("out/emulate-%Y%m%d-%H%M%S")),
        devices=args.devices,
        miners=args.miners,
        rounds=args.rounds,
        seed=args.seed,
        partition=args.partition,
        data=args.data,
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_wait_ms=args.max_wait_ms,
        verify=args.verify,
        processes=args.processes,
        start_fraction=args.start_when,
        timeout=args.timeout,
        broker_url=args.broker,
        ray=args.ray,
        privacy=args.privacy,
        dp_clip=args.dp_clip,
        dp_noise=args.dp_noise,
        dp_epsilon=args.dp_epsilon,
        dp_delta=args.dp_delta,
        threshold=args.threshold,
        min_participants=args.min_participants,
        paillier_bits=args.paillier_bits,
        attack=args.attack,
        attackers=args.attackers,
        aggregation=args.aggregation,
        norm_factor=args.norm_factor,
        weight_cap=args.weight_cap,
        initial_hashes=args.initial_hashes,
        hash_rate=args.hash_rate,
    )
    if options.devices < 1 or options.miners < 1 or options.rounds < 1:
        raise ValueError("--devices, --miners and --rounds must be >= 1")
    return run(options)


def add_emulate(commands, difficulty_options: Callable[[argparse.ArgumentParser], None]) -> None:
    emulate = commands.add_parser(
        "emulate", help="run a whole federation locally (broker, miners, devices) and write a report"
    )
    emulate.add_argument("--devices", type=int, default=10)
    emulate.add_argument("--miners", type=int, default=3)
    emulate.add_argument("--rounds", type=int, default=5)
    emulate.add_argument("--seed", type=int, default=0)
    emulate.add_argument(
        "--partition", default="iid", help="iid or dirichlet:ALPHA (label skew; smaller ALPHA, more skew)"
    )
    emulate.add_argument(
        "--data",
        default="digits",
        help="digits (scikit-learn's), generated[:N] (a generated 64-feature, 10-class set of N samples, "
        "default 20000), or FILE.npz with arrays x (samples x features) and y (class labels 0..C-1)",
    )
    emulate.add_argument(
        "--model",
        default="mlp:64-32-10",
        help="a zoo model, e.g. mlp:64-32-10 or cnn:8x8 (`blockfl model build --help`)",
    )
    emulate.add_argument("--epochs", type=int, default=5, help="local epochs per round")
    emulate.add_argument("--batch-size", type=int, default=16)
    emulate.add_argument("--learning-rate", type=float, default=0.1)
    emulate.add_argument(
        "--max-wait-ms",
        type=int,
        help="a miner mines with what it has this long after a round's first update (default: 8 s plus 30 "
        "times the time this machine needs to train every device once, measured at start)",
    )
    emulate.add_argument(
        "--verify",
        default="auto",
        choices=("auto", "full", "light"),
        help="how devices check blocks: full (every update), light (headers, models and full nodes' alerts); "
        "auto: full up to 50 devices, light above",
    )
    emulate.add_argument(
        "--processes",
        type=int,
        help="worker processes that run the device agents (default: one per core, and at least one per 120 devices)",
    )
    emulate.add_argument(
        "--start-when",
        type=float,
        default=1.0,
        help="start the miners (the first round) once this fraction of the devices is online",
    )
    emulate.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    emulate.add_argument(
        "--broker",
        help="mqtt://host:port of a running broker that lets these nodes in (for instance one started with "
        "OUT/task/broker/passwd and acl, or allowing anonymous clients); default: start Mosquitto",
    )
    emulate.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run the device workers as Ray actors on the Ray cluster at ADDRESS (host:port; this machine must be "
        "one of its nodes; needs the cluster extra). On several machines --out must be on a filesystem every node "
        "mounts at the same path and --broker a broker they all reach (docs/ray.md)",
    )
    emulate.add_argument("--privacy", default="plain", choices=PRIVACY_MODES)
    emulate.add_argument("--dp-clip", type=float, default=1.0, help="dp: L2 clip of each update")
    emulate.add_argument("--dp-noise", type=float, help="dp: noise multiplier (default: calibrated from --dp-epsilon)")
    emulate.add_argument("--dp-epsilon", type=float, default=8.0, help="dp: target epsilon after --rounds rounds")
    emulate.add_argument("--dp-delta", type=float, default=1e-5)
    emulate.add_argument(
        "--threshold", type=int, help="Paillier: miners whose partial decryptions open an aggregate (default: majority)"
    )
    emulate.add_argument(
        "--min-participants",
        type=int,
        help="Paillier: fewest updates a block may aggregate (default: half the devices; paillier+dp: all of them, "
        "each adding 1/sqrt of the noise)",
    )
    emulate.add_argument("--paillier-bits", type=int, default=2048, help="Paillier modulus size")
    emulate.add_argument(
        "--attack",
        help="scale | sign-flip | noise | label-flip | inflate-samples: some devices poison their updates; "
        "runs the federation clean and attacked and compares the two",
    )
    emulate.add_argument(
        "--attackers", type=float, default=0.1, help="fraction of devices that attack (at least 1; chosen by --seed)"
    )
    emulate.add_argument(
        "--aggregation", default="fedavg", help="fedavg | median | trimmed-mean:BETA | multi-krum:F (the task's rule)"
    )
    emulate.add_argument(
        "--norm-factor", type=float, default=0.0, help="exclude updates above this times the median norm (0: off)"
    )
    emulate.add_argument(
        "--weight-cap", type=int, default=2, help="weight at most this times the median sample claim (0: off)"
    )
    difficulty_options(emulate)
    emulate.add_argument("--out", help="report directory, new or empty (default: out/emulate-DATE-TIME)")
    emulate.set_defaults(func=_emulate)
