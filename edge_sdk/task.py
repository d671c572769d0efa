"""The task manifest: the rules a federation agreed on, committed to by its genesis block."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from typing import Any

from . import codec
from .errors import ProtocolError, Reason
from .params import Model, decode_model, encode_model
from .work import MAX_TARGET

TASK_DOMAIN = b"BLOCKFL-EDGE/task\x00"
MAX_UPDATES_LIMIT = 2048          # with MAX_SAMPLES below keeps sum n_k <= 2^31
MAX_SAMPLES = 1 << 20             # per update
FIXED_POINT_BUDGET = 30           # frac_bits + delta_bits: |q| < 2^30, so sum n_k q_k fits int64


@dataclass(frozen=True)
class ChainParams:
    pow_limit: int = MAX_TARGET >> 8          # easiest target any block may have
    initial_target: int = MAX_TARGET >> 12    # target of the first blocks (about 4096 hashes)
    target_interval_ms: int = 10_000          # the block interval retargeting aims at
    retarget_window: int = 4                  # blocks per retarget
    max_updates: int = 256                    # updates per block
    max_update_bytes: int = 4 * 1024 * 1024   # one update envelope
    max_block_bytes: int = 64 * 1024 * 1024   # one block envelope
    max_skew_ms: int = 120_000                # how far a timestamp may run ahead of a clock
    frac_bits: int = 24                       # fixed-point fractional bits of the global model
    delta_bits: int = 6                       # every |delta| < 2^delta_bits

    def to_wire(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["pow_limit"] = self.pow_limit.to_bytes(32, "big")
        out["initial_target"] = self.initial_target.to_bytes(32, "big")
        return out

    @classmethod
    def from_wire(cls, value: Any) -> "ChainParams":
        names = {f.name for f in fields(cls)}
        if not isinstance(value, dict) or set(value) != names:
            missing = names - set(value) if isinstance(value, dict) else names
            extra = set(value) - names if isinstance(value, dict) else set()
            raise ProtocolError(Reason.BAD_BODY, f"chain params: missing {sorted(missing)}, unknown {sorted(extra)}")
        kwargs = {}
        for name in names:
            item = value[name]
            if name in ("pow_limit", "initial_target"):
                if not isinstance(item, bytes) or len(item) != 32:
                    raise ProtocolError(Reason.BAD_BODY, f"chain params: {name} must be 32 bytes")
                item = int.from_bytes(item, "big")
            elif not isinstance(item, int) or isinstance(item, bool):
                raise ProtocolError(Reason.BAD_BODY, f"chain params: {name} must be an integer")
            kwargs[name] = item
        params = cls(**kwargs)
        params.check()
        return params

    def check(self) -> None:
        """Reject rule sets that cannot work, with the reason."""
        problems = []
        if not 1 <= self.initial_target <= self.pow_limit <= MAX_TARGET:
            problems.append("need 1 <= initial_target <= pow_limit < 2^256")
        if self.target_interval_ms < 1 or self.retarget_window < 1 or self.max_skew_ms < 0:
            problems.append("target_interval_ms and retarget_window must be >= 1, max_skew_ms >= 0")
        if not 1 <= self.max_updates <= MAX_UPDATES_LIMIT:
            problems.append(f"max_updates must be in [1, {MAX_UPDATES_LIMIT}]")
        if self.max_update_bytes < 1024 or self.max_block_bytes < self.max_update_bytes:
            problems.append("need 1024 <= max_update_bytes <= max_block_bytes")
        if self.frac_bits < 0 or self.delta_bits < 0 or self.frac_bits + self.delta_bits > FIXED_POINT_BUDGET:
            problems.append(f"frac_bits + delta_bits must be <= {FIXED_POINT_BUDGET}")
        if problems:
            raise ProtocolError(Reason.BAD_BODY, "chain params: " + "; ".join(problems))


@dataclass(frozen=True)
class Task:
    name: str
    coordinator: bytes      # Ed25519 public key that signs genesis (and, later, certificates)
    chain: ChainParams
    initial_model: Model    # fixed point, chain.frac_bits fractional bits
    created_ms: int

    def to_wire(self) -> dict:
        return {
            "name": self.name,
            "coordinator": self.coordinator,
            "chain": self.chain.to_wire(),
            "model": encode_model(self.initial_model, self.chain.frac_bits),
            "created_ms": self.created_ms,
        }

    @property
    def id(self) -> bytes:
        """SHA-256(TASK_DOMAIN || canonical manifest): what every header's task_id must be."""
        return hashlib.sha256(TASK_DOMAIN + codec.encode(self.to_wire())).digest()

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(v.shape) for name, v in self.initial_model.items()}

    @classmethod
    def from_wire(cls, value: Any) -> "Task":
        keys = {"name", "coordinator", "chain", "model", "created_ms"}
        if not isinstance(value, dict) or set(value) != keys:
            raise ProtocolError(Reason.BAD_BODY, f"task manifest must have exactly {sorted(keys)}")
        if not isinstance(value["name"], str) or not 0 < len(value["name"]) <= 64:
            raise ProtocolError(Reason.BAD_BODY, "task name must be 1-64 characters")
        if not isinstance(value["coordinator"], bytes) or len(value["coordinator"]) != 32:
            raise ProtocolError(Reason.BAD_BODY, "coordinator must be a 32-byte key")
        if not isinstance(value["created_ms"], int) or isinstance(value["created_ms"], bool):
            raise ProtocolError(Reason.BAD_BODY, "created_ms must be an integer")
        chain = ChainParams.from_wire(value["chain"])
        model, frac_bits = decode_model(value["model"])
        if frac_bits != chain.frac_bits:
            raise ProtocolError(Reason.BAD_BODY, "model frac_bits differs from the chain's")
        if not model:
            raise ProtocolError(Reason.BAD_BODY, "model has no parameters")
        return cls(value["name"], value["coordinator"], chain, model, value["created_ms"])
