"""Typed protocol errors. Every rejection names a stable reason code (see PROTOCOL.md)."""

from __future__ import annotations

from enum import Enum


class Reason(str, Enum):
    """Stable, documented reason codes. The value is what logs, metrics and peers see."""

    # envelope and codec
    TOO_LARGE = "too_large"
    BAD_ENCODING = "bad_encoding"
    BAD_VERSION = "bad_version"
    UNKNOWN_TYPE = "unknown_type"
    WRONG_TYPE = "wrong_type"
    BAD_SIGNATURE = "bad_signature"
    BAD_SEAL = "bad_seal"
    BAD_BODY = "bad_body"
    # updates
    WRONG_TASK = "wrong_task"
    BAD_SHAPE = "bad_shape"
    NON_FINITE = "non_finite"
    OUT_OF_RANGE = "out_of_range"
    BAD_SAMPLE_COUNT = "bad_sample_count"
    BAD_CERT = "bad_cert"
    CERT_EXPIRED = "cert_expired"
    OVER_QUOTA = "over_quota"
    # miner policy (not block rules)
    REPLAY = "replay"
    REVOKED = "revoked"  # also a block rule: an update of a device revoked on the parent's chain
    # blocks and chain
    UNKNOWN_PARENT = "unknown_parent"
    BAD_HEIGHT = "bad_height"
    BAD_TARGET = "bad_target"
    INSUFFICIENT_WORK = "insufficient_work"
    BAD_MERKLE_ROOT = "bad_merkle_root"
    BAD_UPDATE = "bad_update"
    STALE_BASE = "stale_base"
    DUPLICATE_DEVICE = "duplicate_device"
    TOO_MANY_UPDATES = "too_many_updates"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_MINER = "bad_miner"
    BAD_MODEL_HASH = "bad_model_hash"
    BAD_GENESIS = "bad_genesis"
    BAD_EXTRAS = "bad_extras"
    BAD_REVOCATIONS = "bad_revocations"
    BAD_EVIDENCE = "bad_evidence"
    BAD_EXCLUSIONS = "bad_exclusions"
    BAD_DECRYPTION = "bad_decryption"  # Paillier: the partial decryptions of the parent's aggregate
    TOO_FEW_UPDATES = "too_few_updates"  # Paillier: fewer updates than privacy.threshold.min_participants
    KNOWN_INVALID = "known_invalid"  # light devices: a block an alert has shown to break a block rule


class ProtocolError(ValueError):
    """Raised for anything a peer sent that breaks a rule. Carries the reason code."""

    def __init__(self, reason: Reason, detail: str = ""):
        self.reason = Reason(reason)
        self.detail = detail
        super().__init__(f"{self.reason.value}: {detail}" if detail else self.reason.value)
