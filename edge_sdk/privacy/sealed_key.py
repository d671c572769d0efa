"""The task's Paillier private key sealed to one device's X25519 key: its only wire form.

Plaintext: canonical CBOR {"p": bytes, "q": bytes}, the primes as minimal big-endian integers.
"""

from __future__ import annotations

from edge_sdk.protocol import codec, envelope


def seal_private_key(private_key, device_box_pk: bytes) -> bytes:
    """The task's Paillier private key, readable only by one device."""
    p, q = int(private_key.p), int(private_key.q)
    return envelope.seal(
        device_box_pk,
        codec.encode(
            {"p": p.to_bytes((p.bit_length() + 7) // 8, "big"), "q": q.to_bytes((q.bit_length() + 7) // 8, "big")}
        ),
    )


def open_private_key(sealed: bytes, box_key, n: int):
    from phe import paillier

    value = codec.decode(envelope.unseal(box_key, sealed))
    p, q = int.from_bytes(value["p"], "big"), int.from_bytes(value["q"], "big")
    if p * q != n:
        raise ValueError("the sealed Paillier key does not belong to this task")
    return paillier.PaillierPrivateKey(paillier.PaillierPublicKey(n), p, q)
