"""The emulator's report: report.json, PNG plots and a short human summary."""

from __future__ import annotations

import json
from pathlib import Path

from coordinator.emulator import anatomy


def write_report(out: Path, report: dict) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=2))
    _plots(out, report)
    (out / "summary.md").write_text(_summary(report))


def _plots(out: Path, report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = report["rounds"]
    if not rounds:
        return
    heights = [0] + [r["height"] for r in rounds]
    accuracy = [report["initial"]["accuracy"]] + [r["accuracy"] for r in rounds]
    loss = [report["initial"]["loss"]] + [r["loss"] for r in rounds]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(heights, accuracy, marker="o")
    a.set(title="Global model: test accuracy", xlabel="block height (round)", ylabel="accuracy", ylim=(0, 1))
    a.grid(alpha=0.3)
    b.plot(heights, loss, marker="o", color="tab:red")
    b.set(title="Global model: test loss", xlabel="block height (round)", ylabel="cross-entropy")
    b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "accuracy_loss.png", dpi=110)
    plt.close(fig)

    _interval_plot(plt, out, report)
    anatomy.plot(out, report["anatomy"])

    rewards = sorted(report["rewards"].items(), key=lambda kv: -kv[1])
    names = {m.get("node"): f"miner m{k[1:]}" for k, m in report["miners"].items() if m}
    names.update({d.get("node"): f"device d{k[1:]}" for k, d in report["devices"].items() if d})
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(
        [names.get(k, k[:8]) for k, _ in rewards],
        [v for _, v in rewards],
        color=["tab:orange" if names.get(k, "").startswith("miner") else "tab:blue" for k, _ in rewards],
    )
    ax.set(title="Rewards (ledger from the best chain)", ylabel="credits")
    ax.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    fig.savefig(out / "rewards.png", dpi=110)
    plt.close(fig)


def _interval_plot(plt, out: Path, report: dict) -> None:
    """Block intervals per height against the target interval, and the difficulty that retargeting set."""
    heights = [r["height"] for r in report["rounds"]]
    difficulty = report["difficulty"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(heights, [r["block_interval_s"] for r in report["rounds"]], label="block interval")
    ax.axhline(difficulty["target_interval_s"], color="tab:green", linestyle="--", label="target interval")
    ax.set(title="Block intervals and difficulty", xlabel="block height", ylabel="seconds since parent")
    hashes = ax.twinx()
    hashes.step(heights, difficulty["expected_hashes"], where="mid", color="tab:orange", label="expected hashes")
    hashes.set(ylabel="expected hashes per block", ylim=(0, None))
    fig.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "block_intervals.png", dpi=110)
    plt.close(fig)


def _difficulty_line(report: dict) -> str:
    d, rounds = report["difficulty"], report["rounds"]
    last = rounds[-4:]
    mean = sum(r["block_interval_s"] for r in last) / len(last) if last else 0
    hashes = f"{d['expected_hashes'][0]:,} to {d['expected_hashes'][-1]:,}" if rounds else "-"
    return (
        f"- difficulty: target interval {d['target_interval_s']:g} s, mean of the last {len(last)} intervals "
        f"{mean:.1f} s; expected hashes per block {hashes} (easiest allowed {d['easiest_block_hashes']:,})"
    )


def _summary(report: dict) -> str:
    o = report["options"]
    rounds = report["rounds"]
    lines = [
        f"# BlockFL emulation: {'OK' if report['ok'] else 'FAILED'}",
        "",
        f"{o['devices']} devices ({o['partition']}), {o['miners']} miners, {o['model']}, "
        f"{len(rounds)}/{o['rounds']} rounds in {report['seconds']} s; aggregation {o['aggregation']}.",
        "",
        "| round | accuracy | loss | updates | block interval (s) | block bytes "
        "| miners' traffic (bytes) | rejections |",
        "|---|---|---|---|---|---|---|---|",
        f"| 0 | {report['initial']['accuracy']:.3f} | {report['initial']['loss']:.3f} | | | | | |",
    ]
    lines += [
        f"| {r['height']} | {r['accuracy']:.3f} | {r['loss']:.3f} | {r['updates']} | {r['block_interval_s']:.1f} "
        f"| {r['block_bytes']} | {r.get('wire_bytes', '')} "
        f"| {', '.join(f'{k} {v}' for k, v in r.get('rejections', {}).items()) or '-'} |"
        for r in rounds
    ]
    if report.get("privacy", "plain") != "plain":
        lines += [
            "",
            f"Privacy: {report['privacy']}. {report.get('guarantee', '')}",
            "",
            "| round | accuracy | epsilon | device encryption (s, all devices) | miner aggregation (ms) "
            "| block bytes |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['height']} | {r['accuracy']:.3f} "
            f"| {r.get('epsilon', '-') if 'epsilon' not in r else format(r['epsilon'], '.2f')} "
            f"| {r.get('device_encrypt_s', '-')} | {r.get('miner_aggregate_ms', '-')} | {r['block_bytes']} |"
            for r in rounds
        ]
    verify = ", ".join(f"{k}: {'ok' if v['ok'] else v['failure']}" for k, v in report["chain_verify"].items())
    agreement = report["model_hash_agreement"]
    hashes = "every device computed the same global model for every block" if agreement["ok"] else agreement["problems"]
    if report["attackers"]:
        lines += ["", f"Attackers ({o['attack']}): {', '.join(report['attackers'])}."]
    if report.get("overflowed_rounds"):
        lines += ["", f"Rounds whose aggregate broke its slots (model left unchanged): {report['overflowed_rounds']}."]
    lines += [
        "",
        f"- chain verify: {verify}",
        f"- model hashes: {hashes}",
        f"- rejections by reason: {report['rejections'] or 'none'}",
        f"- blocks off the best chain (forks): {report['forks']}",
        _difficulty_line(report),
        *anatomy.summary_lines(report["anatomy"]),
        "",
        "Plots: accuracy_loss.png, block_intervals.png, rewards.png, round_anatomy.png.",
    ]
    return "\n".join(lines) + "\n"
