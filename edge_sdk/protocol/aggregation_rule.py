"""The task's aggregation rule (manifest section `aggregation`): how a block's updates become a model.

A poisoned update that is well formed can only be stopped by the rule every node applies, so the
rule is part of the manifest. `edge_sdk.chain.robust` computes it in exact integers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from edge_sdk.protocol.errors import ProtocolError, Reason

RULES = ("fedavg", "trimmed-mean", "median", "multi-krum")


@dataclass(frozen=True)
class AggregationRule:
    """`rule` picks the estimator; `trim` is trimmed-mean's beta (the fraction cut from each side),
    `f` multi-krum's assumed number of attackers. Before the rule, an update whose L2 norm exceeds
    `norm_bound` (absolute, parameter units) or `norm_factor` times the round's median norm is
    excluded (0 turns either off); each weight is at most `weight_cap` times the round's median
    sample claim (0 turns it off)."""

    rule: str = "fedavg"
    trim: float = 0.0
    f: int = 0
    norm_bound: float = 0.0
    norm_factor: float = 0.0
    weight_cap: int = 2

    @property
    def needs_plaintext(self) -> bool:
        """Whether nodes must see updates or compare claims (impossible under Paillier, where
        devices weight their own values and the quota is the only cap)."""
        return self.rule != "fedavg" or self.norm_bound > 0 or self.norm_factor > 0 or self.weight_cap > 0

    def to_wire(self) -> dict:
        return {
            "rule": self.rule,
            "trim": float(self.trim),
            "f": self.f,
            "norm_bound": float(self.norm_bound),
            "norm_factor": float(self.norm_factor),
            "weight_cap": self.weight_cap,
        }

    @classmethod
    def from_wire(cls, value: Any) -> AggregationRule:
        kinds = {"rule": str, "trim": float, "f": int, "norm_bound": float, "norm_factor": float, "weight_cap": int}
        if not isinstance(value, dict) or set(value) != set(kinds):
            raise ProtocolError(Reason.BAD_BODY, f"aggregation must have exactly {sorted(kinds)}")
        for name, kind in kinds.items():
            item = value[name]
            ok = isinstance(item, float) if kind is float else isinstance(item, kind) and not isinstance(item, bool)
            if not ok:
                raise ProtocolError(Reason.BAD_BODY, f"aggregation: {name} must be {kind.__name__}")
        rule = cls(**value)
        rule.check()
        return rule

    def check(self) -> None:
        problems = []
        if self.rule not in RULES:
            problems.append(f"rule must be one of {', '.join(RULES)}")
        if not (0.0 <= self.trim < 0.5) or (self.trim and self.rule != "trimmed-mean"):
            problems.append("trim must be in [0, 0.5), and only for trimmed-mean")
        if not 0 <= self.f <= 1024 or (self.f and self.rule != "multi-krum"):
            problems.append("f must be in [0, 1024], and only for multi-krum")
        if not (math.isfinite(self.norm_bound) and 0.0 <= self.norm_bound < 2.0**20):
            problems.append("norm_bound must be in [0, 2^20)")
        if not (self.norm_factor == 0.0 or 1.0 <= self.norm_factor <= 1024.0):
            problems.append("norm_factor must be 0 (off) or in [1, 1024]")
        if not 0 <= self.weight_cap <= 1 << 20:
            problems.append("weight_cap must be in [0, 2^20]")
        if problems:
            raise ProtocolError(Reason.BAD_BODY, "aggregation: " + "; ".join(problems))

    @classmethod
    def parse(cls, spec: str, *, norm_bound: float = 0.0, norm_factor: float = 0.0, weight_cap: int = 2):
        """From a command-line spec: `fedavg`, `median`, `trimmed-mean:BETA`, `multi-krum:F`."""
        name, _, arg = spec.partition(":")
        try:
            if name == "trimmed-mean":
                rule = cls(name, trim=float(arg), norm_bound=norm_bound, norm_factor=norm_factor, weight_cap=weight_cap)
            elif name == "multi-krum":
                rule = cls(name, f=int(arg), norm_bound=norm_bound, norm_factor=norm_factor, weight_cap=weight_cap)
            elif arg:
                raise ValueError(f"{name} takes no parameter")
            else:
                rule = cls(name, norm_bound=norm_bound, norm_factor=norm_factor, weight_cap=weight_cap)
            rule.check()
        except (ValueError, ProtocolError) as exc:
            raise ValueError(f"aggregation {spec[:40]!r}: {exc}") from None
        return rule
