"""A miner's share of the task's decryption key, sealed to the miner's X25519 key: its only wire form.

Plaintext: canonical CBOR {"index": uint, "share": bytes (minimal big-endian)}. Opening checks the
share against the manifest's verification key for that index, and that the index is this
miner's (its position in the task's miner list, from 1).
"""

from __future__ import annotations

from edge_sdk.privacy.threshold import KeyShare
from edge_sdk.protocol import codec, envelope


def share_plaintext(share: KeyShare) -> bytes:
    value = share.value.to_bytes((share.value.bit_length() + 7) // 8, "big")
    return codec.encode({"index": share.index, "share": value})


def seal_share(share: KeyShare, miner_box_pk: bytes) -> bytes:
    return envelope.seal(miner_box_pk, share_plaintext(share))


def open_share(sealed: bytes, box_key, task, sign_pk: bytes) -> KeyShare:
    """This miner's share, checked: a wrong, foreign or corrupted share is refused with the reason."""
    value = codec.decode(envelope.unseal(box_key, sealed))
    if not isinstance(value, dict) or set(value) != {"index", "share"} or not isinstance(value["share"], bytes):
        raise ValueError("the sealed key share is not {index, share}")
    share = KeyShare(value["index"], int.from_bytes(value["share"], "big"))
    position = next((i for i, m in enumerate(task.miners) if m.sign_pk == sign_pk), None)
    if position is None or share.index != position + 1:
        raise ValueError("the sealed key share is not this miner's")
    if not share.matches(task.privacy.threshold.key):
        raise ValueError("the sealed key share does not match the task's verification key")
    return share
