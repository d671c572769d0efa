"""Round anatomy: where each round of an emulation spends its time, and the bytes it moves.

Every node appends a timeline (edge_sdk.node.status.Timeline: wall-clock ms, byte counters at
block boundaries). After the run this module follows, for each block on the best chain, the
round's critical path: the update that completed the winning miner's pool (the last one of the
block's updates it pooled), back to the training of the device that sent it, and forward to the
median device holding the block's model. The phases are consecutive intervals on that path, so
they never overlap and their sum is the round's wall time less the time the critical device
waited before training. Work off the path (other devices training, other miners gossiping)
overlaps it and is not added. docs/round-anatomy.md says what each phase holds and its holes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from statistics import median

from coordinator.emulator.layout import Layout
from edge_sdk.node.status import Timeline, device_status_path, miner_status_path, timeline_path
from edge_sdk.protocol.block import Block

PHASES = {
    "training": "training",
    "upload_admission": "upload and admission",
    "gossip": "gossip",
    "pool_wait": "waiting for the pool",
    "aggregation": "aggregation",
    "proof_of_work": "proof-of-work",
    "propagation": "block propagation",
    "verification": "verification",
}
BYTES_BASIS = (
    "payload bytes (MQTT headers and topics not counted), from each node's counters recorded when it "
    "accepted the round's parent block and this block (a winning miner: after publishing it); device "
    "figures are the median device, the broker figure is every miner's and device's in + out (the "
    "emulator's observer not counted)"
)


class _Log:
    """One node's timeline, indexed by (event, block hash or update digest or base)."""

    def __init__(self, name: str, path: Path):
        self.name = name
        self.by_key: dict[tuple[str, str], list[dict]] = {}
        for entry in Timeline(path).entries():
            key = entry.get("block") or entry.get("digest") or entry.get("base")
            self.by_key.setdefault((entry.get("event"), key), []).append(entry)

    def first(self, event: str, key: str) -> dict | None:
        found = self.by_key.get((event, key))
        return found[0] if found else None

    def last_before(self, event: str, key: str, ms: int) -> dict | None:
        found = [e for e in self.by_key.get((event, key), []) if e["ms"] <= ms]
        return found[-1] if found else None

    def model_ready(self, block: str, needs_opening: bool) -> int | None:
        """When this node had the block's model: accepted it (Paillier: its aggregate opened)."""
        accepted, opened = self.first("block", block), self.first("opened", block)
        if accepted is None or (needs_opening and opened is None):
            return None
        return max(accepted["ms"], opened["ms"]) if needs_opening else accepted["ms"]

    def traffic(self, block: str | None) -> tuple[int, int] | None:
        """(bytes in, bytes out) at this node's boundary for the block (genesis, `None`: zero); None
        when the node has no record of the block."""
        if block is None:
            return 0, 0
        entry = self.first("mined", block) or self.first("block", block)
        return None if entry is None else (entry["bytes_in"], entry["bytes_out"])


def round_anatomy(layout: Layout, chain, best: list, *, miners: int, devices: int) -> dict:
    """Per-round rows and medians for `best` (the best chain's blocks after genesis, in order)."""
    miner_logs = [_Log(f"m{i}", timeline_path(miner_status_path(layout.miner_db(i)))) for i in range(miners)]
    device_logs = [_Log(f"d{i}", timeline_path(device_status_path(layout.device_state(i)))) for i in range(devices)]
    encrypted = chain.task.privacy.encrypted
    rows = []
    for i, state in enumerate(best):
        parent = best[i - 1].hash.hex() if i else None
        raw = chain.raw[state.hash]
        updates = [hashlib.sha256(u).hexdigest() for u in Block.parse(raw, len(raw)).update_bytes]
        row = {"height": state.header.height, "block": state.hash.hex()[:16], "updates": len(updates)}
        row.update(_timing(state.hash.hex(), updates, miner_logs, device_logs, encrypted))
        row["bytes"] = _bytes(state.hash.hex(), parent, miner_logs, device_logs)
        rows.append(row)
    return {"rounds": rows, "medians": _medians(rows), "bytes_basis": BYTES_BASIS}


def _timing(block: str, updates: list[str], miners: list[_Log], devices: list[_Log], encrypted: bool) -> dict:
    """The critical path of one block's round, or {"missing": why} where a timeline lacks a step."""
    winner = next((m for m in miners if m.first("mined", block)), None)
    if winner is None:
        return {"missing": "no miner recorded mining this block"}
    if not updates:
        return {"missing": "an empty block (no round of training)"}
    mined = winner.first("mined", block)
    pooled = {d: winner.first("pooled", d) for d in updates}
    if any(e is None for e in pooled.values()):
        return {"missing": f"{winner.name} did not record pooling every update"}
    critical = max(updates, key=lambda d: (pooled[d]["ms"], d))
    first_miner, admitted = min(((m, m.first("pooled", critical)) for m in miners if m.first("pooled", critical)),
                                key=lambda pair: pair[1]["ms"])  # fmt: skip
    device = next((d for d in devices if d.first("trained", critical)), None)
    if device is None:
        return {"missing": "no device recorded training the critical update"}
    trained, sent = device.first("trained", critical), device.first("sent", critical)
    train = device.last_before("train", trained["base"], trained["ms"])
    ready = [(r, e["received"]) for d in devices if (r := d.model_ready(block, encrypted)) is not None
             and (e := d.first("block", block)) is not None]  # fmt: skip
    if train is None or sent is None or not ready:
        return {"missing": f"{device.name} or the devices' block records are incomplete"}
    base_ready = device.model_ready(trained["base"], encrypted)  # None for genesis: the round starts with training
    start = train["ms"] if base_ready is None else base_ready
    arrived, verified = median(r for _, r in ready), median(r for r, _ in ready)
    phases = {
        "training": trained["ms"] - train["ms"],
        "upload_admission": admitted["ms"] - trained["ms"],
        "gossip": pooled[critical]["ms"] - admitted["ms"],
        "pool_wait": mined["ready"] - pooled[critical]["ms"],
        "aggregation": mined["aggregated"] - mined["ready"],
        "proof_of_work": mined["found"] - mined["aggregated"],
        "propagation": arrived - mined["found"],
        "verification": verified - arrived,
    }
    return {
        "wall_ms": verified - start,
        "phases_ms": phases,
        "detail_ms": {
            "before_training": train["ms"] - start,  # the critical device busy (e.g. a stale training)
            "handoff": sent["ms"] - trained["ms"],  # outbox saved, sealed, published (first attempt)
            "transit": admitted["received"] - sent["ms"],  # broker to the first miner's handler, retries included
            "admission": admitted["ms"] - admitted["received"],  # unseal, verify, pool
            "seal_and_publish": mined["ms"] - mined["found"],  # sign, own check, publish
            "pool_fill": mined["ready"] - (mined["round_started"] or mined["ready"]),  # first update to ready
        },
        "critical": {
            "device": device.name,
            "first_miner": first_miner.name,
            "winner": winner.name,
            "via_gossip": first_miner is not winner,
            "ready_by": mined["ready_by"],
            "devices_seen": len(ready),
        },
    }


def _bytes(block: str, parent: str | None, miners: list[_Log], devices: list[_Log]) -> dict:
    """Traffic between the parent's and this block's boundaries, per node."""

    def deltas(logs: list[_Log]) -> list[tuple[int, int]]:
        out = []
        for log in logs:
            end, begin = log.traffic(block), log.traffic(parent)
            if end is not None and begin is not None:
                out.append((end[0] - begin[0], end[1] - begin[1]))
        return out

    device, miner = deltas(devices), deltas(miners)
    return {
        "device_down": median(d for d, _ in device) if device else None,
        "device_up": median(u for _, u in device) if device else None,
        "broker": sum(d + u for d, u in device + miner),
        "nodes_counted": len(device) + len(miner),
        "nodes": len(devices) + len(miners),
    }


def _medians(rows: list[dict]) -> dict:
    timed = [r for r in rows if "phases_ms" in r]
    if not timed:
        return {}
    out = {k: median(r["phases_ms"][k] for r in timed) for k in PHASES}
    out["wall_ms"] = median(r["wall_ms"] for r in timed)
    out["wall_minus_pow_ms"] = median(r["wall_ms"] - r["phases_ms"]["proof_of_work"] for r in timed)
    for key in ("device_down", "device_up", "broker"):
        values = [r["bytes"][key] for r in rows if r["bytes"][key] is not None]
        out[f"{key}_bytes"] = median(values) if values else None
    out["rounds"] = len(timed)
    return out


def plot(out: Path, anatomy: dict) -> None:
    """round_anatomy.png: a stacked bar per round and one of the per-phase medians; on the right the
    same without proof-of-work (which hides the rest), its axis cut at 3x the median bar so that a
    start-up round does not flatten the others (cut bars carry their height)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in anatomy["rounds"] if "phases_ms" in r]
    if not timed:
        return
    labels = [str(r["height"]) for r in timed] + ["median\n(per phase)"]
    columns = [r["phases_ms"] for r in timed] + [anatomy["medians"]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, phases, title, cut in (
        (axes[0], list(PHASES), "Round anatomy (critical path)", False),
        (axes[1], [k for k in PHASES if k != "proof_of_work"], "The same without proof-of-work", True),
    ):
        bottom = [0.0] * len(columns)
        for k in phases:
            heights = [c[k] / 1000 for c in columns]
            ax.bar(labels, heights, bottom=bottom, label=PHASES[k], color=_COLOURS[k])
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        ax.set(title=title, xlabel="block height (round)", ylabel="seconds")
        ax.grid(axis="y", alpha=0.3)
        limit = 3 * bottom[-1]
        if cut and limit > 0 and max(bottom) > limit:
            ax.set_ylim(0, limit)
            for x, total in enumerate(bottom):
                if total > limit:
                    ax.annotate(f"{total:.1f} s", (x, limit), xytext=(0, -12), textcoords="offset points",
                                ha="center", fontsize="small", color="white", weight="bold")  # fmt: skip
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize="small")
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    fig.savefig(out / "round_anatomy.png", dpi=110)
    plt.close(fig)


_COLOURS = dict(zip(PHASES, ("tab:blue", "tab:orange", "tab:olive", "tab:gray", "tab:purple", "tab:red",
                             "tab:cyan", "tab:green"), strict=True))  # fmt: skip


def summary_lines(anatomy: dict) -> list[str]:
    """A short table for summary.md: phase medians (ms) per round, and the bytes."""
    rows, m = anatomy["rounds"], anatomy["medians"]
    if not m:
        return ["", "Round anatomy: no round could be measured."]
    head = " | ".join(PHASES.values())
    lines = ["", "Round anatomy (ms, critical path; docs/round-anatomy.md):", "",
             f"| round | {head} | wall | wall - PoW | device down / up (bytes) | broker (bytes) |",
             "|---" * (len(PHASES) + 6) + "|"]  # fmt: skip
    for r in rows:
        if "phases_ms" not in r:
            lines.append(f"| {r['height']} | {r['missing']} |")
            continue
        cells = " | ".join(f"{r['phases_ms'][k]:g}" for k in PHASES)
        b = r["bytes"]
        lines.append(
            f"| {r['height']} | {cells} | {r['wall_ms']:g} | {r['wall_ms'] - r['phases_ms']['proof_of_work']:g} "
            f"| {_n(b['device_down'])} / {_n(b['device_up'])} | {_n(b['broker'])} |"
        )
    cells = " | ".join(f"{m[k]:g}" for k in PHASES)
    lines.append(
        f"| median | {cells} | {m['wall_ms']:g} | {m['wall_minus_pow_ms']:g} "
        f"| {_n(m['device_down_bytes'])} / {_n(m['device_up_bytes'])} | {_n(m['broker_bytes'])} |"
    )
    return lines


def _n(value) -> str:
    return "-" if value is None else f"{value:,.0f}"
