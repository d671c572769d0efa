"""The task manifest: the rules a federation agreed on, committed to by its genesis block."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

from edge_sdk.protocol import codec
from edge_sdk.protocol.aggregation_rule import AggregationRule
from edge_sdk.protocol.decryption import DecryptionRules
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.fixedpoint import Model, decode_model, encode_model
from edge_sdk.protocol.identity import node_id
from edge_sdk.protocol.packing import Packing
from edge_sdk.protocol.work import MAX_TARGET

TASK_DOMAIN = b"BLOCKFL-EDGE/task\x00"
MAX_UPDATES_LIMIT = 2048  # with MAX_SAMPLES below keeps sum n_k <= 2^31
MAX_SAMPLES = 1 << 20  # per update
FIXED_POINT_BUDGET = 30  # frac_bits + delta_bits: |q| < 2^30, so sum n_k q_k fits int64


@dataclass(frozen=True)
class ChainParams:
    pow_limit: int = MAX_TARGET >> 8  # easiest target any block may have
    initial_target: int = MAX_TARGET >> 12  # target of the first blocks (about 4096 hashes)
    target_interval_ms: int = 10_000  # the block interval retargeting aims at
    retarget_window: int = 4  # blocks per retarget
    max_updates: int = 256  # updates per block
    max_update_bytes: int = 4 * 1024 * 1024  # one update envelope
    max_block_bytes: int = 64 * 1024 * 1024  # one block envelope
    max_skew_ms: int = 120_000  # how far a timestamp may run ahead of a clock
    frac_bits: int = 24  # fixed-point fractional bits of the global model
    delta_bits: int = 6  # every |delta| < 2^delta_bits
    max_reorg_depth: int = 6  # a node never abandons more blocks of its best chain than this
    snapshot_quorum: int = 2  # distinct miners whose snapshots must agree before a late joiner adopts one

    def to_wire(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["pow_limit"] = self.pow_limit.to_bytes(32, "big")
        out["initial_target"] = self.initial_target.to_bytes(32, "big")
        return out

    @classmethod
    def from_wire(cls, value: Any) -> ChainParams:
        names = {f.name for f in fields(cls)}
        if not isinstance(value, dict) or set(value) != names:
            missing = names - set(value) if isinstance(value, dict) else names
            extra = set(value) - names if isinstance(value, dict) else set()
            unknown = codec.show(sorted(extra, key=str))
            raise ProtocolError(Reason.BAD_BODY, f"chain params: missing {sorted(missing)}, unknown {unknown}")
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
        if not 1 <= self.max_reorg_depth <= 1 << 20 or not 1 <= self.snapshot_quorum <= 64:
            problems.append("max_reorg_depth must be in [1, 2^20] and snapshot_quorum in [1, 64]")
        if self.frac_bits < 0 or self.delta_bits < 0 or self.frac_bits + self.delta_bits > FIXED_POINT_BUDGET:
            problems.append(f"frac_bits + delta_bits must be <= {FIXED_POINT_BUDGET}")
        if problems:
            raise ProtocolError(Reason.BAD_BODY, "chain params: " + "; ".join(problems))


def _fields_from_wire(cls, value: Any, where: str, kinds: dict[str, type]) -> dict:
    """Check a map has exactly the fields of `kinds`, each of its type; return them."""
    if not isinstance(value, dict) or set(value) != set(kinds):
        got = codec.show(sorted(value, key=str)) if isinstance(value, dict) else type(value).__name__
        raise ProtocolError(Reason.BAD_BODY, f"{where}: expected fields {sorted(kinds)}, got {got}")
    for name, kind in kinds.items():
        item = value[name]
        ok = (
            isinstance(item, (int, float)) and not isinstance(item, bool)
            if kind is float
            else isinstance(item, kind) and not isinstance(item, bool)
        )
        if not ok:
            raise ProtocolError(Reason.BAD_BODY, f"{where}: {name} must be {kind.__name__}")
    return dict(value)


@dataclass(frozen=True)
class TrainingParams:
    """Local training every device runs per round."""

    epochs: int = 5
    batch_size: int = 16
    learning_rate: float = 0.1

    def to_wire(self) -> dict:
        return {"epochs": self.epochs, "batch_size": self.batch_size, "learning_rate": float(self.learning_rate)}

    @classmethod
    def from_wire(cls, value: Any) -> TrainingParams:
        params = cls(
            **_fields_from_wire(cls, value, "training", {"epochs": int, "batch_size": int, "learning_rate": float})
        )
        if params.epochs < 1 or params.batch_size < 1 or not params.learning_rate > 0:
            raise ProtocolError(Reason.BAD_BODY, "training: epochs and batch_size must be >= 1, learning_rate > 0")
        return params


@dataclass(frozen=True)
class RoundRules:
    """When a miner stops waiting for updates and mines (miner policy, not a block rule)."""

    min_updates: int = 1
    max_wait_ms: int = 30_000

    def to_wire(self) -> dict:
        return {"min_updates": self.min_updates, "max_wait_ms": self.max_wait_ms}

    @classmethod
    def from_wire(cls, value: Any) -> RoundRules:
        rules = cls(**_fields_from_wire(cls, value, "rounds", {"min_updates": int, "max_wait_ms": int}))
        if rules.min_updates < 1 or rules.max_wait_ms < 0:
            raise ProtocolError(Reason.BAD_BODY, "rounds: min_updates must be >= 1, max_wait_ms >= 0")
        return rules


@dataclass(frozen=True)
class RewardRules:
    """Ledger credits: `mining` per block with at least rounds.min_updates aggregated updates, to its
    miner; `per_sample` per weighted sample of each aggregated update, to its device. `deposit`:
    what a node forfeits, once, when a block carries evidence of its misbehaviour."""

    mining: int = 100
    per_sample: int = 1
    deposit: int = 1000

    def to_wire(self) -> dict:
        return {"mining": self.mining, "per_sample": self.per_sample, "deposit": self.deposit}

    @classmethod
    def from_wire(cls, value: Any) -> RewardRules:
        kinds = {"mining": int, "per_sample": int, "deposit": int}
        rules = cls(**_fields_from_wire(cls, value, "rewards", kinds))
        if rules.mining < 0 or rules.per_sample < 0 or rules.deposit < 0:
            raise ProtocolError(Reason.BAD_BODY, "rewards must be >= 0")
        return rules


PRIVACY_MODES = ("plain", "dp", "paillier", "paillier+dp")


@dataclass(frozen=True)
class Privacy:
    """How updates are protected. `dp`: devices clip each update to L2 norm `dp_clip` and add
    Gaussian noise of standard deviation dp_noise * dp_clip (in `paillier+dp` each device adds its
    share, so that the decrypted aggregate carries that noise once). `paillier`: updates are packed
    and encrypted under `packing.n`; miners aggregate without the key and `threshold` of them
    decrypt each block's aggregate, and only the aggregate."""

    mode: str = "plain"
    dp_clip: float = 0.0
    dp_noise: float = 0.0
    packing: Packing | None = None
    threshold: DecryptionRules | None = None

    @property
    def dp(self) -> bool:
        return self.mode in ("dp", "paillier+dp")

    @property
    def encrypted(self) -> bool:
        return self.mode in ("paillier", "paillier+dp")

    def to_wire(self) -> dict:
        return {
            "mode": self.mode,
            "dp": {"clip": float(self.dp_clip), "noise_multiplier": float(self.dp_noise)} if self.dp else None,
            "paillier": self.packing.to_wire() if self.encrypted else None,
            "threshold": self.threshold.to_wire() if self.encrypted else None,
        }

    def weight(self, samples: int) -> int:
        """An update's weight in the aggregate: its samples, except in paillier+dp, where every
        device counts once (the central noise is calibrated to one device's clipped update)."""
        return 1 if self.mode == "paillier+dp" else samples

    def device_noise(self) -> float:
        """The noise multiplier each device applies: all of it in `dp`, a 1/sqrt(min_participants)
        share in `paillier+dp`, so any min_participants honest shares add up to noise_multiplier."""
        if self.mode == "paillier+dp":
            return self.dp_noise / self.threshold.min_participants**0.5
        return self.dp_noise

    @classmethod
    def from_wire(cls, value: Any) -> Privacy:
        if (
            not isinstance(value, dict)
            or set(value) != {"mode", "dp", "paillier", "threshold"}
            or value["mode"] not in PRIVACY_MODES
        ):
            raise ProtocolError(
                Reason.BAD_BODY, f"privacy must be {{mode: one of {PRIVACY_MODES}, dp, paillier, threshold}}"
            )
        mode = value["mode"]
        privacy = cls(mode)
        if privacy.dp:
            dp = _fields_from_wire(cls, value["dp"], "privacy.dp", {"clip": float, "noise_multiplier": float})
            if not dp["clip"] > 0 or dp["noise_multiplier"] < 0:
                raise ProtocolError(Reason.BAD_BODY, "privacy.dp: clip must be > 0 and noise_multiplier >= 0")
            privacy = cls(mode, float(dp["clip"]), float(dp["noise_multiplier"]))
        elif value["dp"] is not None:
            raise ProtocolError(Reason.BAD_BODY, f"privacy.dp must be null in mode {mode}")
        if privacy.encrypted:
            packing = Packing.from_wire(value["paillier"])
            threshold = DecryptionRules.from_wire(value["threshold"], packing.n)
            return cls(mode, privacy.dp_clip, privacy.dp_noise, packing, threshold)
        if value["paillier"] is not None or value["threshold"] is not None:
            raise ProtocolError(Reason.BAD_BODY, f"privacy.paillier and privacy.threshold must be null in mode {mode}")
        return privacy


@dataclass(frozen=True)
class MinerInfo:
    sign_pk: bytes
    box_pk: bytes

    @property
    def node_id(self) -> str:
        return node_id(self.sign_pk)


@dataclass(frozen=True)
class Task:
    name: str
    coordinator: bytes  # Ed25519 public key that signs genesis and device certificates
    chain: ChainParams
    initial_model: Model  # fixed point, chain.frac_bits fractional bits
    created_ms: int
    miners: tuple[MinerInfo, ...]
    training: TrainingParams = TrainingParams()
    rounds: RoundRules = RoundRules()
    rewards: RewardRules = RewardRules()
    model_files: dict = field(default_factory=dict)  # file name -> SHA-256 of the model package files
    privacy: Privacy = Privacy()
    aggregation: AggregationRule = AggregationRule()

    def to_wire(self) -> dict:
        return {
            "name": self.name,
            "coordinator": self.coordinator,
            "chain": self.chain.to_wire(),
            "model": encode_model(self.initial_model, self.chain.frac_bits),
            "created_ms": self.created_ms,
            "miners": [{"sign_pk": m.sign_pk, "box_pk": m.box_pk} for m in self.miners],
            "training": self.training.to_wire(),
            "rounds": self.rounds.to_wire(),
            "rewards": self.rewards.to_wire(),
            "model_files": dict(self.model_files),
            "privacy": self.privacy.to_wire(),
            "aggregation": self.aggregation.to_wire(),
        }

    @cached_property  # a Task is immutable; the manifest (initial model included) is encoded once
    def id(self) -> bytes:
        """SHA-256(TASK_DOMAIN || canonical manifest): what every header's task_id must be."""
        return hashlib.sha256(TASK_DOMAIN + codec.encode(self.to_wire())).digest()

    @cached_property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(v.shape) for name, v in self.initial_model.items()}

    def miner(self, sign_pk: bytes) -> MinerInfo | None:
        return next((m for m in self.miners if m.sign_pk == sign_pk), None)

    @classmethod
    def from_wire(cls, value: Any) -> Task:
        keys = {
            "name",
            "coordinator",
            "chain",
            "model",
            "created_ms",
            "miners",
            "training",
            "rounds",
            "rewards",
            "model_files",
            "privacy",
            "aggregation",
        }
        if not isinstance(value, dict) or set(value) != keys:
            raise ProtocolError(Reason.BAD_BODY, f"task manifest must have exactly {sorted(keys)}")
        if not isinstance(value["name"], str) or not 0 < len(value["name"]) <= 64:
            raise ProtocolError(Reason.BAD_BODY, "task name must be 1-64 characters")
        if not isinstance(value["coordinator"], bytes) or len(value["coordinator"]) != 32:
            raise ProtocolError(Reason.BAD_BODY, "coordinator must be a 32-byte key")
        if not isinstance(value["created_ms"], int) or isinstance(value["created_ms"], bool):
            raise ProtocolError(Reason.BAD_BODY, "created_ms must be an integer")
        miners = value["miners"]
        if (
            not isinstance(miners, list)
            or not miners
            or not all(
                isinstance(m, dict)
                and set(m) == {"sign_pk", "box_pk"}
                and all(isinstance(m[k], bytes) and len(m[k]) == 32 for k in m)
                for m in miners
            )
        ):
            raise ProtocolError(Reason.BAD_BODY, "miners must be a non-empty list of {sign_pk, box_pk} 32-byte keys")
        files = value["model_files"]
        if not isinstance(files, dict) or not all(isinstance(v, bytes) and len(v) == 32 for v in files.values()):
            raise ProtocolError(Reason.BAD_BODY, "model_files must map file names to SHA-256 digests")
        if not all(_plain_file_name(name) for name in files):  # a device opens these names in its package
            raise ProtocolError(Reason.BAD_BODY, "model_files names must be plain file names (no paths)")
        chain = ChainParams.from_wire(value["chain"])
        model, frac_bits = decode_model(value["model"])
        if frac_bits != chain.frac_bits:
            raise ProtocolError(Reason.BAD_BODY, "model frac_bits differs from the chain's")
        if not model:
            raise ProtocolError(Reason.BAD_BODY, "model has no parameters")
        privacy = Privacy.from_wire(value["privacy"])
        if privacy.encrypted and chain.max_updates > privacy.packing.max_updates:
            raise ProtocolError(Reason.BAD_BODY, "chain.max_updates exceeds the updates the Paillier headroom allows")
        if privacy.encrypted and privacy.threshold.key.holders != len(miners):
            raise ProtocolError(Reason.BAD_BODY, "privacy.threshold needs one verification key per miner")
        if privacy.encrypted and privacy.threshold.min_participants > chain.max_updates:
            raise ProtocolError(Reason.BAD_BODY, "privacy.threshold.min_participants exceeds chain.max_updates")
        if privacy.encrypted and not -chain.frac_bits <= privacy.packing.clip_exp <= chain.delta_bits:
            raise ProtocolError(Reason.BAD_BODY, "paillier clip_exp must be in [-frac_bits, delta_bits]")
        aggregation = AggregationRule.from_wire(value["aggregation"])
        if privacy.encrypted and aggregation.needs_plaintext:
            raise ProtocolError(Reason.BAD_BODY, "Paillier hides plaintexts: aggregation must be fedavg, weight_cap 0")
        return cls(
            value["name"],
            value["coordinator"],
            chain,
            model,
            value["created_ms"],
            tuple(MinerInfo(m["sign_pk"], m["box_pk"]) for m in miners),
            TrainingParams.from_wire(value["training"]),
            RoundRules.from_wire(value["rounds"]),
            RewardRules.from_wire(value["rewards"]),
            dict(files),
            privacy,
            aggregation,
        )


def _plain_file_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and 0 < len(name) <= 64
        and name not in (".", "..")
        and not any(c in name for c in "/\\\0")
    )
