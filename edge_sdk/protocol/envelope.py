"""The one message envelope: version, type, signer, body, Ed25519 signature.

Wire form: canonical CBOR array [version, type, signer_pk, body, signature].
Signed bytes: DOMAIN || canonical CBOR array [version, type, signer_pk, body], so a signature
made for one protocol, version or message type is never valid for another.
Updates travel sealed (X25519 sealed box) to one miner; `seal` / `unseal` wrap envelope bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import VerifyKey

from edge_sdk.protocol import codec
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.identity import Identity

VERSION = 1
DOMAIN = b"BLOCKFL-EDGE/envelope\x00"
MESSAGE_TYPES = frozenset(
    {
        "genesis",
        "block",
        "update",
        "cert",
        "revocations",
        "sync_request",
        "sync_response",
        "rejection",
        "partial",
        "light",
        "alert",
    }
)
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
ARRAY_OF_4 = b"\x84"  # CBOR head of a 4-item array
SIGNATURE_ITEM_BYTES = 2 + 64  # CBOR head 0x58 0x40, then the signature
SEAL_OVERHEAD = 48  # X25519 ephemeral public key (32) + Poly1305 tag (16)


@dataclass(frozen=True)
class Envelope:
    version: int
    type: str
    signer: bytes
    body: Any
    signature: bytes
    raw: bytes

    @property
    def digest(self) -> bytes:
        """SHA-256 of the exact wire bytes: the identity of this message (Merkle leaves, replay)."""
        return hashlib.sha256(self.raw).digest()


def signing_bytes(version: int, msg_type: str, signer: bytes, body: Any) -> bytes:
    return DOMAIN + codec.encode([version, msg_type, signer, body])


def sign(identity: Identity, msg_type: str, body: Any) -> bytes:
    """Wire bytes of a new signed envelope."""
    if msg_type not in MESSAGE_TYPES:
        raise ValueError(f"unknown message type {msg_type!r}")
    signer = identity.public.sign_pk
    signature = identity.sign(signing_bytes(VERSION, msg_type, signer, body))
    return codec.encode([VERSION, msg_type, signer, body, signature])


def open_envelope(data: bytes, *, expect: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> Envelope:
    """Decode and verify; every failure is a ProtocolError with a reason code."""
    if not isinstance(data, (bytes, bytearray)):
        raise ProtocolError(Reason.BAD_ENCODING, "not bytes")
    if len(data) > max_bytes:
        raise ProtocolError(Reason.TOO_LARGE, f"{len(data)} > {max_bytes} bytes")
    value = codec.decode(bytes(data))
    if not isinstance(value, list) or len(value) != 5:
        raise ProtocolError(Reason.BAD_ENCODING, "envelope must be an array of 5")
    version, msg_type, signer, body, signature = value
    if not isinstance(version, int) or isinstance(version, bool) or version != VERSION:  # 1.0 is not 1
        raise ProtocolError(Reason.BAD_VERSION, f"version {codec.show(version)}, expected {VERSION}")
    if not isinstance(msg_type, str) or msg_type not in MESSAGE_TYPES:
        raise ProtocolError(Reason.UNKNOWN_TYPE, codec.show(msg_type))
    if expect is not None and msg_type != expect:
        raise ProtocolError(Reason.WRONG_TYPE, f"{msg_type}, expected {expect}")
    if not isinstance(signer, bytes) or len(signer) != 32:
        raise ProtocolError(Reason.BAD_ENCODING, "signer must be 32 bytes")
    if not isinstance(signature, bytes) or len(signature) != 64:
        raise ProtocolError(Reason.BAD_ENCODING, "signature must be 64 bytes")
    # The input is canonical (codec.decode checked), so the signed array [v, type, signer, body] is the
    # input's own bytes without its 1-byte array-of-5 head and its last item (64-byte string: 2 + 64
    # bytes) under an array-of-4 head: no need to encode the body again.
    signed = b"".join((DOMAIN, ARRAY_OF_4, memoryview(data)[1 : len(data) - SIGNATURE_ITEM_BYTES]))  # one copy
    try:
        VerifyKey(signer).verify(signed, signature)
    except (CryptoError, ValueError):
        raise ProtocolError(Reason.BAD_SIGNATURE, "signature does not verify") from None
    return Envelope(version, msg_type, signer, body, signature, bytes(data))


def seal(recipient_box_pk: bytes, data: bytes) -> bytes:
    """Encrypt to one recipient: only the holder of its X25519 private key can open it."""
    return SealedBox(PublicKey(recipient_box_pk)).encrypt(data)


def unseal(box_key: PrivateKey, data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    if not isinstance(data, (bytes, bytearray)):
        raise ProtocolError(Reason.BAD_SEAL, "not bytes")
    if len(data) > max_bytes + SEAL_OVERHEAD:
        raise ProtocolError(Reason.TOO_LARGE, f"{len(data)} sealed bytes")
    try:
        return SealedBox(box_key).decrypt(bytes(data))
    except (CryptoError, ValueError, TypeError):
        raise ProtocolError(Reason.BAD_SEAL, "cannot open sealed box") from None
