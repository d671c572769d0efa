"""Does report.json tell the truth? Runs `blockfl emulate` with N seeds in a row and compares each
report's final tip, per-round block hashes, forks and rewards with what `blockfl chain verify` and
`blockfl chain balances` derive from every miner's database. Prints one line per run.

    .venv/bin/python benchmarks/report_truth.py [--runs 10 --devices 6 --miners 3 --rounds 3]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "emulator"))

from test_report_truth import best_chain, cli  # noqa: E402


def check(out: pathlib.Path, miners: int) -> list[str]:
    report = json.loads((out / "report.json").read_text())
    rounds, problems, every = [r["hash"] for r in report["rounds"]], [], set()
    if not rounds or rounds[-1] != report["tip"]:
        problems.append("the last round is not the tip")
    for i in range(miners):
        db = out / "miners" / f"m{i}" / "chain.db"
        if cli("chain", "verify", str(db)).returncode != 0:
            problems.append(f"m{i}: chain verify failed")
        chain, stored = best_chain(db)
        every |= stored
        if chain != rounds:
            problems.append(f"m{i}: best chain differs")
        lines = cli("chain", "balances", str(db)).stdout.splitlines()
        if {x.split()[0]: int(x.split()[1]) for x in lines if x.strip()} != report["rewards"]:
            problems.append(f"m{i}: balances differ")
    if report["forks"] != len(every - set(rounds)):
        problems.append(f"forks {report['forks']} != {len(every - set(rounds))} stored off the best chain")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--devices", type=int, default=6)
    parser.add_argument("--miners", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.runs):
            out = pathlib.Path(tmp) / f"s{seed}"
            run = cli("emulate", "--devices", str(args.devices), "--miners", str(args.miners), "--rounds",
                      str(args.rounds), "--seed", str(seed), "--out", str(out))  # fmt: skip
            problems = [f"emulate exited {run.returncode}"] if run.returncode else check(out, args.miners)
            report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
            failures += bool(problems)
            summary = (
                f"tip {report.get('tip', '?')[:16]} rounds {len(report.get('rounds', []))} forks {report.get('forks')}"
            )
            print(f"seed {seed}: {'agrees' if not problems else 'DIFFERS: ' + '; '.join(problems)} ({summary})")
    print(f"{args.runs - failures}/{args.runs} runs: report.json agrees with every miner's database")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
