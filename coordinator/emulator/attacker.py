"""An attacker device process for the emulator (never part of a real deployment):

    python -m coordinator.emulator.attacker --kind KIND [the arguments of `blockfl-device run`]

It is `blockfl-device run` with an AttackerDevice in place of the Device.
"""

from __future__ import annotations

import argparse
import functools
import sys

from coordinator.emulator.attacks import KINDS, AttackerDevice
from edge_sdk import cli as device_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="attacker", description=__doc__.splitlines()[0])
    parser.add_argument("--kind", required=True, choices=KINDS)
    ours, rest = parser.parse_known_args(argv)
    args = device_cli.build_parser().parse_args(["run", *rest])
    return device_cli.run_device(args, functools.partial(AttackerDevice, kind=ours.kind))


if __name__ == "__main__":
    sys.exit(main())
