"""benchmarks/chaos.py's accounting: what became of every update the broker acknowledged, read from
the devices' delivery logs, the miners' audit tables (coordinator/miner/pool.py) and their chains.

- silent: acknowledged by the broker, then neither admitted nor refused by any miner (issue 17).
- lost: admitted (durably pooled: delivered, in the protocol's sense) by the miner that made the
  block closing its round, more than LOST_MARGIN_MS before that block's time, yet neither in that
  block nor refused by that miner: a pool that did not keep what it had taken.
- of the admitted: on the final best chain, superseded (its round closed without it, by a miner
  that did not have it in time), orphaned (its base left the best chain), open (its base is the
  final tip).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

from edge_sdk.chain.store import ChainStore
from edge_sdk.protocol import codec

LOST_MARGIN_MS = 1000  # an update admitted this long before a block's assembly was in that miner's pool


@dataclass
class Audit:
    """Over every miner: admitted digest -> {miner: ms}, base, device; refused digest -> [(miner, reason)]."""

    admitted: dict[bytes, dict] = field(default_factory=dict)
    refused: dict[bytes, list[tuple[int, str]]] = field(default_factory=dict)

    def add(self, miner: int, rows: list, refusals: list) -> None:
        for digest, base, device, ms in rows:
            entry = self.admitted.setdefault(digest, {"base": base, "device": device, "by": {}})
            entry["by"][miner] = ms
        for digest, reason, _ in refusals:
            self.refused.setdefault(digest, []).append((miner, reason))

    def handled(self, digest: bytes) -> bool:
        return digest in self.admitted or digest in self.refused


def account(delivered: dict[bytes, dict], audit: Audit, store: ChainStore, miner_keys: list[bytes]) -> dict:
    """Fates of the `delivered` updates (digest -> device, base, ms) against the best chain in `store`."""
    best = store.best_chain()
    on_best = {h.hash: h for h in best}
    children = {h.prev_hash: h for h in best[1:]}  # on the best chain, the block that closed each round
    included = {}
    for h in best[1:]:
        for u in codec.decode(store.raw_block(h.hash))[3]["updates"]:
            included[hashlib.sha256(u).digest()] = h.height
    tip = best[-1].hash
    fate, reasons, silent, lost = Counter(), Counter(), [], []
    for digest in delivered:
        for reason in {r for _, r in audit.refused.get(digest, [])}:
            reasons[reason] += 1
        entry = audit.admitted.get(digest)
        if entry is None:
            if digest not in audit.refused:
                silent.append(digest)
            continue
        base = entry["base"]
        if digest in included:
            fate["on_chain"] += 1
        elif base == tip:
            fate["open"] += 1
        elif base not in on_best:
            fate["orphaned"] += 1
        elif _dropped(digest, entry, children.get(base), audit, miner_keys):
            lost.append(digest)
        else:
            fate["superseded"] += 1
    return {
        "delivered": len(delivered),
        "admitted": sum(d in audit.admitted for d in delivered),
        "refused": sum(d in audit.refused for d in delivered),
        "refused_only": sum(d in audit.refused and d not in audit.admitted for d in delivered),
        "refused_by_reason": dict(reasons),
        "silent": len(silent),
        "lost": len(lost),
        "admitted_fate": {k: fate[k] for k in ("on_chain", "superseded", "orphaned", "open")},
        "admitted_without_delivery_record": sum(d not in delivered for d in audit.admitted),
        "final_height": best[-1].height,
        "silent_digests": silent,
        "lost_digests": lost,
    }


def _dropped(digest: bytes, entry: dict, closing, audit: Audit, miner_keys: list[bytes]) -> bool:
    """Whether the miner that closed the round had admitted the update in time and left it out unrefused."""
    if closing is None or closing.miner not in miner_keys:
        return False
    miner = miner_keys.index(closing.miner)
    ms = entry["by"].get(miner)
    refused_there = any(m == miner for m, _ in audit.refused.get(digest, []))
    return ms is not None and ms < closing.timestamp_ms - LOST_MARGIN_MS and not refused_there


def describe(digest: bytes, d: dict, stores: list[ChainStore], kills: list[dict], started_ms: int) -> dict:
    """What is known about a SILENT or LOST update: who sent it, on which height, and the kills around then."""
    base = next((h for s in stores if (h := s.header(d["base"])) is not None), None)
    acked = round((d["ms"] - started_ms) / 1000, 1)
    near = [f"{k['victim']} at {k['t']}s ({k['t'] - acked:+.1f}s)" for k in kills if abs(k["t"] - acked) < 10]
    where = {"base_height": base.height if base else None, "acked_at": acked, "kills_within_10s": near}
    return {"digest": digest.hex()[:16], "device": f"d{d['device']}", **where}


def kill_summary(kills: list[dict]) -> dict:
    kinds = Counter("miner-in-handler" if k.get("in_handler") else k["victim"].rstrip("0123456789") for k in kills)
    aimed = [k for k in kills if k.get("in_handler")]
    return {
        "kills_by_kind": dict(kinds),
        "in_handler": {
            "kills": len(aimed),
            "holding_at_the_kill": sum(bool(k["held"]) for k in aimed),
            "acknowledged_unhandled_at_the_kill": sum(k["acknowledged_unhandled"] for k in aimed),
        },
    }


def print_summary(s: dict) -> None:
    f, crashes = s["admitted_fate"], s["crashes"] or "none"
    lines = [
        "\n=== chaos summary ===",
        f"kills: {len(s['kills'])} {s['kills_by_kind']}; crashes (exits nobody caused): {crashes}",
        f"  in the handler: {s['in_handler']}",
        f"updates delivered (PUBACK < 0x80, not 0x10): {s['delivered']}",
        f"  admitted by >= 1 miner: {s['admitted']}",
        f"  refused by >= 1 miner: {s['refused']} ({s['refused_only']} only refused); {s['refused_by_reason']}",
        f"  SILENT (acknowledged, neither admitted nor refused by any miner): {s['silent']}",
        f"  LOST (admitted by the miner that closed its round, in time, and left out): {s['lost']}",
        f"  of the admitted: on the final best chain {f['on_chain']}, superseded {f['superseded']}, "
        f"orphaned {f['orphaned']}, open at the end (base = final tip) {f['open']}",
        f"  admitted, no delivery record (PUBACK never handled): {s['admitted_without_delivery_record']}",
        *(f"  SILENT {x}" for x in s["silent_updates"]),
        *(f"  LOST {x}" for x in s["lost_updates"]),
        f"final height {s['final_height']}; settled: {s['settled']}; converged: {s['converged']} "
        f"(miner tips {s['miner_tips']}, device tips {s['device_tips']})",
    ]
    for name, v in s["verify"].items():
        failure = f": {v['failure']}" if v["failure"] else ""
        lines.append(f"  chain verify {name}: {'ok' if v['ok'] else 'FAILED'} ({v['blocks']} blocks){failure}")
    print("\n".join([*lines, f"time: {s['seconds']}s"]))
