"""What each poisoning attack costs, under plain fedavg and under a robust aggregation setting.

For every attack kind and attacker fraction, one emulated federation (10 devices, iid, 5 rounds by
default) per setting, plus one clean run per setting; the same seed, so the same data split and
identities throughout. Prints one table of final test accuracy and writes bench.json under --out.
Every run is a real `blockfl emulate` federation (coordinator.emulator.run.federation), one at a
time; --budget bounds the whole benchmark (runs past it are skipped and shown as such).

    .venv/bin/python benchmarks/bench_attacks.py [--robust multi-krum:3 --robust-norm-factor 3 --robust-weight-cap 2]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coordinator.emulator.attacks import KINDS  # noqa: E402
from coordinator.emulator.run import Options, federation  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--fractions", default="0.1,0.3")
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--robust", default="multi-krum:3", help="the robust setting's --aggregation")
    parser.add_argument("--robust-norm-factor", type=float, default=3.0)
    parser.add_argument("--robust-weight-cap", type=int, default=2)
    parser.add_argument("--run-timeout", type=float, default=120, help="seconds one federation may take")
    parser.add_argument("--budget", type=float, default=1800, help="seconds for the whole benchmark")
    parser.add_argument("--out", help="directory for every run's report (default: a temporary one)")
    args = parser.parse_args()
    settings = {
        "fedavg": dict(aggregation="fedavg", norm_factor=0.0, weight_cap=0),
        "robust": dict(aggregation=args.robust, norm_factor=args.robust_norm_factor, weight_cap=args.robust_weight_cap),
    }
    cases = [(kind, float(f)) for kind in args.kinds.split(",") for f in args.fractions.split(",")]
    out = pathlib.Path(args.out or tempfile.mkdtemp(prefix="bench-attacks-"))
    deadline = time.monotonic() + args.budget
    results: dict = {}

    def emulate(name: str, setting: str, **attack) -> dict | None:
        if time.monotonic() > deadline:
            return None
        options = Options(out / setting / name, devices=args.devices, rounds=args.rounds, seed=args.seed,
                          timeout=args.run_timeout, quiet=True, **settings[setting], **attack)  # fmt: skip
        report = federation(options)
        final = report["rounds"][-1]["accuracy"] if report["rounds"] else None
        attackers = [report["device_ids"][d] for d in report["attackers"]]
        honest = [n for d, n in report["device_ids"].items() if d not in report["attackers"]]
        result = {"ok": report["ok"], "accuracy": final, "seconds": report["seconds"],
                  "attacker_credits": _mean(report["rewards"], attackers),
                  "honest_credits": _mean(report["rewards"], honest)}  # fmt: skip
        print(f"  {setting:6} {name:24} {_acc(result)} in {report['seconds']}s", flush=True)
        return result

    for setting in settings:
        results[setting] = {"clean": emulate("clean", setting)}
        for kind, fraction in cases:
            run = emulate(f"{kind}-{fraction}", setting, attack=kind, attackers=fraction)
            results[setting][f"{kind}@{fraction}"] = run
    (out / "bench.json").write_text(json.dumps({"settings": settings, "results": results}, indent=2))
    print(_table(results, cases, settings["robust"]))
    print(f"\nreports under {out}")
    return 0


def _mean(rewards: dict, nodes: list[str]) -> float | None:
    return sum(rewards.get(n, 0) for n in nodes) / len(nodes) if nodes else None


def _acc(result: dict | None) -> str:
    if result is None:
        return "skipped"
    if result["accuracy"] is None:
        return "no blocks"
    return f"{result['accuracy']:.3f}" + ("" if result["ok"] else "!")


def _diff(result: dict | None, clean: dict | None) -> str:
    if not result or not clean or None in (result["accuracy"], clean["accuracy"]):
        return "-"
    return f"{result['accuracy'] - clean['accuracy']:+.3f}"


def _credits(result: dict | None) -> str:
    if not result or result["attacker_credits"] is None or not result["honest_credits"]:
        return "-"
    return f"{result['attacker_credits'] / result['honest_credits']:.2f}"


def _table(results: dict, cases, robust: dict) -> str:
    fed, rob = results["fedavg"], results["robust"]
    lines = [
        f"\nrobust = {robust['aggregation']}, norm factor {robust['norm_factor']}, weight cap {robust['weight_cap']}; "
        "final test accuracy ('!': the run failed a check or timed out); credits: attacker/honest mean",
        f"clean: fedavg {_acc(fed['clean'])}, robust {_acc(rob['clean'])}",
        "",
        "| kind | fraction | clean fedavg | fedavg | diff | clean robust | robust | diff "
        "| credits fedavg | credits robust |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, fraction in cases:
        f, r = fed.get(f"{kind}@{fraction}"), rob.get(f"{kind}@{fraction}")
        lines.append(
            f"| {kind} | {fraction} | {_acc(fed['clean'])} | {_acc(f)} | {_diff(f, fed['clean'])} "
            f"| {_acc(rob['clean'])} | {_acc(r)} | {_diff(r, rob['clean'])} | {_credits(f)} | {_credits(r)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
