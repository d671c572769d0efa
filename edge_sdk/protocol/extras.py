"""What a block carries besides its updates (`extras`): the updates its rule excluded, evidence of
misbehaviour, the coordinator's revocation list, and (Paillier) the decryption of its parent. The
header commits to them through the Merkle root's last leaf, so a miner cannot show two bodies
under one proof-of-work.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from edge_sdk.protocol import codec
from edge_sdk.protocol.errors import ProtocolError, Reason

EXTRAS_DOMAIN = b"BLOCKFL-EDGE/extras\x00"
MAX_EVIDENCE = 16  # items per block
MAX_SHARES = 64  # partial decryptions per block (at most one per miner)
EVIDENCE_KINDS = {"double-update": 2, "invalid-block": 1}  # kind -> how many signed messages it holds


@dataclass(frozen=True)
class Evidence:
    """Signed messages that prove an offence by their signer, checkable by every node:
    `double-update`: two different updates by one device on one base (ordered by digest);
    `invalid-block`: a block, signed by a miner of the task, that breaks a block rule on the
    parent of the block that carries the evidence."""

    kind: str
    signed: tuple[bytes, ...]

    def to_wire(self) -> dict:
        return {"kind": self.kind, "signed": list(self.signed)}

    @classmethod
    def from_wire(cls, value: Any) -> Evidence:
        if (
            not isinstance(value, dict)
            or set(value) != {"kind", "signed"}
            or not isinstance(value["kind"], str)  # a list or a map is unhashable: `in` would raise TypeError
            or value["kind"] not in EVIDENCE_KINDS
        ):
            raise ProtocolError(
                Reason.BAD_EVIDENCE, f"evidence must be {{kind: one of {sorted(EVIDENCE_KINDS)}, signed}}"
            )
        signed = value["signed"]
        if (
            not isinstance(signed, list)
            or len(signed) != EVIDENCE_KINDS[value["kind"]]
            or not all(isinstance(s, bytes) for s in signed)
        ):
            raise ProtocolError(
                Reason.BAD_EVIDENCE, f"{value['kind']} evidence holds {EVIDENCE_KINDS[value['kind']]} byte strings"
            )
        return cls(value["kind"], tuple(signed))

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(codec.encode(self.to_wire())).digest()


@dataclass(frozen=True)
class Extras:
    excluded: tuple[int, ...] = ()  # indices into the block's updates, increasing
    evidence: tuple[Evidence, ...] = ()
    revocations: bytes | None = None  # a coordinator-signed revocations envelope, newer than the parent's
    decryption: tuple = ()  # Paillier: t partial decryptions of the parent's aggregate (protocol/decryption.py)

    def to_wire(self) -> dict:
        return {
            "excluded": list(self.excluded),
            "evidence": [e.to_wire() for e in self.evidence],
            "revocations": self.revocations,
            "decryption": list(self.decryption),
        }

    @classmethod
    def from_wire(cls, value: Any, updates: int) -> Extras:
        """Shape rules only; what the evidence and revocations mean is checked with the chain."""
        if not isinstance(value, dict) or set(value) != {"excluded", "evidence", "revocations", "decryption"}:
            raise ProtocolError(
                Reason.BAD_EXTRAS, "extras must have exactly excluded, evidence, revocations, decryption"
            )
        excluded, evidence, revocations = value["excluded"], value["evidence"], value["revocations"]
        decryption = value["decryption"]
        if not isinstance(decryption, list) or len(decryption) > MAX_SHARES:
            raise ProtocolError(Reason.BAD_EXTRAS, f"decryption must be a list of at most {MAX_SHARES}")
        if not isinstance(excluded, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < updates for i in excluded
        ):
            raise ProtocolError(Reason.BAD_EXTRAS, "excluded must list indices of the block's updates")
        if excluded != sorted(set(excluded)):
            raise ProtocolError(Reason.BAD_EXTRAS, "excluded must be strictly increasing")
        if not isinstance(evidence, list) or len(evidence) > MAX_EVIDENCE:
            raise ProtocolError(Reason.BAD_EXTRAS, f"evidence must be a list of at most {MAX_EVIDENCE}")
        if revocations is not None and not isinstance(revocations, bytes):
            raise ProtocolError(Reason.BAD_EXTRAS, "revocations must be a byte string or null")
        return cls(tuple(excluded), tuple(Evidence.from_wire(e) for e in evidence), revocations, tuple(decryption))

    @property
    def leaf(self) -> bytes:
        """The Merkle leaf that commits the header to these extras."""
        return hashlib.sha256(EXTRAS_DOMAIN + codec.encode(self.to_wire())).digest()
