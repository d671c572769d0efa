"""A clean run and an attacked run of the same federation, side by side: accuracy per round, the
updates each block excluded, and rewards of attackers vs honest devices (report.json, summary.md,
accuracy_clean_vs_attacked.png). What an attack costs is only visible against the clean run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from coordinator.emulator.attacks import describe

PLOT = "accuracy_clean_vs_attacked.png"


def write_comparison(out: Path, clean: dict, attacked: dict, *, say: Callable[[str], None]) -> dict:
    comparison = compare(clean, attacked)
    (out / "report.json").write_text(json.dumps(comparison, indent=2))
    _plot(out, comparison)
    (out / "summary.md").write_text(_summary(comparison))
    final = comparison["final"]
    say(
        f"{'OK' if comparison['ok'] else 'FAILED'}: final accuracy clean {_acc(final['clean'])}, "
        f"attacked {_acc(final['attacked'])}; report: {out / 'report.json'}, {out / 'summary.md'}, {out / PLOT}"
    )
    return comparison


def compare(clean: dict, attacked: dict) -> dict:
    o = attacked["options"]
    names = {node: name for name, node in attacked["device_ids"].items()}
    attackers = attacked["attackers"]
    by_height = {"clean": _by_height(clean), "attacked": _by_height(attacked)}
    heights = sorted(set(by_height["clean"]) | set(by_height["attacked"]))
    rounds = [
        {
            "height": h,
            **{f"{run}_accuracy": by_height[run].get(h, {}).get("accuracy") for run in by_height},
            **{f"{run}_excluded": _names(by_height[run].get(h, {}).get("excluded"), names) for run in by_height},
        }
        for h in heights
    ]
    final = {run: (report["rounds"][-1]["accuracy"] if report["rounds"] else None)
             for run, report in (("clean", clean), ("attacked", attacked))}  # fmt: skip
    if None not in final.values():
        final["difference"] = final["attacked"] - final["clean"]
    return {
        "ok": clean["ok"] and attacked["ok"],
        "attack": {
            "kind": o["attack"],
            "what": describe(o["attack"], attacked["delta_bits"]),
            "fraction": o["attackers"],
            "attackers": attackers,
            "attacker_ids": [attacked["device_ids"][d] for d in attackers],
        },
        "aggregation": attacked["aggregation"],
        "devices": o["devices"],
        "initial_accuracy": attacked["initial"]["accuracy"],
        "rounds": rounds,
        "final": final,
        "rewards": {run: _rewards(report, attackers) for run, report in (("clean", clean), ("attacked", attacked))},
        "runs": {"clean": "clean/report.json", "attacked": "attacked/report.json"},
    }


def _by_height(report: dict) -> dict[int, dict]:
    return {r["height"]: r for r in report["rounds"]}


def _names(excluded: list[str] | None, names: dict[str, str]) -> list[str] | None:
    return None if excluded is None else [names.get(node, node) for node in excluded]


def _rewards(report: dict, attackers: list[str]) -> dict:
    """Mean credits per device, attackers vs honest (in the clean run: the same devices, all honest)."""
    credits = {name: report["rewards"].get(node, 0) for name, node in report["device_ids"].items()}
    honest = [v for d, v in credits.items() if d not in attackers]
    groups = {"attackers": [credits[d] for d in attackers], "honest": honest}
    return {group: (sum(v) / len(v) if v else None) for group, v in groups.items()}


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _excluded(value: list[str] | None, attackers: list[str]) -> str:
    if value is None:
        return "n/a"
    return ", ".join(f"{d}*" if d in attackers else d for d in value) or "none"


def _plot(out: Path, c: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for run, color in (("clean", "tab:blue"), ("attacked", "tab:red")):
        points = [(0, c["initial_accuracy"])]
        points += [(r["height"], r[f"{run}_accuracy"]) for r in c["rounds"] if r[f"{run}_accuracy"] is not None]
        ax.plot(*zip(*points, strict=True), marker="o", color=color, label=run)
    attack = c["attack"]
    ax.set(
        title=f"{attack['kind']}, {len(attack['attackers'])}/{c['devices']} attackers, {c['aggregation']['rule']}",
        xlabel="block height (round)",
        ylabel="test accuracy",
        ylim=(0, 1),
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / PLOT, dpi=110)
    plt.close(fig)


def _summary(c: dict) -> str:
    attack, rule, final = c["attack"], c["aggregation"], c["final"]
    attackers = attack["attackers"]
    lines = [
        f"# BlockFL emulation, clean vs attacked: {'OK' if c['ok'] else 'FAILED'}",
        "",
        f"Attack `{attack['kind']}` ({attack['what']}) by {len(attackers)} of {c['devices']} devices "
        f"({', '.join(attackers)}; marked * below).",
        f"Aggregation: {rule['rule']} (trim {rule['trim']}, f {rule['f']}, norm factor {rule['norm_factor']}, "
        f"norm bound {rule['norm_bound']}, weight cap {rule['weight_cap']}).",
        "",
        "| round | clean accuracy | attacked accuracy | difference | excluded (clean) | excluded (attacked) |",
        "|---|---|---|---|---|---|",
        f"| 0 | {c['initial_accuracy']:.3f} | {c['initial_accuracy']:.3f} | 0.000 | | |",
    ]
    for r in c["rounds"]:
        clean, hit = r["clean_accuracy"], r["attacked_accuracy"]
        diff = "-" if None in (clean, hit) else f"{hit - clean:+.3f}"
        lines.append(
            f"| {r['height']} | {_acc(clean)} | {_acc(hit)} | {diff} "
            f"| {_excluded(r['clean_excluded'], [])} | {_excluded(r['attacked_excluded'], attackers)} |"
        )
    lines += ["", "Rewards, mean credits per device:", "", "| run | attackers | honest |", "|---|---|---|"]
    lines += [f"| {run} | {_credits(v['attackers'])} | {_credits(v['honest'])} |" for run, v in c["rewards"].items()]
    diff = f"{final['difference']:+.3f}" if "difference" in final else "-"
    lines += [
        "",
        f"Final accuracy: clean {_acc(final['clean'])}, attacked {_acc(final['attacked'])} ({diff}).",
        f"Each run's own report: {c['runs']['clean']}, {c['runs']['attacked']}. Plot: {PLOT}.",
    ]
    return "\n".join(lines) + "\n"


def _credits(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
